"""bench/slo_replay.py's simulator rows beside the engine's rows of the same cells and seeds.

Per load and policy, for the engine and for each simulator variant (acceptance/steps):
goodput (requests per second that met every bound, mean over seeds), attainment (mean) and
refusals (mean per seed); then auto over the best fixed mode (ratio of the means) and, for
the simulator, auto's mode mix (share of decoding request-steps per mode, mean over seeds).
Only seeds that the simulator ran are taken from the engine file.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from bench.slo_engine_cells import FIXED, POLICIES
from policies.workloads import LOADS

ENGINE = "engine"


def _source(row: dict) -> str:
    if "acceptance" not in row:
        return ENGINE
    scale = row.get("slo_scale", 1.0)
    return (f"{row['acceptance']}/{row['steps']}" + ("/aligned" if row.get("align") else "")
            + (f"@x{scale:.2f}" if scale != 1.0 else ""))


def cell_means(rows: list[dict]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(source, load, policy) -> mean goodput, attainment and refusals per seed."""
    by: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        by.setdefault((_source(r), r["load"], r["policy"]), []).append(r)
    return {k: {"goodput": statistics.fmean(r["goodput"] for r in v),
                "attainment": statistics.fmean(r["attainment"] for r in v),
                "refused": statistics.fmean(r["num_refused"] for r in v), "seeds": len(v)}
            for k, v in by.items()}


def auto_over_best(means: dict, source: str, load: str) -> float | None:
    best = max((means[(source, load, p)]["goodput"] for p in FIXED
                if (source, load, p) in means), default=0.0)
    auto = means.get((source, load, "auto"))
    return auto["goodput"] / best if auto is not None and best > 0 else None


def mode_mix(rows: list[dict], source: str, load: str) -> str:
    mixes = [r["modes"] for r in rows if r["policy"] == "auto" and _source(r) == source
             and r["load"] == load]
    if not mixes:
        return "-"
    modes = sorted({m for mix in mixes for m in mix})
    share = {m: statistics.fmean(mix.get(m, 0.0) for mix in mixes) for m in modes}
    return " ".join(f"{m} {v:.0%}" for m, v in sorted(share.items(), key=lambda x: -x[1]))


def compare(engine_out: Path, sim_out: Path) -> str:
    sim = json.loads(sim_out.read_text())["runs"]
    cells = {(r["workload"], r["load"], r["seed"]) for r in sim}
    engine = [r for r in json.loads(engine_out.read_text())["runs"]
              if (r["workload"], r["load"], r["seed"]) in cells]
    rows = engine + sim
    means = cell_means(rows)
    sources = [ENGINE] + sorted({_source(r) for r in sim})
    loads = sorted({r["load"] for r in sim}, key=list(LOADS).index)
    lines = ["goodput / attainment / refused per seed (mean over seeds)",
             f"{'load':<12}{'policy':<16}" + "".join(f"{s:>24}" for s in sources)]
    for load in loads:
        for p in POLICIES:
            cols = []
            for s in sources:
                m = means.get((s, load, p))
                cols.append("-" if m is None else
                            f"{m['goodput']:.2f} {m['attainment']:5.1%} {m['refused']:5.1f}")
            lines.append(f"{load:<12}{p:<16}" + "".join(f"{c:>24}" for c in cols))
        ratios = [auto_over_best(means, s, load) for s in sources]
        lines.append(f"{load:<12}{'auto/best':<16}" + "".join(
            f"{'-' if x is None else f'{x:.2f}x':>24}" for x in ratios))
    lines.append("auto's mode mix (simulator; share of decoding request-steps)")
    for load in loads:
        for s in sources[1:]:
            lines.append(f"{load:<12}{s:<22}{mode_mix(sim, s, load)}")
    return "\n".join(lines)
