"""Draw W2 (drain throughput) and W3 (latency) across libraries from a results JSON.

python report/chart.py results/latest.json results/chart.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OURS = "aiojobs-redis"


def bars(ax, rows, libs, variants, title, ylabel, log=False):
    width = 0.8 / max(1, len(variants))
    for v, variant in enumerate(variants):
        row = rows.get(variant, {})
        xs, ys, lo, hi = [], [], [], []
        for i, lib in enumerate(libs):
            entry = row.get(lib, {})
            if "median" not in entry:
                continue
            xs.append(i + (v - (len(variants) - 1) / 2) * width)
            ys.append(entry["median"])
            lo.append(entry["median"] - entry["min"])
            hi.append(entry["max"] - entry["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=variant)
    ax.set_xticks(range(len(libs)))
    ax.set_xticklabels(libs, rotation=20)
    for label in ax.get_xticklabels():
        if label.get_text() == OURS:
            label.set_fontweight("bold")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def main(src: str, dst: str) -> None:
    with open(src) as f:
        report = json.load(f)
    work = report["workloads"]
    libs = [name for name in report["libraries"] if "error" not in report["libraries"][name]]
    drains = {v: row for v, row in work.get("W2", {}).items() if "from process start" not in v}
    if "1 worker" in work.get("W2-noop", {}):
        drains["1 worker, empty handler (W2-noop)"] = work["W2-noop"]["1 worker"]
    panels = [key for key, shown in (("W2", drains), ("W3", work.get("W3"))) if shown]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.5 * len(panels)), squeeze=False)
    meta = report["meta"]
    for ax, key in zip(axes[:, 0], panels, strict=True):
        if key == "W2":
            bars(
                ax,
                drains,
                libs,
                list(drains),
                f"W2 drain: {meta['n']:,} queued jobs, the handler one INCR or empty (higher is better)",
                "jobs/s",
            )
        else:
            bars(
                ax,
                work["W3"],
                libs,
                ["p50", "p99", "max"],
                "W3 latency: dispatch to handler start, idle worker, 500 jobs/s (lower is better)",
                "ms (log scale)",
                log=True,
            )
    m = meta["machine"]
    fig.suptitle(
        f"{m['nproc']} cores, Redis {m['redis_version']}, {meta['started']}; median of "
        f"{meta['repeats']}, bars show min-max",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
