"""The SLO policy: ordering, admission, mode choice and preemption over plain numbers.

One object holds the online estimates (cost model, acceptance) and makes the scheduler's
one decision per step (`plan`: a SchedulerView in, a BatchDecision out, learning first from
the previous step's record in the view) and the admission check per arriving request.
engine/slo_policy.py hands it to the engine's scheduler with a clock. With `fixed` set it is
the same policy with every auto request pinned to one option: the baselines of `tandem
bench slo`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from policies.acceptance import AcceptanceEstimator
from policies.admission import AdmissionConfig, AdmissionControl, Refusal
from policies.bounds import choose_threshold
from policies.cost_model import CostModel
from policies.decision import BatchDecision, SchedulerView, StepRecord
from policies.decision_cache import CacheConfig, DecisionCache
from policies.deferral import Deferral, DeferralConfig
from policies.entry_stay import EntryStay
from policies.modes import ChunkKind
from policies.option import AR1, DIFFUSION, QUADRATIC, Option, candidates
from policies.ordering import by_urgency
from policies.pace_gate import PaceGate, PaceGateConfig
from policies.pipelined import tokens_per_step
from policies.preemption import victim_order
from policies.profile import Profile
from policies.request_view import RequestView
from policies.selector import QUAD_HORIZON, ModeSelector, SelectorConfig


@dataclass(frozen=True)
class PolicyConfig:
    fixed: Option | None = None  # None: auto; else auto requests all run this option
    selector: SelectorConfig = field(default_factory=SelectorConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)  # when options are re-chosen
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    deferral: DeferralConfig = field(default_factory=DeferralConfig)
    pace_gate: PaceGateConfig = field(default_factory=PaceGateConfig)
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
        self.acceptance = AcceptanceEstimator(
            {**tokens_per_step(profile.traces), **profile.tokens_per_forward()},
            request_prior_tokens=profile.request_prior_tokens())
        self.selector = ModeSelector(self.cost, self.acceptance, config.selector)
        self.decisions = DecisionCache(self.selector, config.cache)
        self.admission = AdmissionControl(self.cost, config.admission)
        self.deferral = Deferral(self.cost, self.acceptance, config.deferral)
        self.pace_gate = PaceGate(self.cost, config.pace_gate)
        self.interference_s = 0.0  # mean seconds that prefill chunks add to a step
        self.quad_stay = EntryStay(prior=QUAD_HORIZON)  # forwards per quadratic entry

    # --- the scheduler's decision ----------------------------------------------------------

    def plan(self, view: SchedulerView, now: float) -> BatchDecision:
        """The step's one decision. Learns first from what the view reports: the previous
        step's record and the requests that left since."""
        if view.last_step is not None:
            self.learn(view.last_step)
        for request_id in view.retired:
            self.finish(request_id)
        order = self.order(view.requests, now)
        running = [v for v in view.running if v.num_pending <= 1]
        budget = view.max_batch_tokens - prefill_load(
            [v.num_pending for v in view.running if v.num_pending > 1],
            [v.num_pending for v in view.waiting], view.max_num_seqs - len(view.running),
            view.max_prefill_chunk, view.max_batch_tokens)
        options, deferred = self.choose(running, now, budget)
        if (self.config.selector.lost_keeps_option and self.config.fixed is None
                and not view.waiting and len(running) == len(view.running)):
            self._keep_lost_options(running, options, budget)
        # The rest are to prefill first, but may decode at once (a one-token prompt, or one
        # whose prompt is cached when it starts): their own or the pinned option then.
        options.update({v.id: self._pinned(v) for v in view.requests if v.id not in options})
        return BatchDecision(tuple(v.id for v in order), options, frozenset(deferred),
                             tuple(v.id for v in self.victims(view.running, now)),
                             self.thresholds(running, options),
                             self.held(running, options, view, order, now))

    def held(self, decoders: Sequence[RequestView], options: Mapping[str, Option],
             view: SchedulerView, order: Sequence[RequestView], now: float) -> frozenset[str]:
        """Deadline-only waiting requests that wait to start (policies/pace_gate.py)."""
        if not self.config.slo_aware or not self.pace_gate.applies(view.waiting):
            return frozenset()
        ids = {v.id for v in view.waiting}
        waiting = [v for v in order if v.id in ids]
        tpf = self.acceptance.tokens_per_forward  # 1 at AR
        work = {v.id: options[v.id].work_tokens for v in decoders}
        rate = {v.id: tpf(options[v.id], v.id) for v in decoders}
        starting = [v for v in view.running if v.num_pending > 1]
        return self.pace_gate.held(decoders, work, rate, starting, waiting, now)

    def thresholds(self, decoders: Sequence[RequestView], options: Mapping[str, Option]
                   ) -> dict[str, float]:
        """The diffusion commit threshold of each auto decoder given diffusion, from its
        own acceptance within the config's bounds (policies/bounds.py)."""
        if self.config.fixed is not None:  # a fixed-mode baseline keeps requests' own
            return {}
        bounds = self.config.selector.threshold_bounds
        return {v.id: choose_threshold(self.acceptance.factor(v.id), bounds)
                for v in decoders if v.fixed is None and options[v.id].mode == DIFFUSION}

    def order(self, views: Sequence[RequestView], now: float) -> list[RequestView]:
        if not self.config.slo_aware:
            return sorted(views, key=lambda v: v.arrival_s)
        return by_urgency(views, now, self.config.demote_missed)

    def choose(self, decoders: Sequence[RequestView], now: float,
               max_tokens: int | None = None) -> tuple[dict[str, Option], set[str]]:
        """An option for every decoder, and who sits out this step (deferral; their option
        is for the case that nothing else runs); max_tokens: the budget left after prefill
        chunks."""
        options = self._options_for(decoders, now, max_tokens)
        if not self.config.slo_aware:
            return options, set()
        deferred = self.deferral.choose(decoders, options, now)
        if deferred:
            # With the slack requests out, the step is shorter: choose again for the rest.
            rest = [v for v in decoders if v.id not in deferred]
            options.update(self._options_for(rest, now, max_tokens))
        return options, deferred

    def select(self, decoders: Sequence[RequestView], now: float,
               max_tokens: int | None = None) -> dict[str, Option | None]:
        """choose() as one mapping: None for a request that sits out this step."""
        options, deferred = self.choose(decoders, now, max_tokens)
        return {k: None if k in deferred else o for k, o in options.items()}

    def _options_for(self, decoders: Sequence[RequestView], now: float,
                     max_tokens: int | None) -> dict[str, Option]:
        if self.config.fixed is not None:
            return {v.id: self._pinned(v) for v in decoders}
        return self.decisions.select(decoders, now, max_tokens)

    def _keep_lost_options(self, decoders: Sequence[RequestView],
                           options: dict[str, Option], max_tokens: int | None) -> None:
        """Where every decoder is lost and nobody waits or prefills, each free one that the
        selector moves from speculation to AR keeps the option it runs. One bad first
        iteration judged most tight requests lost (CPU engine, tight medium: 49 of 58
        admitted); pass 3 then moved them to AR as their factor fell, where each missed for
        certain, while a fixed speculative mode met some of the same requests on later good
        runs of drafts (BENCHMARKS.md, #18 fourteenth session). Only where nobody hopeful
        shares the step: one kept at speculation beside hopeful requests took their compute
        (decision_cache.py). Admission counts them at AR's work while every one is lost
        (admit)."""
        if not decoders or not all(self._is_lost(v) for v in decoders):
            return
        chosen = dict(options)
        for v in decoders:
            if (options.get(v.id) == AR1 and v.fixed is None and v.option != AR1
                    and self.selector.selectable(v, v.option)):
                chosen[v.id] = v.option
        if max_tokens is None or sum(o.work_tokens for o in chosen.values()) <= max_tokens:
            options.update(chosen)

    def admit(self, v: RequestView, now: float, running: Sequence[RequestView] = (),
              waiting: Sequence[RequestView] = ()) -> Refusal | None:
        if not self.config.slo_aware:
            return None
        best = min(self.time_per_token(v, o, 1, 1) for o in self.options(v))
        if not running and not waiting:
            # A trial on an idle engine: judged "infeasible alone" on what was learned but
            # not on the profile (its step costs and acceptance), it is admitted. Refused
            # requests bring no evidence, so once a bad patch of prompts (or of slow steps)
            # pulled an estimate past the bound, every later arrival was refused and nothing
            # ran to correct it (CPU engine, tight: 185-199 of 200 refused in 19 of 60
            # fixed-mode runs; BENCHMARKS.md, "Thirteenth session (engine-tight)").
            best = min(best, min(self._time_per_token_at_prior(o) for o in self.options(v)))
        # Under load it shares steps with the running requests that cannot wait (those
        # with slack sit steps out for it when it falls behind: policies/deferral.py).
        step = self.cost.predict(sum(self._work(r) for r in running), len(running))
        firm = [r for r in running if self.deferral.spare(
            r, now, step, self.acceptance.tokens_per_forward(self._pinned(r), r.id)) is None]
        # Auto requests counted at AR's work: the selector drops their speculation before
        # it lets a request miss its SLO; except those whose bound AR misses even alone,
        # which keep speculating (counted at AR's work, every tight newcomer was admitted at
        # high load and most missed; counting all at their option's work refused
        # interactive newcomers at low load, where spare compute buys speculation).
        decoding = [r for r in firm if not r.is_prefilling]
        # Where every one is lost, each keeps its option only until a newcomer runs
        # (_keep_lost_options); then the selector may move it to AR: counted at AR's work.
        # Beside a hopeful one the selector runs lost ones as before: counted as they run
        # (at AR's work there too, NLD-8B tight overload admitted what then missed: 0.946x
        # against 0.974x, BENCHMARKS.md #18 fifteenth session).
        if decoding and all(self._is_lost(r) for r in decoding):
            tokens, decoding = len(decoding), []
        else:
            tokens = sum(self._work(r) if self._is_pinned(r) or self._needs_speculation(r)
                         else 1 for r in decoding)
        # Speculation-only auto requests, counted at the newcomer's option when it is paced
        # at one: they run one option together (the selector's uniform start), so pacing a
        # newcomer at a long block beside the others' short ones admitted what the batch
        # could not serve.
        fellows = [r for r in decoding if not self._is_pinned(r) and self._needs_speculation(r)
                   and self._work(r) > 1]  # those given up (at AR) stay at AR
        fellow_work = sum(self._work(r) for r in fellows)

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
            shared = self._needs_speculation(v) and self.config.fixed is None
            return self.interference_s + min(
                self.time_per_token(v, o, tokens + 1 + (
                    len(fellows) * o.work_tokens - fellow_work if shared else 0),
                    len(firm) + 1) for o in options)

        return self.admission.check(v, now, best, firm, waiting, self._work, pace)

    def _is_lost(self, v: RequestView) -> bool:
        """No option met v even alone when it was last chosen for (decision_cache.py)."""
        kept = self.decisions.kept.get(v.id)
        return kept is not None and kept.is_lost and self.config.selector.lost_keeps_option

    def _needs_speculation(self, v: RequestView) -> bool:
        return v.slo.tpot_below(self.cost.predict(1, 1))

    def victims(self, running: Sequence[RequestView], now: float) -> list[RequestView]:
        """Whom to preempt when the cache runs dry, first to last."""
        if not self.config.slo_aware:
            return sorted(running, key=lambda v: v.arrival_s, reverse=True)
        step = self.cost.predict(sum(self._work(v) for v in running), len(running))
        return victim_order(running, now,
                            lambda v: step / self.acceptance.tokens_per_forward(
                                v.option or self._pinned(v), v.id))

    def victim(self, candidates_: Sequence[RequestView], now: float) -> RequestView | None:
        return next(iter(self.victims(candidates_, now)), None)

    # --- learning --------------------------------------------------------------------------

    def learn(self, step: StepRecord) -> None:
        """A step ran: its cost, and what each decoding request emitted."""
        self.observe_step(step.num_tokens, step.num_requests, step.seconds,
                          step.num_prefill_tokens, step.num_prefill_requests)
        for w in step.works:
            if w.kind is ChunkKind.PREFILL or w.option is None:
                continue
            if w.option.mode == QUADRATIC:
                self._observe_quadratic(w.kind)
            if w.kind is ChunkKind.DRAFT and w.option.mode == QUADRATIC:
                # Quadratic speculation's entry pass (a plain draft, nothing emitted): the
                # selector prices it on entry (over the measured stay); counted here as well,
                # it made every entry look like bad acceptance (factors fell to ~0.6 after
                # one entry and the request was given up).
                continue
            self.observe_request(w.request_id, w.option, 1, w.num_emitted)

    def _observe_quadratic(self, kind: ChunkKind) -> None:
        if kind is ChunkKind.DRAFT:
            self.quad_stay.observe_entry()
        else:
            self.quad_stay.observe_forward()
        self.selector.quad_horizon = self.quad_stay.forwards

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
        self.pace_gate.interference_s = self.interference_s

    def observe_request(self, request_id: str, option: Option, forwards: int,
                        tokens: int) -> None:
        self.acceptance.observe(request_id, option, forwards, tokens)

    def finish(self, request_id: str) -> None:
        self.acceptance.forget(request_id)
        self.decisions.forget(request_id)

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

    def _time_per_token_at_prior(self, option: Option) -> float:
        """Seconds per token alone under option at the profile's step cost and acceptance."""
        step = self.cost.prior_coef.predict(option.work_tokens, 1)
        return step / self.acceptance.prior_value(option)

    def _pinned(self, v: RequestView) -> Option:
        if v.is_mid_iteration and v.option is not None:
            return v.option
        return v.fixed or self.config.fixed or Option("ar")

    def _is_pinned(self, v: RequestView) -> bool:
        return v.fixed is not None or self.config.fixed is not None

    def _work(self, v: RequestView) -> int:
        return (v.option or self._pinned(v)).work_tokens


def prefill_load(running_pending: list[int], waiting_pending: list[int], room: int,
                 max_chunk: int, budget: int) -> int:
    """Tokens of the prefill chunks a step will carry beside the decoders: running
    requests still prefilling, and waiting ones while sequence slots remain."""
    chunks = [min(n, max_chunk) for n in running_pending]
    chunks += [min(n, max_chunk) for n in waiting_pending[:max(0, room)]]
    return min(sum(chunks), budget)
