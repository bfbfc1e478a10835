"""Text table and target checks for `tandem bench slo` runs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

Key = tuple[str, str, str]  # (where, workload, load)


def _groups(runs: list[dict]) -> dict[Key, dict[str, dict]]:
    groups: dict[Key, dict[str, dict]] = defaultdict(dict)
    for r in runs:
        groups[(r["where"], r["workload"], r["load"])][r["policy"]] = r
    return groups


def best_fixed(by_policy: dict[str, dict], fixed: Sequence[str]) -> dict | None:
    rows = [by_policy[p] for p in fixed if p in by_policy]
    return max(rows, key=lambda r: (r["goodput"], r["attainment"]), default=None)


def checks(runs: list[dict], fixed: Sequence[str]) -> list[dict]:
    """Per (where, workload, load): auto against the best lossless fixed mode."""
    out = []
    for (where, workload, load), by_policy in _groups(runs).items():
        auto, best = by_policy.get("auto"), best_fixed(by_policy, fixed)
        if auto is None or best is None:
            continue
        ratio = auto["goodput"] / best["goodput"] if best["goodput"] else float("inf")
        out.append({"where": where, "workload": workload, "load": load,
                    "best_fixed": best["policy"], "goodput_ratio": round(ratio, 3),
                    "attainment_delta": round(auto["attainment"] - best["attainment"], 4),
                    "auto_at_least_as_good": auto["goodput"] >= best["goodput"] * 0.999
                    and auto["attainment"] >= best["attainment"] - 1e-3})
    return out


def table(runs: list[dict], fixed: Sequence[str]) -> str:
    groups = _groups(runs)
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    head = f"{'where':<7}{'workload':<12}{'load':<8}" + "".join(
        f"{p:>16}" for p in policies) + f"{'auto/best':>11}"
    lines = ["attainment | goodput (req/s) per policy; auto/best = auto goodput over the "
             "best lossless fixed mode's", head, "-" * len(head)]
    ratios = {(c["where"], c["workload"], c["load"]): c for c in checks(runs, fixed)}
    for key, by_policy in groups.items():
        cells = "".join(
            f"{by_policy[p]['attainment']:>8.2f} {by_policy[p]['goodput']:>6.2f} "
            if p in by_policy else f"{'-':>16}" for p in policies)
        c = ratios.get(key)
        ratio = f"{c['goodput_ratio']:>8.2f}x {c['best_fixed'][:2]}" if c else ""
        lines.append(f"{key[0]:<7}{key[1]:<12}{key[2]:<8}{cells}{ratio}")
    return "\n".join(lines)
