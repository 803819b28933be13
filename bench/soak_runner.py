"""The evflow process of the soak test (``bench/soak.py``): ``python bench/soak_runner.py FLOW.json``.

It runs a flow exactly as ``evflow run`` does (the same ``run_flow`` under the same ``run_trio``, so
SIGTERM stops it in phases and the engine logs every node's counters as ``stats <node>: k=v ...``
on stderr), with two node types of the soak's own added to the installed ones:

* ``soak-stall``: a consumer that never finishes its first message, so that everything behind it
  backs up into the ``mqtt in`` subscription's bounded backlog;
* ``soak-tag``: rewrites ``msg.topic`` to ``<prefix>/<last level of msg.topic>``, so that a
  request's outcome is published on a topic naming the request it answers.

Before the flow is loaded it prints ``IMPORT_FLOOR_RSS_KB <n>`` on stdout: the resident size once
everything the flow will run is imported (the runtime and the modules of every node type the flow
file names), i.e. the code, before any data. The soak measures memory growth above this floor.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import attrs
import trio

from evflow.runtime.cli import build_parser
from evflow.runtime.commands._running import run_trio
from evflow.runtime.commands.run import run_flow
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.logsetup import configure_logging
from evflow.runtime.nodeapi import Message, Node
from evflow.runtime.output import flush_all
from evflow.runtime.registry import Registry


@attrs.frozen(kw_only=True)
class StallConfig:
    pass


class Stall(Node[StallConfig]):
    """Takes one message and never finishes it: a consumer that has hung."""

    type = "soak-stall"
    Config = StallConfig

    @classmethod
    def outputs(cls, config: StallConfig) -> int:
        return 0

    async def receive(self, msg: Message) -> None:
        await trio.sleep_forever()


@attrs.frozen(kw_only=True)
class TagConfig:
    # the new topic is this prefix, "/", and the last level of the incoming msg.topic
    prefix: str


class Tag(Node[TagConfig]):
    """``msg.topic`` becomes ``<prefix>/<last level of msg.topic>``; the payload is left as it is."""

    type = "soak-tag"
    Config = TagConfig
    inline = True  # only computes and sends

    async def receive(self, msg: Message) -> None:
        request_id = msg.topic.rsplit("/", 1)[-1]
        await self.send(msg.with_payload(msg.payload, topic=f"{self.config.prefix}/{request_id}"))


def vm_rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: soak_runner.py FLOW.json", file=sys.stderr)
        return 2
    flow_path = Path(argv[0])
    configure_logging("info", "text")  # the soak reads the stats lines
    registry = Registry.from_entry_points().with_types(Stall, Tag)
    # Import every node type the flow uses now (the registry would do it while planning), so that
    # the floor below holds all the code that will run and growth above it is data.
    for node_type in sorted({record["type"] for record in json.loads(flow_path.read_text())}):
        if node_type in registry:
            registry.load(node_type)
    print(f"IMPORT_FLOOR_RSS_KB {vm_rss_kb()}", flush=True)
    try:
        try:
            plan = load_plan([flow_path], registry=registry)
        except FlowInvalid as invalid:
            for problem in invalid.problems:
                print(problem, file=sys.stderr)
            return 1
        for warning in plan.warnings:
            logging.getLogger("evflow.run").warning("%s", warning)
        args = build_parser().parse_args(["run", str(flow_path)])
        return run_trio("run", run_flow, plan, args)
    finally:
        flush_all()  # the last log lines (the stats) go out before the process ends, as `evflow` does


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
