"""A decoding option: a mode and its block length, and what one forward of it costs.

Modes are policies.modes.Mode (a StrEnum: "ar" == Mode.AR); work per forward comes from
that module's table, the one the engine's modes read too.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True, order=True)
class Option:
    mode: Mode  # a plain string is converted
    block: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; expected one of "
                             f"{[str(m) for m in MODES]}")
        object.__setattr__(self, "mode", Mode(self.mode))
        if self.mode == AR and self.block != 1:
            raise ValueError("ar has block 1")
        if self.mode != AR and not 2 <= self.block <= 64:
            raise ValueError(f"{self.mode} block must be in [2, 64], got {self.block}")
        # The selector keys its memos by option and reads its work ~1e5 times a second under
        # load: hash and look up once.
        object.__setattr__(self, "_hash", hash((self.mode, self.block)))
        object.__setattr__(self, "_work", work_tokens(self.mode, self.block))
        object.__setattr__(self, "_draft", MODE_FACTS[self.mode].draft_tokens(self.block))
        object.__setattr__(self, "_lossless", self.mode.is_lossless)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:  # the generated one compares tuples: ~3x slower
        if other.__class__ is not Option:
            return NotImplemented
        return self is other or (self.block == other.block and self.mode is other.mode)

    @property
    def work_tokens(self) -> int:
        """Tokens one steady-state forward puts in the batch."""
        return self._work

    @property
    def draft_tokens(self) -> int:
        """Tokens one step puts on a draft pool (pipelined speculation only)."""
        return self._draft

    @property
    def is_lossless(self) -> bool:
        return self._lossless

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
    return Option(mode, DEFAULT_BLOCKS[mode])


def candidates(allow_lossy: bool, pool: tuple[Option, ...] = CANDIDATES) -> list[Option]:
    return [o for o in pool if allow_lossy or o.is_lossless]


def option_of(mode: str, block: int | None = None) -> Option:
    """The option a request asking for mode (and maybe a block length) runs: AR has block 1
    whatever was asked, a missing block is the mode's default."""
    if mode == AR:
        return AR1
    return Option(mode, block or DEFAULT_BLOCKS[mode])
