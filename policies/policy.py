"""The SLO policy: ordering, admission, mode choice and preemption over plain numbers.

One object holds the online estimates (cost model, acceptance) and answers the four
questions the engine's scheduler asks; engine/slo_policy.py converts engine requests into
RequestViews for it, and the simulator drives it directly. With `fixed` set it is the same
policy with every auto request pinned to one option: the baselines of `tandem bench slo`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from policies.acceptance import AcceptanceEstimator
from policies.admission import AdmissionConfig, AdmissionControl, Refusal
from policies.cost_model import CostModel
from policies.deferral import Deferral, DeferralConfig
from policies.option import AR1, Option, candidates
from policies.ordering import by_urgency
from policies.pipelined import tokens_per_step
from policies.preemption import choose_victim
from policies.profile import Profile
from policies.request_view import RequestView
from policies.selector import ModeSelector, SelectorConfig


@dataclass(frozen=True)
class PolicyConfig:
    fixed: Option | None = None  # None: auto; else auto requests all run this option
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    deferral: DeferralConfig = field(default_factory=DeferralConfig)
    demote_missed: bool = True
    # False: first come, first served, nobody refused, nobody deferred, the newest request
    # preempted (the engine's FirstComePolicy): the baseline without SLO scheduling.
    slo_aware: bool = True
    interference_decay: float = 0.98  # of the mean prefill time per step (~50 steps)

    @property
    def name(self) -> str:
        mode = "auto" if self.fixed is None else self.fixed.mode
        return mode if self.slo_aware else f"fcfs:{mode}"


class SLOPolicy:
    def __init__(self, profile: Profile, config: PolicyConfig = PolicyConfig()) -> None:
        self.config = config
        self.cost = CostModel(profile.cost)
        self.acceptance = AcceptanceEstimator({**tokens_per_step(profile.traces),
                                               **profile.tokens_per_forward()})
        self.selector = ModeSelector(self.cost, self.acceptance, config.selector)
        self.admission = AdmissionControl(self.cost, config.admission)
        self.deferral = Deferral(self.cost, self.acceptance, config.deferral)
        self.interference_s = 0.0  # mean seconds that prefill chunks add to a step

    # --- the scheduler's questions ---------------------------------------------------------

    def order(self, views: Sequence[RequestView], now: float) -> list[RequestView]:
        if not self.config.slo_aware:
            return sorted(views, key=lambda v: v.arrival_s)
        return by_urgency(views, now, self.config.demote_missed)

    def select(self, decoders: Sequence[RequestView], now: float,
               max_tokens: int | None = None) -> dict[str, Option | None]:
        """An option for every decoder, or None for one that sits out this step (deferral);
        max_tokens: the budget left after prefill chunks."""
        options = self._options_for(decoders, now, max_tokens)
        if not self.config.slo_aware:
            return dict(options)
        deferred = self.deferral.choose(decoders, options, now)
        if not deferred:
            return dict(options)
        # With the slack requests out, the step is shorter: choose again for the rest.
        rest = [v for v in decoders if v.id not in deferred]
        out: dict[str, Option | None] = dict(self._options_for(rest, now, max_tokens))
        out.update(dict.fromkeys(deferred))
        return out

    def _options_for(self, decoders: Sequence[RequestView], now: float,
                     max_tokens: int | None) -> dict[str, Option]:
        if self.config.fixed is not None:
            return {v.id: self._pinned(v) for v in decoders}
        return self.selector.select(decoders, now, max_tokens)

    def admit(self, v: RequestView, now: float, running: Sequence[RequestView] = (),
              waiting: Sequence[RequestView] = ()) -> Refusal | None:
        if not self.config.slo_aware:
            return None
        best = min(self.time_per_token(v, o, 1, 1) for o in self.options(v))
        # Under load it shares steps with the running requests that cannot wait (those
        # with slack sit steps out for it when it falls behind: policies/deferral.py).
        step = self.cost.predict(sum(self._work(r) for r in running), len(running))
        firm = [r for r in running if self.deferral.spare(
            r, now, step, self.acceptance.tokens_per_forward(self._pinned(r), r.id)) is None]
        # Auto requests counted at AR's work too: the selector drops their speculation
        # before it lets a request miss its SLO.
        tokens = sum(self._work(r) if self._is_pinned(r) else 1
                     for r in firm if not r.is_prefilling)

        def pace() -> float:
            # Auto is admitted at AR's pace: if every newcomer counted on speculating, the
            # batch would grow until nobody's speculation paid. Speculation then buys the
            # admitted requests margin instead. A bound AR misses even alone is what
            # speculation is for: such a request is admitted at the fastest option's pace
            # (else an idle server refused it as overloaded). A pinned mode is admitted at
            # its own pace.
            options = self.options(v)
            if AR1 in options and not (v.slo.tpot_ms is not None and self.time_per_token(
                    v, AR1, 1, 1) * 1e3 > v.slo.tpot_ms):
                options = [AR1]
            return self.interference_s + min(
                self.time_per_token(v, o, tokens + 1, len(firm) + 1) for o in options)

        return self.admission.check(v, now, best, firm, waiting, self._work, pace)

    def victim(self, candidates_: Sequence[RequestView], now: float) -> RequestView | None:
        if not self.config.slo_aware:
            return max(candidates_, key=lambda v: v.arrival_s, default=None)
        step = self.cost.predict(sum(self._work(v) for v in candidates_), len(candidates_))
        return choose_victim(candidates_, now,
                             lambda v: step / self.acceptance.tokens_per_forward(
                                 v.option or self._pinned(v), v.id))

    # --- learning --------------------------------------------------------------------------

    def observe_step(self, num_tokens: int, num_requests: int, seconds: float,
                     num_prefill_tokens: int = 0, num_prefill_requests: int = 0) -> None:
        """A step ran: its batch, wall time, and how much of it was prefill chunks."""
        self.cost.observe(num_tokens, num_requests, seconds)
        extra = 0.0
        if num_prefill_tokens:
            extra = self.cost.predict(num_tokens, num_requests) - self.cost.predict(
                num_tokens - num_prefill_tokens, num_requests - num_prefill_requests)
        decay = self.config.interference_decay
        self.interference_s = decay * self.interference_s + (1 - decay) * extra
        self.selector.interference_s = self.deferral.interference_s = self.interference_s

    def observe_request(self, request_id: str, option: Option, forwards: int,
                        tokens: int) -> None:
        self.acceptance.observe(request_id, option, forwards, tokens)

    def finish(self, request_id: str) -> None:
        self.acceptance.forget(request_id)

    # --- helpers ---------------------------------------------------------------------------

    def options(self, v: RequestView) -> list[Option]:
        if v.fixed is not None:
            return [v.fixed]
        if self.config.fixed is not None:
            return [self.config.fixed]
        return candidates(v.allow_lossy, self.config.selector.pool)

    def time_per_token(self, v: RequestView, option: Option, num_tokens: int,
                       num_requests: int) -> float:
        """Seconds per token for v under option in a batch of num_tokens besides it."""
        step = self.cost.predict(num_tokens - 1 + option.work_tokens, num_requests)
        return step / self.acceptance.tokens_per_forward(option, v.id)

    def _pinned(self, v: RequestView) -> Option:
        if v.is_mid_iteration and v.option is not None:
            return v.option
        return v.fixed or self.config.fixed or Option("ar")

    def _is_pinned(self, v: RequestView) -> bool:
        return v.fixed is not None or self.config.fixed is not None

    def _work(self, v: RequestView) -> int:
        return (v.option or self._pinned(v)).work_tokens


def select_batch(policy: SLOPolicy, running: Sequence[Any], waiting: Sequence[Any],
                 view: Callable[[Any], RequestView], now: float, config: Any
                 ) -> dict[str, Option | None]:
    """The step's options for every running decoder (num_pending <= 1), with the budget left
    after the prefill chunks that ride along. Requests are the engine's or the simulator's
    (anything with num_pending); config has max_num_seqs, max_prefill_chunk and
    max_batch_tokens. One function, so the simulator decides exactly as the engine does."""
    tokens = prefill_load(
        [r.num_pending for r in running if r.num_pending > 1],
        [r.num_pending for r in waiting], config.max_num_seqs - len(running),
        config.max_prefill_chunk, config.max_batch_tokens)
    decoders = [view(r) for r in running if r.num_pending <= 1]
    return policy.select(decoders, now, config.max_batch_tokens - tokens)


def prefill_load(running_pending: list[int], waiting_pending: list[int], room: int,
                 max_chunk: int, budget: int) -> int:
    """Tokens of the prefill chunks a step will carry beside the decoders: running
    requests still prefilling, and waiting ones while sequence slots remain."""
    chunks = [min(n, max_chunk) for n in running_pending]
    chunks += [min(n, max_chunk) for n in waiting_pending[:max(0, room)]]
    return min(sum(chunks), budget)
