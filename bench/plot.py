"""The plot of docs/benchmarks.md: throughput per QoS and RSS of the three systems.

Runs on matplotlib, which is no dependency of evflow: run.py --docs calls it with the Python of a
venv in the bench cache. It reads only the results JSON (the "summary" run.py wrote).

    python bench/plot.py RESULTS.json OUT.png
"""

from __future__ import annotations

import json
import math
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"evflow": "#2a7ab0", "evflow heartbeat": "#8cc0e0", "paho floor": "#7f7f7f", "Node-RED": "#b0413e"}
SYSTEM_LABELS = {"evflow": "evflow", "paho": "paho floor", "node-red": "Node-RED"}


def main(results_path: str, out_path: str) -> None:
    summary = json.load(open(results_path))["summary"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})

    # Throughput: one group per QoS, one bar per system (evflow twice: mqtt in, heartbeat node).
    series: dict[str, dict[int, float]] = {}
    lossy: set[tuple[str, int]] = set()
    for row in summary["throughput"]:
        name = SYSTEM_LABELS[row["system"]] + (" heartbeat" if row["flow"] == "forward-heartbeat" else "")
        series.setdefault(name, {})[row["qos"]] = row["msg_per_s"]
        if row["lost"] > 0:
            lossy.add((name, row["qos"]))
    qos_levels = sorted({q for values in series.values() for q in values})
    names = [n for n in COLOURS if n in series]
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [q + (i - (len(names) - 1) / 2) * width for q in range(len(qos_levels))]
        values = [series[name].get(q, math.nan) for q in qos_levels]
        bars = left.bar(xs, values, width, label=name, color=COLOURS[name])
        labels = [("" if math.isnan(v) else f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}")
                  + ("\nlost" if (name, q) in lossy else "") for q, v in zip(qos_levels, values)]
        left.bar_label(bars, labels=labels, fontsize=7)
    left.set_xticks(range(len(qos_levels)), [f"QoS {q}" for q in qos_levels])
    left.set_ylabel("forwarded messages per second")
    left.set_title("Throughput (median; higher is better)")
    if lossy:
        left.set_xlabel("lost: messages went missing on the way (see the table)", fontsize=8)
    left.set_ylim(top=left.get_ylim()[1] * 1.1)  # room for the labels
    left.legend(fontsize=8)

    # Memory: idle, peak under load, peak under overload; the import floor as a line.
    systems = list(summary["systems"])
    kinds = [("idle_rss_mb", "idle", ""), ("peak_rss_mb", "peak under load", "//"),
             ("overload_peak_mb", "peak under overload", "xx")]
    width = 0.8 / len(kinds)
    for i, (key, label, hatch) in enumerate(kinds):
        xs = [s + (i - 1) * width for s in range(len(systems))]
        values = [summary["systems"][name][key] for name in systems]
        bars = right.bar(xs, values, width, color=[COLOURS[SYSTEM_LABELS[n]] for n in systems], hatch=hatch,
                         edgecolor="white")
        right.bar(0, 0, 0, color="#cccccc", hatch=hatch, edgecolor="white", label=label)  # legend entry only
        right.bar_label(bars, labels=[f"{v:.0f}" if not math.isnan(v) else "" for v in values], fontsize=7)
    floor = summary.get("import_floor_mb")
    if floor is not None and not math.isnan(floor):
        right.axhline(floor, color="black", linestyle="--", linewidth=1, label=f"import floor {floor:.1f} MB")
    right.set_xticks(range(len(systems)), [SYSTEM_LABELS[n] for n in systems])
    right.set_ylabel("RSS (MB)")
    right.set_ylim(top=right.get_ylim()[1] * 1.1)
    right.set_title("Memory (lower is better)")
    right.legend(fontsize=8)

    figure.tight_layout()
    figure.savefig(out_path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
