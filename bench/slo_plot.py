"""Attainment against load, one line per policy, one panel per (where, workload)."""

from __future__ import annotations

from pathlib import Path

from policies.workloads import LOADS


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["where"], r["workload"]) for r in runs))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (where, workload) in zip(axes[0], panels, strict=True):
        rows = [r for r in runs if r["where"] == where and r["workload"] == workload]
        for policy in dict.fromkeys(r["policy"] for r in rows):
            pts = sorted((LOADS[r["load"]], r["attainment"]) for r in rows
                         if r["policy"] == policy)
            style = (dict(lw=2.5, color="black") if policy == "auto"
                     else dict(lw=1.2, ls="--") if policy.startswith("fcfs:") else dict(lw=1.2))
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=policy,
                    **style)
        ax.set_title(f"{where}: {workload}")
        ax.set_xlabel("load (x AR capacity at batch 32)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("SLO attainment")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
