"""Running flows inside a test: write the flow, run the engine, collect what nodes emit.

``collect`` is a test node type: every message it receives goes into ``kit.collected[node_id]``, a
trio channel the test reads with a deadline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from evflow.runtime.engine import FlowEngine
from evflow.runtime.flows import load_plan
from evflow.runtime.message import Message
from evflow.runtime.nodeapi import Node
from evflow.runtime.registry import Registry


@attrs.frozen
class CollectConfig:
    pass


class Collect(Node[CollectConfig]):
    """Test sink: hands each message to the test."""

    type = "collect"
    Config = CollectConfig

    async def receive(self, msg: Message) -> None:
        await _SINKS[id(self.context)].send(msg)


# The running collect nodes' channels, by their context object.
_SINKS: dict[int, trio.MemorySendChannel[Message]] = {}


def registry_with(*extra: type) -> Registry:
    builtins = Registry.from_entry_points()
    sources = dict(builtins.sources)
    extra_registry = Registry.of(Collect, *extra)  # type: ignore[arg-type]
    sources.update(extra_registry.sources)
    registry = Registry(sources)
    registry._loaded.update(extra_registry._loaded)
    return registry


@attrs.define
class FlowKit:
    engine: FlowEngine
    collected: dict[str, trio.MemoryReceiveChannel[Message]]

    async def next(self, node_id: str, timeout: float = 10) -> Message:
        with trio.fail_after(timeout):
            return await self.collected[node_id].receive()

    def nothing_more(self, node_id: str) -> bool:
        try:
            self.collected[node_id].receive_nowait()
        except trio.WouldBlock:
            return True
        return False


def write_flow(directory: Path, nodes: Sequence[Mapping[str, Any]], name: str = "flow.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(list(nodes), indent=1))
    return path


@asynccontextmanager
async def running_flow(
    directory: Path,
    nodes: Sequence[Mapping[str, Any]],
    *,
    env: Mapping[str, str] | None = None,
    extra_types: Sequence[type] = (),
    **engine_options: Any,
) -> AsyncIterator[FlowKit]:
    """Run ``nodes`` as a flow until the block ends, then stop it through its shutdown phases."""
    plan = load_plan([write_flow(directory, nodes)], registry=registry_with(*extra_types), env=env or {})
    engine = FlowEngine(plan, **engine_options)
    sinks: dict[str, trio.MemorySendChannel[Message]] = {}
    collected: dict[str, trio.MemoryReceiveChannel[Message]] = {}
    for node in plan.nodes:
        if node.type == "collect":
            sinks[node.id], collected[node.id] = trio.open_memory_channel[Message](10_000)
    for node_id, sink in sinks.items():
        _SINKS[id(engine.host(node_id))] = sink
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            try:
                yield FlowKit(engine, collected)
            finally:
                engine.request_stop()
    finally:
        for node_id in sinks:
            _SINKS.pop(id(engine.host(node_id)), None)
