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


def checks(runs: list[dict], fixed: Sequence[str], fcfs: Sequence[str] = ()) -> list[dict]:
    """Per (where, workload, load): auto against the best lossless fixed mode under the same
    SLO scheduling (`fixed`) and under first-come scheduling (`fcfs`)."""
    out = []
    for (where, workload, load), by_policy in _groups(runs).items():
        auto = by_policy.get("auto")
        if auto is None:
            continue
        row: dict = {"where": where, "workload": workload, "load": load}
        for label, names in (("fixed", fixed), ("fcfs", fcfs)):
            best = best_fixed(by_policy, names)
            if best is None:
                continue
            ratio = auto["goodput"] / best["goodput"] if best["goodput"] else float("inf")
            row[f"best_{label}"] = best["policy"]
            row[f"goodput_ratio_{label}"] = round(ratio, 3)
            row[f"auto_at_least_as_good_as_{label}"] = (
                auto["goodput"] >= best["goodput"] * 0.999
                and auto["attainment"] >= best["attainment"] - 1e-3)
        out.append(row)
    return out


def table(runs: list[dict], fixed: Sequence[str], fcfs: Sequence[str] = ()) -> str:
    groups = _groups(runs)
    policies = list(dict.fromkeys(r["policy"] for r in runs))
    head = f"{'where':<7}{'workload':<12}{'load':<12}" + "".join(
        f"{p:>17}" for p in policies) + f"{'auto/fixed':>12}{'auto/fcfs':>12}"
    lines = ["attainment | goodput (req/s) per policy. auto/fixed: auto's goodput over the best "
             "lossless fixed mode's under the same SLO scheduling; auto/fcfs: over the best "
             "under first-come scheduling", head, "-" * len(head)]
    ratios = {(c["where"], c["workload"], c["load"]): c for c in checks(runs, fixed, fcfs)}
    for key, by_policy in groups.items():
        cells = "".join(
            f"{by_policy[p]['attainment']:>9.2f} {by_policy[p]['goodput']:>6.2f} "
            if p in by_policy else f"{'-':>17}" for p in policies)
        c = ratios.get(key, {})
        tail = "".join(f"{c[k]:>11.2f}x" if k in c else f"{'-':>12}"
                       for k in ("goodput_ratio_fixed", "goodput_ratio_fcfs"))
        lines.append(f"{key[0]:<7}{key[1]:<12}{key[2]:<12}{cells}{tail}")
    return "\n".join(lines)
