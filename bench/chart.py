"""Draw docs/benchmarks.png from one bench/results/*.json (run with the bench tools venv,
which has matplotlib: ``bench/.venvs/tools/bin/python bench/chart.py RESULT.json OUT.png``)."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PANELS = [
    ("Throughput (jobs/s, higher is better)", [("tput_1", "1 slot"), ("tput_4", "4 slots")], True),
    (
        "Scaling over worker processes (jobs/s)",
        [("scale_1", "1 proc"), ("scale_2", "2 procs"), ("scale_4", "4 procs")],
        True,
    ),
    (
        "Dispatch latency push→start (ms, lower is better)",
        [("lat_p50", "p50"), ("lat_p99", "p99")],
        False,
    ),
    ("Slot idle gap (ms, lower is better)", [("gap_p50", "p50"), ("gap_p99", "p99")], False),
    ("Enqueue (jobs/s)", [("enqueue_single", "single"), ("enqueue_bulk", "bulk")], True),
]
TARGETS = {
    "tput_1": 5000,
    "tput_4": 8000,
    "lat_p50": 0.5,
    "lat_p99": 2.0,
    "gap_p50": 0.2,
    "gap_p99": 1.0,
}


def main(src: str, dst: str) -> None:
    with open(src) as fh:
        doc = json.load(fh)
    summary = doc["summary"]
    systems = doc["config"]["systems"]
    fig, grid = plt.subplots(2, 3, figsize=(15, 9))
    axes = list(grid.flat)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, series, _higher) in zip(axes, PANELS, strict=False):
        width = 0.8 / len(series)
        for k, (key, label) in enumerate(series):
            row = summary.get(key, {})
            xs, ys = [], []
            for i, s in enumerate(systems):
                v = row.get(s)
                if v:
                    xs.append(i + (k - (len(series) - 1) / 2) * width)
                    ys.append(v)
            ax.bar(xs, ys, width, label=label, color=colors[k])
            if key in TARGETS:
                ax.axhline(TARGETS[key], color=colors[k], linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels(systems, rotation=30, ha="right")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    ax = axes[len(PANELS)]
    for k, (key, label) in enumerate(
        [("tput_1_worker_cpu_us_per_job", "worker"), ("tput_1_server_cpu_us_per_job", "server")]
    ):
        row = summary.get(key, {})
        xs = [i + (k - 0.5) * 0.4 for i, s in enumerate(systems) if row.get(s)]
        ys = [row[s] for s in systems if row.get(s)]
        ax.bar(xs, ys, 0.4, label=label, color=colors[k])
    ax.set_yscale("log")
    ax.set_xticks(range(len(systems)))
    ax.set_xticklabels(systems, rotation=30, ha="right")
    ax.set_title("CPU per job, throughput at 1 slot (µs, lower is better)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    m = doc["machine"]
    fig.suptitle(
        f"fifoflow and peers on {m['cores']} cores ({m['cpu_model']}), {m['server']}; "
        "dashed: fifoflow targets",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
