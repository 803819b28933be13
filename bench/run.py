"""Benchmark evflow against Node-RED 4 and the bare paho floor, side by side, and print the table.

    python bench/run.py                      # everything (about 20 minutes), N = 50,000
    python bench/run.py --quick              # a smaller, shorter pass over everything
    python bench/run.py --systems evflow,paho --parts throughput --n 5000 --rounds 1
    python bench/run.py --docs               # also write docs/benchmarks.md and docs/benchmarks.png

Run it with the Python of evflow's venv (.venv/bin/python): evflow and the paho scripts run on it.
Needs mosquitto, mosquitto_pub and mosquitto_sub; Node-RED needs node and npm, and is installed from
npm into ~/.cache/evflow-bench/node-red on first use. Each measurement (a "leg") gets its own
mosquitto and a fresh process of the system; the systems take turns within each round, and the
tables show the median over the rounds. The raw figures go to a JSON file (--json).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench's modules, when run from anywhere

import legs  # noqa: E402
import report  # noqa: E402
from common import CACHE_DIR, REPO_DIR  # noqa: E402
from systems import SYSTEMS, NodeRed  # noqa: E402

from evflow.runtime.mosquitto import find_mosquitto  # noqa: E402

PARTS = ("imports", "throughput", "request", "idle", "overload")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Parts: " + ", ".join(PARTS))
    parser.add_argument("--quick", action="store_true",
                        help="N=5000, 1 round, 5 s idle and overload, fewer requests (a look, not a result)")
    parser.add_argument("--n", type=int, help="messages per throughput leg (default 50000)")
    parser.add_argument("--rounds", type=int, help="rounds; the tables show medians (default 3)")
    parser.add_argument("--systems", default="evflow,paho,node-red", help="default: evflow,paho,node-red")
    parser.add_argument("--parts", default=",".join(PARTS), help="default: all of them")
    parser.add_argument("--qos", default="0,1", help="QoS levels of the throughput legs (default 0,1)")
    parser.add_argument("--duration", type=float, help="seconds of the idle and overload legs (default 30)")
    parser.add_argument("--latency-count", type=int, help="requests timed one at a time (default 300)")
    parser.add_argument("--request-count", type=int, help="requests per in-flight level (default 3000)")
    parser.add_argument("--json", type=Path, help=f"raw results file (default {CACHE_DIR}/results/latest.json)")
    parser.add_argument("--note", default="", help="a line on what was measured, kept with the results and docs")
    parser.add_argument("--render", type=Path, metavar="RESULTS.json",
                        help="measure nothing: print the tables (and with --docs write the page) from a results file")
    parser.add_argument("--docs", action="store_true",
                        help="write docs/benchmarks.md and its plot (matplotlib in a venv of the bench cache)")
    args = parser.parse_args(argv)
    defaults = ({"n": 5000, "rounds": 1, "duration": 5.0, "latency_count": 50, "request_count": 500} if args.quick
                else {"n": 50_000, "rounds": 3, "duration": 30.0, "latency_count": 300, "request_count": 3000})
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.systems = [name for name in args.systems.split(",") if name]
    args.parts = [name for name in args.parts.split(",") if name]
    args.qos = [int(q) for q in args.qos.split(",") if q]
    unknown = [s for s in args.systems if s not in SYSTEMS] + [p for p in args.parts if p not in PARTS]
    if unknown or not set(args.qos) <= {0, 1}:
        parser.error(f"unknown system, part or QoS: {', '.join(unknown) or args.qos}")
    return args


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    def first_line(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr).strip() else "?"

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    memory_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    versions = {name: importlib.metadata.version(name) for name in ("evflow", "trio", "paho-mqtt", "attrs", "cattrs")}
    mosquitto = next((path for path in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(path).exists()),
                     "mosquitto")
    return {
        "evflow_source": evflow_source(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": versions,
        "mosquitto": first_line([mosquitto, "-h"]),
        "node": first_line(["node", "--version"]),
        "node_red": NodeRed().version,
        "commit": first_line(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"]),
        "load_average": os.getloadavg(),
    }


def evflow_source() -> str:
    """Which evflow ran: this work tree (at which commit, with uncommitted changes or not), or an
    installed copy. The runtime may be edited while a run goes on; the page says what was measured."""
    import evflow.runtime

    package = Path(evflow.runtime.__file__).resolve().parent
    if REPO_DIR not in package.parents:
        return f"evflow {importlib.metadata.version('evflow')} installed at {package.parent}"
    git = ["git", "-C", str(REPO_DIR)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "--", "runtime", "nodes"],
                             capture_output=True, text=True).stdout.strip()
    return f"this work tree at commit {commit}" + (" with uncommitted changes to runtime/ or nodes/" if changed else "")


def rotated(items: list[Any], by: int) -> list[Any]:
    """The systems take turns going first, so that none is always measured right after another."""
    by %= len(items)
    return items[by:] + items[:by]


def plan_round(args: argparse.Namespace, systems: list[Any], number: int) -> list[tuple[str, Any, str, int]]:
    order = rotated(systems, number)
    planned: list[tuple[str, Any, str, int]] = []
    if "imports" in args.parts:
        planned.append(("imports", None, "", 0))
    if "throughput" in args.parts:
        for kind in ("forward", "forward-heartbeat"):
            for qos in args.qos:
                planned += [("throughput", s, kind, qos) for s in order if s.supports(kind)]
    if "request" in args.parts:
        planned += [("request", s, "request", 0) for s in order if s.supports("request")]
    if "idle" in args.parts:
        planned += [("idle", s, "idle", 0) for s in order if s.supports("idle")]
    if "overload" in args.parts:
        planned += [("overload", s, "forward", 0) for s in order if s.supports("forward")]
    return planned


def run_leg(args: argparse.Namespace, part: str, system: Any, kind: str, qos: int, scratch: Path,
            results: dict[str, Any]) -> str:
    """Run one leg, file its figures, return a line of progress."""
    if part == "imports":
        floor = results["imports"].setdefault("floor_rss_mb", [])
        floor.append(legs.import_floor_rss())
        timed = legs.import_times(scratch)
        results["imports"].setdefault("evflow", []).append(timed)
        return f"import floor {floor[-1]:.1f} MB, evflow run imports {timed['run_ms']:.0f} ms"
    if part == "throughput":
        figures = legs.throughput(system, kind, qos, args.n, scratch)
        results["throughput"].setdefault(f"{system.name}|{kind}|{qos}", []).append(figures)
        lost = f", {figures['lost']} lost" if figures["lost"] else ""
        return (f"{figures['msg_per_s']:,.0f} msg/s, {figures['cpu_us_per_msg']:.1f} µs/msg, "
                f"peak {figures['peak_rss_mb']:.1f} MB{lost}")
    if part == "request":
        figures = legs.requests(system, args.latency_count, list(report.LEVELS), args.request_count)
        results["requests"].setdefault(system.name, []).append(figures)
        return f"p50 {figures['p50_ms']:.2f} ms, {figures['rps_64']:,.0f} req/s at 64 in flight"
    if part == "idle":
        figures = legs.idle(system, args.duration)
        results["idle"].setdefault(system.name, []).append(figures)
        return f"{figures['cpu_percent']:.3f}% CPU"
    figures = legs.overload(system, args.duration)
    results["overload"].setdefault(system.name, []).append(figures)
    return f"peak {figures['peak_rss_mb']:.1f} MB, growth {figures['growth_mb']:+.1f} MB"


def check_tools() -> None:
    """Say at once what is missing, rather than failing every leg."""
    missing = [tool for tool in ("mosquitto_pub", "mosquitto_sub", "stdbuf", "yes") if shutil.which(tool) is None]
    if find_mosquitto() is None:
        missing.insert(0, "mosquitto")
    if missing:
        sys.exit(f"bench: missing {', '.join(missing)} (Debian/Ubuntu: apt-get install mosquitto mosquitto-clients)")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every leg of every round; the raw figures, with the failures."""
    check_tools()
    systems = [SYSTEMS[name]() for name in args.systems]
    for system in systems:
        if isinstance(system, NodeRed):
            system.install()
    meta = machine()
    meta["note"] = args.note
    meta["settings"] = {key: getattr(args, key) for key in
                        ("n", "rounds", "systems", "parts", "qos", "duration", "latency_count", "request_count")}
    results: dict[str, Any] = {"meta": meta, "throughput": {}, "requests": {}, "idle": {}, "overload": {},
                               "imports": {}, "failures": []}

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="evflow-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        kinds = {kind for _part, _s, kind, _q in plan_round(args, systems, 0) if kind}
        progress("warming up (each system started once per flow, unmeasured: .pyc files written)")
        for system in systems:
            for kind in sorted(kinds):
                if system.supports(kind):
                    legs.warm_up(system, kind)
        for number in range(args.rounds):
            for part, system, kind, qos in plan_round(args, systems, number):
                what = f"[round {number + 1}/{args.rounds}] {part}"
                if system is not None:
                    what += f" {system.label}" + (f" ({report.FLOW_LABELS[kind]}, QoS {qos})" if part == "throughput" else "")
                began = time.monotonic()
                try:
                    outcome = run_leg(args, part, system, kind, qos, scratch, results)
                except Exception as exc:  # one broken leg must not lose the others' figures
                    outcome = f"FAILED: {exc}"
                    results["failures"].append(f"{what}: {exc}\n{traceback.format_exc()}")
                progress(f"{what}: {outcome} [{time.monotonic() - began:.1f} s]")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        json_path = args.render
        results = json.loads(json_path.read_text())
    else:
        results = measure(args)
        json_path = args.json or CACHE_DIR / "results" / "latest.json"
    summary = report.summarize(results)
    results["summary"] = summary
    results["summary"]["ratios"] = report.ratios(summary)
    results["summary"]["targets"] = report.targets(summary)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1, default=str))

    meta, settings = results["meta"], results["meta"]["settings"]
    heading = (f"evflow bench: N={settings['n']:,} messages per throughput leg, {settings['rounds']} round(s), "
               f"medians; {meta['nproc']} x {meta['cpu']}, {meta['memory_gb']} GB, Python {meta['python']}, "
               f"{meta['mosquitto']}, Node-RED {meta['node_red']} on node {meta['node']}")
    print(report.render_text(summary, heading))
    print(f"\nraw results: {json_path}")
    if results["failures"]:
        print(f"\n{len(results['failures'])} leg(s) failed:", file=sys.stderr)
        for failure in results["failures"]:
            print(failure, file=sys.stderr)
    if args.docs:
        import docs

        written = docs.write(results, json_path)
        print("wrote " + ", ".join(str(path) for path in written))
    return 1 if results["failures"] and not args.render else 0


if __name__ == "__main__":
    sys.exit(main())
