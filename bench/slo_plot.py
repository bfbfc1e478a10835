"""Attainment against load, one line per policy, one panel per (where, workload)."""

from __future__ import annotations

from pathlib import Path

from policies.workloads import LOADS

COLORS = {"auto": "black", "ar": "tab:blue", "spec_linear": "tab:orange",
          "spec_quadratic": "tab:green", "diffusion": "tab:red"}


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
            mode = policy.removeprefix("fcfs:")
            style = dict(lw=2.5 if policy == "auto" else 1.2, color=COLORS.get(mode),
                         ls="--" if policy.startswith("fcfs:") else "-")
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=policy,
                    **style)
        ax.set_title(f"{where}: {workload}")
        ax.set_xlabel("load (x AR capacity at batch 32)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("SLO attainment")
    handles, labels = max((ax.get_legend_handles_labels() for ax in axes[0]),
                          key=lambda hl: len(hl[1]))
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
