"""A decoding option: a mode and its block length, and what one forward of it costs.

Modes are policies.modes.Mode (a StrEnum: "ar" == Mode.AR); work per forward comes from
that module's table, the one the engine's modes read too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.modes import (
    CONCRETE_MODES,
    DEFAULT_BLOCKS,
    LOSSLESS_MODES,
    MODE_FACTS,
    Mode,
    work_tokens,
)

AR, LINEAR, QUADRATIC, DIFFUSION = (Mode.AR, Mode.SPEC_LINEAR, Mode.SPEC_QUADRATIC,
                                    Mode.DIFFUSION)
# Only where a deployment has a draft pool (speculation.placement: disaggregated): the
# verify pool runs B tokens per step while the draft pool drafts the next block.
PIPELINED = Mode.SPEC_PIPELINED
MODES = CONCRETE_MODES
LOSSLESS = LOSSLESS_MODES

_INTERNED: dict[tuple[Mode | str, int], Option] = {}  # Option.__new__'s


@dataclass(frozen=True, eq=False, init=False)
class Option:
    """One instance per (mode, block): Option(...) returns it. Equality and hashing are then
    identity's, done in C: the selector keys its memos by option and compares options
    ~1e5 times a second under load (each was a Python call: bench/slo_selector_cost.py)."""

    mode: Mode  # a plain string is converted
    block: int = 1
    # Set once by __new__; plain attributes, not properties: read ~450 times a choose.
    work_tokens: int = field(init=False, repr=False)  # tokens one steady forward puts in the batch
    draft_tokens: int = field(init=False, repr=False)  # ... on a draft pool (pipelined only)
    is_lossless: bool = field(init=False, repr=False)

    def __new__(cls, mode: Mode | str, block: int = 1) -> Option:
        option = _INTERNED.get((mode, block))
        if option is not None:
            return option
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of "
                             f"{[str(m) for m in MODES]}")
        mode = Mode(mode)
        if mode == AR and block != 1:
            raise ValueError("ar has block 1")
        if mode != AR and not 2 <= block <= 64:
            raise ValueError(f"{mode} block must be in [2, 64], got {block}")
        option = object.__new__(cls)
        for name, value in (("mode", mode), ("block", block),
                            ("work_tokens", work_tokens(mode, block)),
                            ("draft_tokens", MODE_FACTS[mode].draft_tokens(block)),
                            ("is_lossless", mode.is_lossless)):
            object.__setattr__(option, name, value)
        # setdefault: two threads making the same new option get one instance
        return _INTERNED.setdefault((mode, block), option)

    def __reduce__(self) -> tuple[type[Option], tuple[Mode, int]]:
        return Option, (self.mode, self.block)  # unpickled and copied: the one instance

    def _key(self) -> tuple[Mode, int]:
        return self.mode, self.block

    def __lt__(self, other: Option) -> bool:
        return self._key() < other._key() if other.__class__ is Option else NotImplemented

    def __le__(self, other: Option) -> bool:
        return self._key() <= other._key() if other.__class__ is Option else NotImplemented

    def __gt__(self, other: Option) -> bool:
        return self._key() > other._key() if other.__class__ is Option else NotImplemented

    def __ge__(self, other: Option) -> bool:
        return self._key() >= other._key() if other.__class__ is Option else NotImplemented

    @property
    def key(self) -> str:
        return f"{self.mode}/{self.block}"

    @staticmethod
    def parse(key: str) -> Option:
        mode, _, block = key.partition("/")
        return Option(mode, int(block or 1))


AR1 = Option(AR)
# What auto chooses among (diffusion only for requests that allow lossy output). Short
# blocks only: in the simulator (bench/slo_profile.json, mixed workload, 6 seeds) adding
# linear B=8/16 or quadratic B=4/6 lowered attainment at every load (-0.2 to -2 points):
# acceptance of long blocks varies most between requests (linear B=16 from 1.0 to 7.9 tokens
# per forward across the profile's prompts), so a new request's estimate is least reliable
# there, and a long block lengthens every other request's step the most.
CANDIDATES = (AR1, Option(LINEAR, 4), Option(QUADRATIC, 2), Option(QUADRATIC, 3),
              Option(DIFFUSION, 8))
# What calibration records traces for: the candidates and every mode's default block.
TRACED = (Option(LINEAR, 4), Option(LINEAR, 8), Option(LINEAR, 16), Option(QUADRATIC, 2),
          Option(QUADRATIC, 3), Option(QUADRATIC, 4), Option(QUADRATIC, 6),
          Option(DIFFUSION, 8), Option(DIFFUSION, 16))


# What auto adds where the deployment has a draft pool (cluster/speculation.py).
PIPELINED_CANDIDATES = (Option(PIPELINED, 4),)  # B = 4: its prior comes from linear/4


def default_option(mode: str) -> Option:
    return Option(mode, DEFAULT_BLOCKS[Mode(mode)])


def candidates(allow_lossy: bool, pool: tuple[Option, ...] = CANDIDATES) -> list[Option]:
    return [o for o in pool if allow_lossy or o.is_lossless]


def option_of(mode: str, block: int | None = None) -> Option:
    """The option a request asking for mode (and maybe a block length) runs: AR has block 1
    whatever was asked, a missing block is the mode's default."""
    if mode == AR:
        return AR1
    return Option(mode, block or DEFAULT_BLOCKS[Mode(mode)])
