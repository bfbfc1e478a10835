"""The scheduler: decides each step who runs, in which mode, with which chunk.

There is no prefill phase or decode phase: a request with more than one uncached token gets
a causal prefill chunk (chunked to the token budget), one in steady state gets its mode's
work. Requests of every mode share one batch. When the cache runs dry a running request is
preempted (its blocks freed, recomputed later), never failed.

The order of requests, the choice of mode and block length, deferrals, the preemption
order and admission are a policy's (`SchedulingPolicy`, engine/policy.py): schedule() asks
it once per step, with a read-only view of the requests and what the previous step
measured, and follows the one decision it gets back. The first-come policy is the default;
the SLO-aware one (engine/slo_policy.py) sits behind the same interface.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.kv_cache import KVCacheManager
from engine.modes.base import Advance, DecodeMode, ModeContext, prefill_advance, prefill_work
from engine.params import Mode
from engine.plan import ChunkWork, StepOutput, StepPlan, WorkResult
from engine.policy import FirstComePolicy, PolicyError, SchedulingPolicy
from engine.request import Request, Status
from engine.stop import Detokenize, append_tokens
from policies.decision import BatchDecision, SchedulerView, StepRecord, WorkRecord
from policies.modes import ChunkKind
from policies.option import option_of
from policies.request_view import RequestView


@dataclass(frozen=True)
class SchedulerConfig:
    max_batch_tokens: int = 2048
    max_num_seqs: int = 64
    max_prefill_chunk: int = 1024

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_num_seqs", "max_prefill_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"SchedulerConfig.{name} must be >= 1")


@dataclass
class StepEvents:
    """What update() did, for the engine's outputs and the policy's estimators."""

    advanced: dict[str, Advance] = field(default_factory=dict)
    emitted: dict[str, list[int]] = field(default_factory=dict)
    finished: list[Request] = field(default_factory=list)


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv: KVCacheManager,
                 modes: dict[Mode, DecodeMode], ctx: ModeContext,
                 policy: SchedulingPolicy | None = None,
                 detok: Detokenize | None = None) -> None:
        self.config, self.kv, self.modes, self.ctx = config, kv, modes, ctx
        self.policy = policy or FirstComePolicy()
        self.detok = detok
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self.num_preemptions = 0
        self.last_step: StepRecord | None = None  # the latest step's record
        self._unreported: StepRecord | None = None  # not yet in a view the policy planned on
        self._retired: list[str] = []  # left since the last planned view

    # --- requests in and out -------------------------------------------------------------

    def add(self, req: Request) -> None:
        if req.id in self.requests:
            raise ValueError(f"request id {req.id!r} is already in use")
        self.requests[req.id] = req
        self.waiting.append(req)

    def abort(self, request_id: str) -> bool:
        req = self.requests.get(request_id)
        if req is None or req.is_finished:
            return False
        req.status, req.finish_reason = Status.FINISHED, "abort"
        self._retire(req)
        return True

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _retire(self, req: Request) -> None:
        self._retired.append(req.id)
        self.kv.free(req.cache)
        req.mode_state = None
        if req in self.running:
            self.running.remove(req)
        if req in self.waiting:
            self.waiting.remove(req)
        self.requests.pop(req.id, None)

    # --- schedule --------------------------------------------------------------------------

    def view(self) -> SchedulerView:
        """What the policy sees: every live request, the limits, the step since last time."""
        def view_of(req: Request) -> RequestView:
            mode = req.current_mode
            return req.view(mode is not None and self.modes[mode].is_mid_iteration(req))

        cfg = self.config
        return SchedulerView(tuple(map(view_of, self.running)), tuple(map(view_of, self.waiting)),
                             cfg.max_batch_tokens, cfg.max_num_seqs, cfg.max_prefill_chunk,
                             self._unreported, tuple(self._retired))

    def admit(self, req: Request) -> None:
        """Ask the policy whether req may join (AdmissionError if not), then queue it."""
        self.policy.admit(req.view(False), self.view())
        self.add(req)

    def schedule(self) -> StepPlan:
        decision = self.policy.plan(self.view())
        self._unreported, self._retired = None, []  # the policy has seen them now
        rank = self._ranks(decision)
        budget = self.config.max_batch_tokens
        works: list[ChunkWork] = []
        planned: set[str] = set()
        deferred: list[Request] = []

        def add(req: Request) -> bool:
            nonlocal budget
            work = self._work_for(req, budget, planned, decision)
            if work is not None:
                works.append(work)
                planned.add(req.id)
                budget -= work.num_tokens
            return work is not None

        for req in sorted(self.running, key=lambda r: rank[r.id]):
            if req.id in planned or req not in self.running:
                continue  # preempted earlier in this loop
            if req.num_pending <= 1 and req.id in decision.deferred:
                deferred.append(req)  # sits out this step, making room for others
                continue
            add(req)
        held: list[Request] = []
        for req in sorted(self.waiting, key=lambda r: rank[r.id]):  # with those just preempted
            if req.id in decision.held:
                held.append(req)  # waits to start (policies/pace_gate.py)
                continue
            if not self._start(req, budget, add):
                break
        for req in deferred if not works else []:  # never an empty step for a deferral
            if req in self.running:
                add(req)
        for req in held if not works else []:  # nor for a hold
            if not self._start(req, budget, add):
                break
        return StepPlan(works)

    def _start(self, req: Request, budget: int, add: Callable[[Request], bool]) -> bool:
        """Move a waiting request into the batch if budget, a sequence slot and cache allow."""
        if budget <= 0 or len(self.running) >= self.config.max_num_seqs:
            return False
        return self._admit(req, budget) and add(req)

    def _ranks(self, decision: BatchDecision) -> dict[str, int]:
        """Each live request's place in the decision's order (which must name them all)."""
        rank = {rid: i for i, rid in enumerate(decision.order)}
        missing = [rid for rid in self.requests if rid not in rank]
        if missing:
            raise PolicyError(f"{type(self.policy).__name__} left requests {missing[:5]} out of "
                              f"its order")
        return rank

    def _admit(self, req: Request, budget: int) -> bool:
        if req.cache.block_table:
            return True
        self.kv.attach_prefix(req.cache, req.all_ids)
        n = min(req.num_pending, budget, self.config.max_prefill_chunk)
        if not self.kv.can_grow(req.cache, req.cache.num_cached + n):
            self.kv.free(req.cache)
            return False
        self.waiting.remove(req)
        self.running.append(req)
        req.status = Status.RUNNING
        return True

    def _work_for(self, req: Request, budget: int, planned: set[str],
                  decision: BatchDecision) -> ChunkWork | None:
        if req.num_pending > 1:  # prompt, or recomputation after preemption
            n = min(req.num_pending, budget, self.config.max_prefill_chunk)
            if n <= 0 or not self._make_room(req, req.cache.num_cached + n, planned, decision):
                return None
            return prefill_work(req, self.ctx, n)
        mode, block = self._mode_for(req, decision)
        impl = self.modes[mode]
        if impl.work_tokens(block) > budget:
            return None
        if not self._make_room(req, impl.slots_needed(req, block), planned, decision):
            return None
        return impl.work(req, block)

    def _mode_for(self, req: Request, decision: BatchDecision) -> tuple[Mode, int]:
        """Keep the running mode mid-iteration; otherwise the decision's option."""
        current = req.current_mode
        if current is not None and self.modes[current].is_mid_iteration(req):
            return current, req.current_block
        option = decision.options.get(req.id)
        if option is None:
            raise PolicyError(f"{type(self.policy).__name__} gave no mode for request "
                              f"{req.id!r}, which decodes this step")
        mode, block = Mode(option.mode), option.block
        if mode is not current or block != req.current_block:
            req.mode_state = None  # drafts of another mode or length are dropped
        req.current_mode, req.current_block = mode, block
        req.current_threshold = decision.thresholds.get(req.id)
        return mode, block

    def _make_room(self, req: Request, num_slots: int, planned: set[str],
                   decision: BatchDecision) -> bool:
        """Grow req's cache to num_slots, preempting unplanned running requests in the
        decision's victim order while the pool is dry."""
        while not self.kv.can_grow(req.cache, num_slots):
            victim = next((r for rid in decision.victims
                           if (r := self.requests.get(rid)) is not None and r is not req
                           and r.id not in planned and r.status is Status.RUNNING), None)
            if victim is None:
                return False
            self.preempt(victim)
        self.kv.grow(req.cache, num_slots)
        return True

    def preempt(self, req: Request) -> None:
        self.kv.free(req.cache)
        req.mode_state = None
        req.status = Status.WAITING
        req.stats.num_preemptions += 1
        self.num_preemptions += 1
        self.running.remove(req)
        self.waiting.appendleft(req)

    # --- update ----------------------------------------------------------------------------

    def update(self, plan: StepPlan, out: StepOutput, wall_s: float = 0.0) -> StepEvents:
        """Apply the step's results. wall_s: the step's wall time as its driver measured it
        (schedule + forward); the policy learns max(wall_s, the executor's own time)."""
        events = StepEvents()
        records = []
        for work, result in zip(plan.works, out.results, strict=True):
            req = self.requests.get(work.request_id)
            if req is None or req.is_finished:
                continue  # aborted while the step ran
            adv = self._advance(req, work, result)
            kept = append_tokens(req, adv.tokens, self.ctx.eos_ids, self.detok)
            self._count(req, work, adv, kept)
            records.append(self._record(req, work, adv))
            events.advanced[req.id] = adv
            events.emitted[req.id] = req.output_ids[len(req.output_ids) - kept:] if kept else []
            if req.is_finished:
                self._retire(req)
                events.finished.append(req)
            else:
                self.kv.set_length(req.cache, adv.num_cached, req.all_ids)
        if plan.works:
            self.last_step = self._unreported = StepRecord(
                plan.num_tokens, len(plan.works), max(wall_s, out.elapsed_s), tuple(records))
        return events

    @staticmethod
    def _record(req: Request, work: ChunkWork, adv: Advance) -> WorkRecord:
        kind = ChunkKind(work.kind)
        option = None if kind is ChunkKind.PREFILL else option_of(work.mode, req.current_block)
        return WorkRecord(req.id, kind, option, work.num_tokens, len(adv.tokens))

    def _advance(self, req: Request, work: ChunkWork, result: WorkResult) -> Advance:
        if work.kind is ChunkKind.PREFILL:
            return prefill_advance(req, work, result)
        return self.modes[Mode(work.mode)].update(req, work, result)

    @staticmethod
    def _count(req: Request, work: ChunkWork, adv: Advance, kept: int) -> None:
        st = req.stats
        st.num_forwards += 1
        st.forwards_by_mode[work.mode] += 1
        if ChunkKind(work.kind) is not ChunkKind.PREFILL:
            key = f"{work.mode}/{max(1, req.current_block)}"
            if work.mode == Mode.DIFFUSION and req.current_threshold is not None:
                key += f"@{req.current_threshold:.2f}"
            st.forwards_by_block[key] += 1
        st.tokens_by_mode[work.mode] += kept
        st.drafted_by_mode[work.mode] += adv.drafted
        st.accepted_by_mode[work.mode] += adv.accepted
