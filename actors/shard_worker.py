"""One tensor-parallel rank: its slice of the weights, its slice of the KV cache (heads
split), and the engine step run on it.

`ShardWorker` is a plain class: shard_group.py makes it a Ray actor
(`ray.remote(ShardWorker)`), and gpu_smoke.py runs it in torch.multiprocessing processes on
machines without Ray. Every rank runs the same step on the same plan; the collectives inside
the model (one all-reduce per sub-layer, models/parallel.py) keep them in lock step, and
rank 0's StepOutput is the group's answer.
"""

from __future__ import annotations

import math
import os
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from actors.free_port import free_port
from engine.executor import ModelExecutor
from engine.plan import StepOutput, StepPlan
from models.batch import Chunk, ChunkBatch
from models.checkpoint import load_checkpoint
from models.fuse import checkpoint_shapes, fuse_projections
from models.layers import RowParallelLinear
from models.parallel import TensorParallel

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ShardStats:
    """What a rank holds after setup (bytes of its own tensors, not of the checkpoint)."""

    rank: int
    pid: int
    sharded_param_bytes: int  # parameters this rank holds a 1/tp slice of
    replicated_param_bytes: int  # parameters every rank holds whole (embedding, LM head, norms)
    kv_cache_bytes: int
    num_kv_heads: int  # local kv heads per layer
    setup_s: float

    @property
    def param_bytes(self) -> int:
        return self.sharded_param_bytes + self.replicated_param_bytes


@dataclass(frozen=True)
class Progress:
    """Where a rank is, for naming the culprit of a stalled step."""

    rank: int
    step_seq: int  # steps begun
    num_collectives: int  # all-reduces entered in the current step
    in_step: bool


class ShardWorker:
    def __init__(self, model_dir: str, rank: int, world_size: int, num_blocks: int,
                 block_size: int, device: str = "cpu", dtype: str = "float32",
                 num_threads: int = 0) -> None:
        self.model_dir, self.rank, self.world_size = str(model_dir), rank, world_size
        self.num_blocks, self.block_size = num_blocks, block_size
        self.device, self.dtype = torch.device(device), DTYPES[dtype]
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.executor: ModelExecutor | None = None
        self._step_seq = self._num_collectives = 0
        self._in_step = False
        self._stall_s = 0.0
        # Thread CPU seconds of each step's forward (bench/disagg.py: on a machine shared
        # with other work, CPU time says what a step costs where wall time does not).
        self.step_cpu_s: deque[float] = deque(maxlen=65536)

    # --- setup ---------------------------------------------------------------------------

    def rendezvous_address(self) -> tuple[str, int]:
        """This node's address and a port free on it now that no process on it can be
        handed before rank 0's store binds it (actors/free_port.py; called on rank 0 only)."""
        host = node_ip()
        return host, free_port(host)

    def setup(self, host: str, port: int, timeout_s: float = 60.0) -> ShardStats:
        """Join the process group at tcp://host:port, then load this rank's shard."""
        start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=self.rank,
                                world_size=self.world_size, timeout=timedelta(seconds=timeout_s))
        probe = torch.ones(1, device=self.device)
        dist.all_reduce(probe)  # every rank is reachable and the backend works
        if int(probe.item()) != self.world_size:
            raise RuntimeError(f"rank {self.rank}: all-reduce probe gave {probe.item()}")
        tp = TensorParallel(self.rank, self.world_size)
        model = load_checkpoint(self.model_dir, tp=tp, dtype=self.dtype, device=self.device)
        fuse_projections(model)  # each rank fuses its own slices
        for module in model.modules():
            if isinstance(module, RowParallelLinear):
                module.register_forward_pre_hook(self._count_collective)
        self.executor = ModelExecutor(model, self.num_blocks, self.block_size)
        return self._stats(time.perf_counter() - start)

    def _stats(self, setup_s: float) -> ShardStats:
        assert self.executor is not None
        model = self.executor.model
        full = _full_shapes(Path(self.model_dir))
        sharded = replicated = 0
        for name, (shape, dtype) in checkpoint_shapes(model).items():
            nbytes = math.prod(shape) * dtype.itemsize
            if shape == full[name]:
                replicated += nbytes
            else:
                sharded += nbytes
        kv = sum(t.numel() * t.element_size() for pair in self.executor.caches for t in pair)
        heads = model.model.layers[0].self_attn.num_kv_heads
        return ShardStats(self.rank, os.getpid(), sharded, replicated, kv, heads, setup_s)

    def _count_collective(self, *_: object) -> None:
        self._num_collectives += 1

    # --- work ----------------------------------------------------------------------------

    def step(self, plan: StepPlan) -> StepOutput | None:
        """Run the step; only rank 0 returns its output (the others' is the same)."""
        if self.executor is None:
            raise RuntimeError(f"rank {self.rank}: step before setup")
        self._step_seq += 1
        self._num_collectives, self._in_step = 0, True
        try:
            if self._stall_s:
                time.sleep(self._stall_s)  # fault injection (tests): a rank that hangs
            cpu = time.thread_time()
            out = self.executor.step(plan)
            self.step_cpu_s.append(time.thread_time() - cpu)
        finally:
            self._in_step = False
        return out if self.rank == 0 else None

    @torch.inference_mode()
    def logits(self, chunks: list[Chunk]) -> torch.Tensor | None:
        """Rank 0: float32 logits [T, V] of the chunks, without the KV cache (for checks)."""
        assert self.executor is not None
        batch = ChunkBatch.from_chunks(chunks, self.device)
        out = self.executor.model(batch)
        return out.logits.float().cpu() if self.rank == 0 else None

    def read_kv(self, slots: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's K and V at cache slots, per layer [n, local kv heads, head_dim] on
        the CPU (bench/disagg.py times shipping a verify pool's KV to a draft pool)."""
        assert self.executor is not None
        idx = torch.tensor(slots, device=self.device)
        return [(k.flatten(0, 1)[idx].cpu(), v.flatten(0, 1)[idx].cpu())
                for k, v in self.executor.caches]

    def write_kv(self, slots: list[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Store K and V (as read_kv gives them, any dtype) at cache slots."""
        assert self.executor is not None
        idx = torch.tensor(slots, device=self.device)
        for (k_cache, v_cache), (k, v) in zip(self.executor.caches, kv, strict=True):
            k_cache.flatten(0, 1)[idx] = k.to(self.device, k_cache.dtype)
            v_cache.flatten(0, 1)[idx] = v.to(self.device, v_cache.dtype)
        return len(slots)

    def take_step_cpu(self) -> list[float]:
        """The CPU seconds of the steps since the last call, in order."""
        out = list(self.step_cpu_s)
        self.step_cpu_s.clear()
        return out

    def progress(self) -> Progress:
        return Progress(self.rank, self._step_seq, self._num_collectives, self._in_step)

    def inject_stall(self, seconds: float) -> None:
        """Fault injection for tests: every later step sleeps this long before its forward."""
        self._stall_s = seconds

    def shutdown(self) -> None:
        self.executor = None
        if dist.is_initialized():
            dist.destroy_process_group()


def node_ip() -> str:
    """This node's address as Ray sees it, or loopback outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return "127.0.0.1"


def _full_shapes(directory: Path) -> dict[str, tuple[int, ...]]:
    """Checkpoint tensor shapes from the safetensors headers (no tensor data is read)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in sorted(directory.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not iterable
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes
