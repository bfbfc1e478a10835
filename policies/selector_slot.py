"""One request in one select() of the mode selector (policies/selector.py), and the
requests a change to one must not break."""

from __future__ import annotations

from dataclasses import dataclass

from policies.option import Option
from policies.request_view import RequestView


@dataclass(slots=True)  # one per rescue: a frozen init costs ~6x a plain one
class Guarded:
    """The requests a change to s must not break: every one but s of at least
    min_priority, from the selector's guards (cap, index, slot, limit), shortest cap first."""

    guards: list[tuple[float, int, Slot, float]]
    but: Slot
    min_priority: float


@dataclass(eq=False, slots=True)  # identity: a slot is one request in one select()
class Slot:
    view: RequestView
    option: Option
    rate: float  # tokens per forward under option
    need: float  # seconds per token its SLO needs, with the safety margin (inf: none; nan: lost)
    is_free: bool  # auto, at an iteration boundary
    searched: bool = False  # its option came from pass 2's search: no rescue
