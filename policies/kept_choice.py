"""A request's option kept across steps by the decision cache (policies/decision_cache.py):
what it was chosen on, and the verdict each select on whether it still holds.

A request's option is kept (held: it counts as load and is guarded like any other, but is
not re-chosen) while all of these hold since it was chosen:
- it met its pace then (with the selector's margin) and still would at the time per token
  predicted then, with `step_band` to spare; or no option meets it even alone (lost). A
  request that missed but could be met is chosen for again as soon as what its rescue failed
  on moved by `fail_band` (policies/rescue_memo.py: its need, the batch's step and tokens
  per second, the tightest cap of the requests it must not break);
- it runs the option chosen for it (not deferred, preempted or pinned in between);
- its slack did not grow by more than `need_band` (it may afford a cheaper option now); a
  loose request (a need of `loose_steps` predicted steps per token or more) is kept until
  it stops being loose;
- its tokens per forward under that option (its own acceptance and the option's overall
  one) moved by less than `tpf_band`;
- its remaining tokens stayed in the same power-of-two band below 64 (speculation's rates
  are capped by what is left);
- the batch did not shrink by more than `step_band` of its size since (spare compute: pass
  3's speed-ups raise the batch's tokens per second, a sum over its requests; a lost request
  kept at AR beside one other lost H200 tight medium 0.1 attainment on one seed);
- it was chosen less than `max_age_steps` selects ago (a bound on drift of any kind).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from policies.option import AR, Option
from policies.request_view import RequestView
from policies.rescue_memo import BatchAfter, FailedAt


@dataclass(frozen=True)
class CacheConfig:
    """When the decision cache chooses again: the bands a kept choice may move by."""

    enabled: bool = True
    need_band: float = 0.05  # re-choose when its slack grew by this share
    loose_steps: float = 50.0  # a need of this many predicted steps per token is loose
    tpf_band: float = 0.05  # ... or its tokens per forward moved by this share
    step_band: float = 0.05  # margin on the time per token; re-plan all when steps move so
    max_age_steps: int = 64
    max_dirty_share: float = 0.5
    strict: bool = True
    joint_search: bool = True
    # An unmet request that could be met is tried again only when what its rescue failed
    # on moved by this share: its need, the batch's step and tokens per second, the
    # tightest cap of the requests it must not break (off: every step).
    fail_band: float = 0.05

    def __post_init__(self) -> None:
        for name in ("need_band", "tpf_band", "step_band", "max_dirty_share", "fail_band"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CacheConfig.{name} must be in [0, 1]")
        if self.max_age_steps < 1 or self.loose_steps <= 0:
            raise ValueError("CacheConfig.max_age_steps must be >= 1, loose_steps > 0")


@dataclass
class Kept:
    """What a request's option was chosen on."""

    option: Option
    due: float  # its finish deadline (fixed while it decodes)
    need: float  # its needed seconds per token then (inf: none)
    is_loose: bool
    tpf: float  # its tokens per forward under option then
    pace: float  # its predicted seconds per token then
    num_decoders: int  # in the batch then
    remaining_band: int
    chosen_at: int  # select count
    was_met: bool
    is_lost: bool  # no option meets it even alone
    failed_at: FailedAt | None = None  # what it was left unmet at (None: met or lost)


KEEP, CHANGE, MAYBE = object(), object(), object()  # verdict()'s answers


@dataclass(slots=True)  # one a select: a frozen init of 11 fields costs ~10 us
class Bands:
    """What every kept request is compared against in one select."""

    oldest: int  # kept before this select count: too old
    loose: float  # a need of this many seconds per token is loose
    up: float  # slack grown by this factor
    miss: float  # a met request within step_band of missing, over its pace
    tpf: float
    num: int  # decoders now
    # A batch that shrank by more than `step_band` since an option was kept may have spare
    # compute for it (pass 3's speed-ups: the batch's tokens per second is a sum over its
    # requests, so one request less among few moves it by a lot).
    num_band: float
    after: BatchAfter | None
    fail: float
    alone: float  # AR's time per token alone
    tpf_of: Callable[[Option, str], float]


def remaining_band(remaining: int, option: Option) -> int:
    return 0 if option.mode == AR else min(remaining, 64).bit_length()


def verdict(v: RequestView, kept: Kept, need: float, remaining: int, bands: Bands) -> object:
    """KEEP, CHANGE, or MAYBE (kept at AR, met or lost: only a shrunk batch or grown slack
    moved, which can buy it only pass 3's speed; one left unmet is chosen for then: a
    smaller batch may make room for it)."""
    option = kept.option
    is_ar = option.mode == AR
    if (kept.chosen_at <= bands.oldest or (v.option is not None and v.option != option)
            or (not is_ar and (
                kept.remaining_band != remaining_band(remaining, option)
                or abs(bands.tpf_of(option, v.id) - kept.tpf) > bands.tpf * kept.tpf))):
        return CHANGE
    if kept.was_met:
        if need < kept.pace * bands.miss:
            return CHANGE
    elif not (kept.is_lost or (
            # Not met: again when what its rescue failed on moved (others may make room
            # for it), never if no option meets it even alone (lost).
            kept.failed_at is not None and bands.after is not None
            and (need < bands.alone) == (kept.failed_at.need < bands.alone)
            and kept.failed_at.holds(need, bands.after, v.id, v.priority, bands.fail))):
        return CHANGE
    shrank = kept.num_decoders - bands.num > bands.num_band
    grew = need < bands.loose if kept.is_loose else need > kept.need * bands.up
    if not (shrank or grew):
        return KEEP
    if is_ar and not kept.is_loose and (kept.was_met or kept.is_lost) and not (
            need < bands.alone or v.slo.tpot_below(bands.alone)):
        return MAYBE
    return CHANGE
