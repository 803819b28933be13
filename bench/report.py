"""Medians, ratios and the issue's targets, as a text table (stdout) or Markdown (docs/benchmarks.md).

Works on the raw results of run.py: ``{"throughput": {"evflow|forward|0": [sample, ...]}, ...}``.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

LABELS = {"evflow": "evflow", "paho": "paho floor", "node-red": "Node-RED"}
FLOW_LABELS = {"forward": "mqtt in", "forward-heartbeat": "heartbeat"}
LEVELS = (16, 64, 256)
NAN = float("nan")


def _median(samples: list[dict[str, Any]], key: str) -> float:
    values = [s[key] for s in samples if key in s]
    return statistics.median(values) if values else NAN


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """One figure per cell: the median over the rounds."""
    summary: dict[str, Any] = {"throughput": [], "systems": {}, "requests": {}}
    for key, samples in results.get("throughput", {}).items():
        system, kind, qos = key.split("|")
        summary["throughput"].append({
            "system": system, "flow": kind, "qos": int(qos), "rounds": len(samples),
            **{figure: _median(samples, figure) for figure in
               ("msg_per_s", "cpu_us_per_msg", "idle_rss_mb", "peak_rss_mb", "start_s", "lost")},
        })
    summary["throughput"].sort(key=lambda row: (row["flow"] != "forward", row["flow"], row["qos"],
                                                list(LABELS).index(row["system"])))
    systems = sorted({row["system"] for row in summary["throughput"]}
                     | set(results.get("overload", {})) | set(results.get("idle", {}))
                     | set(results.get("requests", {})), key=list(LABELS).index)
    for system in systems:
        rows = [row for row in summary["throughput"] if row["system"] == system]
        forward = results.get("throughput", {})
        starts = [s["start_s"] for key, samples in forward.items() if key.startswith(f"{system}|forward|")
                  for s in samples]
        overloaded = results.get("overload", {}).get(system, [])
        summary["systems"][system] = {
            # The highest of the system's flows: the targets hold for every flow. Without throughput
            # legs, the idle figure of the overload legs.
            "idle_rss_mb": max((row["idle_rss_mb"] for row in rows), default=_median(overloaded, "idle_rss_mb")),
            "peak_rss_mb": max((row["peak_rss_mb"] for row in rows), default=NAN),
            "start_s": statistics.median(starts) if starts else NAN,
            "overload_peak_mb": _median(overloaded, "peak_rss_mb"),
            "overload_growth_mb": _median(overloaded, "growth_mb"),
            "overload_broker_mb": _median(overloaded, "broker_peak_rss_mb"),
            "idle_cpu_percent": _median(results.get("idle", {}).get(system, []), "cpu_percent"),
        }
    for system, samples in results.get("requests", {}).items():
        summary["requests"][system] = {
            "p50_ms": _median(samples, "p50_ms"), "p99_ms": _median(samples, "p99_ms"),
            **{f"rps_{level}": _median(samples, f"rps_{level}") for level in LEVELS},
        }
    imports = results.get("imports", {})
    summary["import_floor_mb"] = statistics.median(imports["floor_rss_mb"]) if imports.get("floor_rss_mb") else NAN
    timed = imports.get("evflow", [])
    summary["import_ms"] = {key: _median(timed, key) for key in ("interpreter_ms", "cli_ms", "run_ms")}
    summary["import_heaviest_ms"] = timed[-1]["run_heaviest_ms"] if timed else []
    return summary


def _row(summary: dict[str, Any], system: str, flow: str, qos: int) -> dict[str, Any] | None:
    for row in summary["throughput"]:
        if (row["system"], row["flow"], row["qos"]) == (system, flow, qos):
            return row
    return None


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else NAN


def ratios(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """evflow against the floor and Node-RED, per flow and QoS (both compared with their `mqtt in` row)."""
    found = []
    for row in summary["throughput"]:
        if row["system"] != "evflow":
            continue
        floor = _row(summary, "paho", "forward", row["qos"]) or {}
        red = _row(summary, "node-red", "forward", row["qos"]) or {}
        found.append({
            "flow": row["flow"], "qos": row["qos"],
            "throughput_vs_floor": _ratio(row["msg_per_s"], floor.get("msg_per_s", NAN)),
            "throughput_vs_node_red": _ratio(row["msg_per_s"], red.get("msg_per_s", NAN)),
            "cpu_vs_floor": _ratio(row["cpu_us_per_msg"], floor.get("cpu_us_per_msg", NAN)),
            "cpu_vs_node_red": _ratio(row["cpu_us_per_msg"], red.get("cpu_us_per_msg", NAN)),
        })
    return found


def targets(summary: dict[str, Any]) -> list[tuple[bool | None, str]]:
    """The issue's targets: (met, what); met is None where a figure is missing."""
    checks: list[tuple[bool | None, str]] = []

    def check(value: float, limit: float, at_most: bool, text: str) -> None:
        if math.isnan(value) or math.isnan(limit):
            checks.append((None, f"{text}: not measured"))
        else:
            checks.append((value <= limit if at_most else value >= limit, text))

    for r in ratios(summary):
        where = f"{FLOW_LABELS[r['flow']]} QoS {r['qos']}"
        check(r["throughput_vs_floor"], 0.8, False, f"throughput >= 0.8x floor, {where}: {r['throughput_vs_floor']:.2f}x")
        check(r["cpu_vs_floor"], 1.25, True, f"CPU/msg <= 1.25x floor, {where}: {r['cpu_vs_floor']:.2f}x")
    ev = summary["systems"].get("evflow")
    floor_mb = summary["import_floor_mb"]
    if ev is not None:
        check(ev["idle_rss_mb"], floor_mb + 6, True,
              f"idle RSS <= import floor + 6 MB: {ev['idle_rss_mb']:.1f} MB vs {floor_mb + 6:.1f} MB")
        check(ev["peak_rss_mb"], floor_mb + 15, True,
              f"peak RSS <= import floor + 15 MB: {ev['peak_rss_mb']:.1f} MB vs {floor_mb + 15:.1f} MB")
        check(ev["overload_growth_mb"], 1.0, True,
              f"flat under overload (growth <= 1 MB over the last 2/3): {ev['overload_growth_mb']:+.1f} MB")
        check(ev["idle_cpu_percent"], 0.1, True, f"idle CPU <= 0.1% of a core: {ev['idle_cpu_percent']:.3f}%")
        check(ev["start_s"], 0.3, True, f"start to first forwarded message <= 0.3 s: {ev['start_s']:.3f} s")
    req, floor_req = summary["requests"].get("evflow"), summary["requests"].get("paho")
    if req is not None and floor_req is not None:
        p50 = _ratio(req["p50_ms"], floor_req["p50_ms"])
        rps = _ratio(req["rps_64"], floor_req["rps_64"])
        check(p50, 1.3, True, f"request p50 <= 1.3x floor: {p50:.2f}x ({req['p50_ms']:.2f} vs {floor_req['p50_ms']:.2f} ms)")
        check(rps, 0.8, False, f"req/s at 64 in flight >= 0.8x floor: {rps:.2f}x "
                               f"({req['rps_64']:.0f} vs {floor_req['rps_64']:.0f})")
    return checks


# ---- rendering -------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 1, thousands: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.0f}" if thousands else f"{value:.{digits}f}"


def _other_ratios(summary: dict[str, Any]) -> list[list[str]]:
    systems, requests = summary["systems"], summary["requests"]
    rows = []
    for label, table, key in (("idle RSS", systems, "idle_rss_mb"), ("peak RSS under load", systems, "peak_rss_mb"),
                              ("peak RSS under overload", systems, "overload_peak_mb"),
                              ("idle CPU", systems, "idle_cpu_percent"), ("start to first message", systems, "start_s"),
                              ("request p50", requests, "p50_ms"), ("req/s at 64 in flight", requests, "rps_64")):
        mine = table.get("evflow", {}).get(key, NAN)
        if math.isnan(mine):
            continue
        rows.append([label, *(f"{_fmt(_ratio(mine, table.get(other, {}).get(key, NAN)), 2)}x"
                              for other in ("paho", "node-red"))])
    return rows


def tables(summary: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of every table, for either rendering."""
    out = []
    rows = [[FLOW_LABELS[r["flow"]], str(r["qos"]), LABELS[r["system"]], _fmt(r["msg_per_s"], thousands=True),
             _fmt(r["cpu_us_per_msg"]), _fmt(r["idle_rss_mb"]), _fmt(r["peak_rss_mb"]), _fmt(r["start_s"], 2),
             _fmt(r["lost"], 0)]
            for r in summary["throughput"]]
    out.append(("Forwarding: throughput, CPU per message, memory",
                ["flow", "QoS", "system", "msg/s", "CPU µs/msg", "idle RSS MB", "peak RSS MB", "start s", "lost"], rows))
    rows = [[FLOW_LABELS[r["flow"]], str(r["qos"]), f"{_fmt(r['throughput_vs_floor'], 2)}x",
             f"{_fmt(r['throughput_vs_node_red'], 2)}x", f"{_fmt(r['cpu_vs_floor'], 2)}x", f"{_fmt(r['cpu_vs_node_red'], 2)}x"]
            for r in ratios(summary)]
    if rows:
        out.append(("evflow against the floor and Node-RED",
                    ["flow", "QoS", "msg/s vs floor", "msg/s vs Node-RED", "CPU vs floor", "CPU vs Node-RED"], rows))
    others = _other_ratios(summary)
    if others:
        out.append(("evflow against the floor and Node-RED: memory, start, requests",
                    ["figure", "evflow / floor", "evflow / Node-RED"], others))
    rows = [[LABELS[name], _fmt(s["idle_rss_mb"]), _fmt(s["peak_rss_mb"]), _fmt(s["overload_peak_mb"]),
             _fmt(s["overload_growth_mb"]), _fmt(s["overload_broker_mb"], 0), _fmt(s["idle_cpu_percent"], 3),
             _fmt(s["start_s"], 2)]
            for name, s in summary["systems"].items()]
    out.append((f"Memory, idle CPU and start-up (import floor: {_fmt(summary['import_floor_mb'])} MB)",
                ["system", "idle RSS MB", "peak RSS MB", "overload peak MB", "overload growth MB",
                 "broker peak MB", "idle CPU %", "start s"], rows))
    rows = [[LABELS[name], _fmt(r["p50_ms"], 2), _fmt(r["p99_ms"], 2),
             *(_fmt(r[f"rps_{level}"], thousands=True) for level in LEVELS)]
            for name, r in sorted(summary["requests"].items(), key=lambda item: list(LABELS).index(item[0]))]
    if rows:
        out.append(("Request round trip (mosquitto's default config)",
                    ["system", "p50 ms", "p99 ms", *(f"req/s @{level}" for level in LEVELS)], rows))
    ms = summary["import_ms"]
    if not math.isnan(ms["cli_ms"]):
        heaviest = [[name, _fmt(value)] for name, value in summary["import_heaviest_ms"]]
        out.append((f"evflow imports: `import evflow.runtime.cli` {_fmt(ms['cli_ms'])} ms, `evflow run` up to the "
                    f"first message {_fmt(ms['run_ms'])} ms (beyond the interpreter's own {_fmt(ms['interpreter_ms'])} ms); "
                    "heaviest top-level imports of the run", ["module", "cumulative ms"], heaviest))
    return out


def render_text(summary: dict[str, Any], heading: str) -> str:
    lines = [heading, ""]
    for title, header, rows in tables(summary):
        widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
        lines.append(title)
        for cells in [header, *rows]:
            lines.append("  " + "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in
                                          enumerate(zip(cells, widths))))
        lines.append("")
    lines.append("Targets (issue 10)")
    for met, text in targets(summary):
        lines.append(f"  [{'met ' if met else 'MISS' if met is False else ' -- '}] {text}")
    return "\n".join(lines)


def render_markdown_tables(summary: dict[str, Any]) -> str:
    parts = []
    for title, header, rows in tables(summary):
        parts.append(f"### {title}\n")
        parts.append("| " + " | ".join(header) + " |")
        text_columns = [i for i, name in enumerate(header) if i == 0 or name in ("system", "module")]
        parts.append("|" + "|".join("---" if i in text_columns else "---:" for i in range(len(header))) + "|")
        parts.extend("| " + " | ".join(row) + " |" for row in rows)
        parts.append("")
    parts.append("### Targets (issue 10)\n")
    for met, text in targets(summary):
        parts.append(f"- {'met' if met else '**missed**' if met is False else 'not measured'}: {text}")
    return "\n".join(parts) + "\n"
