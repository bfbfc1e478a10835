"""The simulator's step: plan it as engine/scheduler.py does, then apply its outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

from policies.option import Option
from policies.policy import select_batch
from policies.sim_request import SimRequest

if TYPE_CHECKING:
    from policies.simulator import Simulator

Work = tuple[SimRequest, str, int]  # (request, "prefill" | "decode", batch tokens)


def plan_step(sim: Simulator) -> list[Work]:
    cfg, budget = sim.config, sim.config.max_batch_tokens
    choice = _choose_options(sim)
    plan: list[Work] = []
    planned: set[str] = set()
    deferred = []
    for r in _ordered(sim, sim.running):
        if r.id in planned or r not in sim.running:
            continue  # preempted earlier in this loop
        if r.num_pending <= 1 and r.id in choice and choice[r.id] is None:
            deferred.append(r)  # sits out this step
            continue
        work = _work_for(sim, r, budget, planned, choice)
        if work is not None:
            plan.append(work)
            planned.add(r.id)
            budget -= work[2]
    for r in _ordered(sim, sim.waiting):
        if budget <= 0 or len(sim.running) >= cfg.max_num_seqs:
            break
        n = min(r.num_pending, budget, cfg.max_prefill_chunk)
        if not sim._grow(r, r.num_cached + n):
            break
        sim.waiting.remove(r)
        sim.running.append(r)
        work = _work_for(sim, r, budget, planned, choice)
        if work is None:
            break
        plan.append(work)
        planned.add(r.id)
        budget -= work[2]
    for r in deferred if not plan else []:  # never an empty step for a deferral
        choice.pop(r.id)
        if r in sim.running and (work := _work_for(sim, r, budget, planned, choice)):
            plan.append(work)
            planned.add(r.id)
            budget -= work[2]
    return plan


def apply_step(sim: Simulator, plan: list[Work]) -> None:
    for r, kind, n in plan:
        if kind == "prefill":
            r.num_cached += n
            emitted = 1 if r.num_cached == r.num_tokens else 0
        else:
            emitted = r.decode(sim.profile)
            assert r.option is not None
            sim.policy.observe_request(r.id, r.option, 1, emitted)
        if emitted:
            r.num_output = min(r.spec.max_tokens, r.num_output + emitted)
            r.num_cached = r.num_tokens - 1  # steady state: all but the seed cached
            if r.first_token_s is None:
                r.first_token_s = sim.now
            if r.num_output >= r.spec.max_tokens:
                sim._finish(r)
                continue
        sim._shrink(r)


def _ordered(sim: Simulator, rs: list[SimRequest]) -> list[SimRequest]:
    by_id = {r.id: r for r in rs}
    return [by_id[v.id] for v in sim.policy.order([r.view() for r in rs], sim.now)]


def _choose_options(sim: Simulator) -> dict[str, Option | None]:
    return select_batch(sim.policy, sim.running, sim.waiting, SimRequest.view, sim.now,
                        sim.config)


def _work_for(sim: Simulator, r: SimRequest, budget: int, planned: set[str],
              choice: dict[str, Option | None]) -> Work | None:
    if r.num_pending > 1:  # prompt, or recomputation after preemption
        n = min(r.num_pending, budget, sim.config.max_prefill_chunk)
        if n <= 0 or not _make_room(sim, r, r.num_cached + n, planned):
            return None
        return r, "prefill", n
    if not r.is_mid_iteration:
        option = choice.get(r.id) or sim.policy.select([r.view()], sim.now)[r.id]
        assert option is not None
        r.set_option(option)
    assert r.option is not None
    if r.option.work_tokens > budget:
        return None
    if not _make_room(sim, r, r.slots_needed(), planned):
        return None
    return r, "decode", r.work_tokens()


def _make_room(sim: Simulator, r: SimRequest, num_slots: int, planned: set[str]) -> bool:
    while not sim._grow(r, num_slots):
        candidates = [x for x in sim.running if x is not r and x.id not in planned]
        views = {x.id: x for x in candidates}
        victim = sim.policy.victim([x.view() for x in candidates], sim.now)
        if victim is None:
            return False
        v = views[victim.id]
        sim._free(v)
        sim.running.remove(v)
        sim.waiting.insert(0, v)
    return True
