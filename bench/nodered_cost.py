"""What Node-RED's nodes cost in evflow, side by side in one run, as ratios.

    .venv/bin/python bench/nodered_cost.py [--n 20000] [--rounds 3] [--no-node-red]

Legs (QoS 0, N heartbeats through a private mosquitto, as bench/run.py's throughput leg):

* baseline: evflow's ``mqtt in → filter → mqtt out`` (bench/flows/forward-mqtt-in.json);
* change+switch: ``mqtt in → change → switch → mqtt out`` in Node-RED's export shape
  (bench/nodered/forward-change-switch.json); target: at most 1.3x the baseline's CPU per message;
* function: ``mqtt in → function → mqtt out`` (bench/nodered/forward-function.json), the function
  node's cost per message over the baseline, and the same file in Node-RED 4 (installed with npm
  into the bench's cache) for comparison.

Each figure is the median over rounds; the report prints CPU µs per message and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench's modules, when run from anywhere

from common import BENCH_DIR  # noqa: E402
from legs import LegFailed, throughput  # noqa: E402
from systems import Evflow, NodeRed, Running, _set_qos, _spawn, user_environment  # noqa: E402


class NodeRedShapedFlow:
    """evflow or Node-RED on one of bench/nodered/'s files, the broker's port filled in."""

    def __init__(self, system: Evflow | NodeRed, file: str) -> None:
        self.system = system
        self.file = file
        self.name = f"{system.name}-{Path(file).stem}"
        self.label = f"{system.label} {Path(file).stem}"

    def start(self, kind: str, qos: int, port: int, workdir: Path) -> Running:
        if isinstance(self.system, NodeRed):
            self.system.flows = {"forward": self.file}  # this leg's own instance: see main()
            return self.system.start("forward", qos, port, workdir)
        nodes = json.loads((BENCH_DIR / "nodered" / self.file).read_text())
        _set_qos(nodes, qos, as_text=True)
        for node in nodes:
            if node.get("type") == "mqtt-broker":
                node["port"] = str(port)
        flows = workdir / "flows.json"
        flows.write_text(json.dumps(nodes, indent=1))
        return _spawn([*self.system.command, "run", str(flows)], workdir, user_environment())


def measure(system: Any, n: int, rounds: int) -> float:
    cpu = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="evflow-nodered-cost-") as scratch:
            result = throughput(system, "forward", 0, n, Path(scratch))
        if result["lost"]:
            raise LegFailed(f"{system.label}: {result['lost']} of {n} messages lost")
        cpu.append(result["cpu_us_per_msg"])
    return statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-node-red", action="store_true", help="leave Node-RED out (no npm needed)")
    args = parser.parse_args()
    evflow = Evflow()
    legs: dict[str, Any] = {
        "evflow filter (baseline)": evflow,
        "evflow change+switch": NodeRedShapedFlow(evflow, "forward-change-switch.json"),
        "evflow function": NodeRedShapedFlow(evflow, "forward-function.json"),
    }
    if not args.no_node_red:
        NodeRed().install()
        legs["Node-RED change+switch"] = NodeRedShapedFlow(NodeRed(), "forward-change-switch.json")
        legs["Node-RED function"] = NodeRedShapedFlow(NodeRed(), "forward-function.json")
    figures = {name: measure(system, args.n, args.rounds) for name, system in legs.items()}
    baseline = figures["evflow filter (baseline)"]
    print(f"CPU per message, median of {args.rounds} rounds of {args.n} messages (QoS 0):")
    for name, cpu in figures.items():
        print(f"  {name:28s} {cpu:7.1f} µs   {cpu / baseline:5.2f}x the baseline")
    ratio = figures["evflow change+switch"] / baseline
    print(f"change+switch over filter: {ratio:.2f}x (target <= 1.3x): {'met' if ratio <= 1.3 else 'NOT met'}")
    print(f"function node: {figures['evflow function'] - baseline:+.1f} µs per message over the baseline")
    if "Node-RED function" in figures:
        print(f"function flow, evflow over Node-RED: {figures['evflow function'] / figures['Node-RED function']:.2f}x")
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
