"""The PNG charts of docs/benchmarks.md, drawn from a bench run's recorded figures (matplotlib)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    return plt


def priority_chart(data: dict[str, Any], path: Path) -> None:
    """Per broker and case, burst and spaced: low tasks started ahead of a high task, and its wait."""
    from bench.priority import CASES

    plt = _pyplot()
    brokers = list(dict.fromkeys(r["broker"] for r in data["runs"]))
    fig, axes = plt.subplots(len(brokers), 2, figsize=(12, 2.9 * len(brokers) + 0.8), squeeze=False)
    for row, broker in zip(axes, brokers, strict=True):
        runs = [r for r in data["runs"] if r["broker"] == broker]
        keys = [k for k in CASES if any(r["case"] == k for r in runs)]
        for ax, metric, scale, xlabel in (
            (row[0], "overtaken", 1, "low tasks started after a high task was sent, before it started"),
            (row[1], "wait", 1000, "high task's wait from sent to started (ms)"),
        ):
            for offset, phase, color in ((-0.2, "burst", "#c0392b"), (0.2, "spaced", "#2980b9")):
                values = [
                    [
                        h[metric] * scale
                        for r in runs
                        if r["case"] == k
                        for h in r["highs"]
                        if h["phase"] == phase
                    ]
                    for k in keys
                ]
                ys = [i + offset for i in range(len(keys))]
                ax.barh(
                    ys, [max(v) for v in values], height=0.38, color=color, alpha=0.3, label=f"{phase}: max"
                )
                ax.barh(
                    ys,
                    [statistics.median(v) for v in values],
                    height=0.38,
                    color=color,
                    label=f"{phase}: median",
                )
            ax.set_yticks(
                range(len(keys)), [CASES[k].label for k in keys] if ax is row[0] else [], fontsize=8
            )
            ax.invert_yaxis()
            ax.grid(axis="x", alpha=0.3)
            ax.set_xlabel(xlabel, fontsize=8)
        row[0].set_title(broker, loc="left", fontweight="bold")
    handles, labels = axes[0][1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=len(labels), frameon=False)
    s = data["settings"]
    fig.suptitle(
        f"High tasks behind {s['backlog']} low tasks of {s['duration'] * 1000:.0f} ms on one worker of "
        f"concurrency {s['concurrency']}: {s['highs']} sent at once (burst), then {s['highs']} one every "
        f"100 ms (spaced); {s['rounds']} round(s) pooled. Shorter is better.",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))  # room for the legend below
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def throughput_chart(data: dict[str, Any], path: Path) -> None:
    """Per broker: enqueue and drain rates of each configuration as a ratio to bare Celery."""
    plt = _pyplot()
    brokers = list(dict.fromkeys(r["broker"] for r in data["rows"]))
    measured = [r for r in data["rows"] if r["drain"] and r["enqueue"]]  # a failed reference has none
    heights = [sum(r["broker"] == b for r in measured) for b in brokers]
    fig, axes = plt.subplots(
        len(brokers),
        1,
        figsize=(10, 0.55 * sum(heights) + 1.1 * len(brokers) + 0.4),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for (ax,), broker in zip(axes, brokers, strict=True):
        rows = [r for r in measured if r["broker"] == broker]
        bare = next(r for r in rows if r["key"] == "bare")
        for offset, metric, color in ((-0.2, "enqueue", "#8e44ad"), (0.2, "drain", "#27ae60")):
            base = statistics.median(bare[metric])
            ratios = [statistics.median(r[metric]) / base for r in rows]
            ax.barh([i + offset for i in range(len(rows))], ratios, height=0.38, color=color, label=metric)
        ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(broker, loc="left", fontweight="bold")
        ax.grid(axis="x", alpha=0.3)
    axes[-1][0].set_xlabel("tasks/s as a ratio to bare Celery in the same round (higher is better)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
