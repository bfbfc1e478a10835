"""Kernel tests run on CUDA when there is one, else on CPU through TRITON_INTERPRET=1 (set
by tests/conftest.py unless the environment says otherwise). Every launcher's outputs start
poisoned (NaN / an impossible integer) so an element a kernel forgets to write fails."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from kernels import buffers


def _patch_interpreter_once_per_function() -> None:
    """Test speed only. Triton's interpreter re-patches triton.language on every call of a
    nested @triton.jit function (tl.max, tl.sum, tl.maximum ... are such functions), about
    10 ms each; those patches are never undone, so once per function is the same. This
    roughly halves the interpreted engine test. Without the interpreter: nothing to do."""
    try:
        from triton import knobs
        from triton.runtime import interpreter
    except ImportError:
        return
    current = vars(interpreter.InterpretedFunction).get("__call__")
    if not knobs.runtime.interpret or current is None or getattr(current, "tandem_fast", False):
        return
    patched: set = set()

    def fast_call(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if self.fn not in patched:
            interpreter._patch_lang(self.fn)
            patched.add(self.fn)
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    fast_call.tandem_fast = True
    interpreter.InterpretedFunction.__call__ = fast_call


_patch_interpreter_once_per_function()


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def poison_outputs() -> Iterator[None]:
    buffers.POISON = True
    yield
    buffers.POISON = False


@pytest.fixture
def gen(request: pytest.FixtureRequest) -> torch.Generator:
    """A generator seeded by the test's id: fresh inputs per case, reproducible per run."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid)) % (2**31)
    return torch.Generator().manual_seed(seed)
