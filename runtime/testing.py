"""Testing flows: run a flow file in-process, inject messages into nodes, await what nodes emit,
with a private broker and the EVerest simulator when the flow needs EVerest.

    async with everest_simulator(tmp_path) as everest:
        async with run_flow("flows/certificate-check.json", env=everest.env) as flow:
            await flow.inject("v2g-leaf", None)
            reply = await flow.expect("v2g-leaf", port=0)

The pytest plugin (``evflow.runtime.pytest_plugin``, registered for pytest) offers the same as the
fixtures ``evflow_everest`` and ``evflow_flow``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from .broker import BrokerConfig
from .engine import FlowEngine
from .flows import load_plan
from .host import Tap
from .message import Message, new_message
from .nodeapi import Node
from .registry import Registry

__all__ = ["EverestUnderTest", "FlowUnderTest", "Sink", "everest_simulator", "run_flow"]


@attrs.frozen
class SinkConfig:
    pass


class Sink(Node[SinkConfig]):
    """For tests: passes on what it receives (leave its port unwired), so that ``expect`` on it
    returns what reached it. :func:`run_flow` knows this type as ``test-sink``."""

    type = "test-sink"
    Config = SinkConfig

    async def receive(self, msg: Message) -> None:
        await self.send(msg)


@attrs.define
class FlowUnderTest:
    """A flow running in a test: inject into nodes, and expect what nodes send (every node is tapped
    from the start, so nothing it sends is missed)."""

    engine: FlowEngine
    _taps: dict[str, Tap] = attrs.field(factory=dict)
    _held: dict[str, list[tuple[int, Message]]] = attrs.field(factory=dict)

    async def inject(self, node_id: str, payload: Any = None, topic: str = "", **meta: Any) -> Message:
        """Send a new message into ``node_id``'s input; returns it (its ``msg_id`` identifies it)."""
        msg = new_message(payload, topic, **meta)
        await self.engine.inject(node_id, msg)
        return msg

    async def inject_message(self, node_id: str, msg: Message) -> Message:
        """Send ``msg`` (made with :func:`~evflow.runtime.message.new_message`, perhaps with other
        properties: ``msg.with_props({...})``) into ``node_id``'s input; returns it."""
        await self.engine.inject(node_id, msg)
        return msg

    async def expect(self, node_id: str, port: int = 0, timeout: float = 5.0) -> Message:
        """The next message ``node_id`` sends on ``port`` (messages on other ports are kept for later
        calls); ``trio.TooSlowError`` after ``timeout`` seconds."""
        held = self._held.setdefault(node_id, [])
        for index, (sent_port, msg) in enumerate(held):
            if sent_port == port:
                del held[index]
                return msg
        self._check_complete(node_id)
        with trio.fail_after(timeout):
            while True:
                sent_port, msg = await self._taps[node_id].receive()
                if sent_port == port:
                    return msg
                held.append((sent_port, msg))

    def _check_complete(self, node_id: str) -> None:
        missed = self._taps[node_id].missed
        if missed:
            raise AssertionError(
                f"{missed} message(s) {node_id!r} sent were not kept: read them as the flow runs "
                "(each node keeps at most 10,000 unread)"
            )

    def nothing_sent(self, node_id: str, port: int | None = None) -> bool:
        """Whether ``node_id`` has sent nothing (on ``port``, or on any port) that no ``expect`` took
        yet. Does not wait: let the flow settle first (``trio.testing.wait_all_tasks_blocked``)."""
        held = self._held.setdefault(node_id, [])
        while True:
            try:
                held.append(self._taps[node_id].receive_nowait())
            except trio.WouldBlock:
                break
        self._check_complete(node_id)
        return not any(port is None or sent_port == port for sent_port, _ in held)

    def stats(self) -> dict[str, dict[str, int]]:
        return self.engine.stats()


FlowSource = str | Path | Sequence[str | Path] | Sequence[Mapping[str, Any]]


@asynccontextmanager
async def run_flow(
    flow: FlowSource,
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    node_types: Sequence[type] = (),
    workdir: str | Path | None = None,
    skip_unsupported: bool = False,
    **engine_options: Any,
) -> AsyncIterator[FlowUnderTest]:
    """Run a flow until the block ends, then stop it through its phases.

    ``flow`` is a flow file, a list of them, or the flow itself as a list of node objects (written
    to ``flow.json`` in ``workdir``, or a temporary directory, and loaded like any file).
    ``node_types`` adds node classes of the test's own to the installed ones, and :class:`Sink`
    (``test-sink``) is always there; ``env`` is added to ``os.environ`` for ``${VAR}``;
    ``skip_unsupported`` leaves out nodes of types no installed package provides, as ``evflow run
    --skip-unsupported`` does.
    """
    with tempfile.TemporaryDirectory(prefix="evflow-flow-") as scratch:
        files = _flow_files(flow, Path(workdir) if workdir is not None else Path(scratch))
        if registry is None:
            registry = Registry.from_entry_points()
        registry = registry.with_types(Sink, *node_types)
        plan = load_plan(files, registry=registry, env={**os.environ, **(env or {})},
                         skip_unsupported=skip_unsupported)
        engine = FlowEngine(plan, **engine_options)
        under_test = FlowUnderTest(engine)
        for node in plan.nodes:
            if not node.is_config:
                under_test._taps[node.id] = engine.tap(node.id)
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)
            try:
                yield under_test
            finally:
                engine.request_stop()
                with trio.move_on_after(engine.stop_timeout + 1):
                    await engine.stopped.wait()
                nursery.cancel_scope.cancel()


def _flow_files(flow: FlowSource, directory: Path) -> list[str | Path]:
    if isinstance(flow, str | Path):
        return [flow]
    items = list(flow)
    if items and all(isinstance(item, Mapping) for item in items):
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "flow.json"
        path.write_text(json.dumps(items, indent=1))
        return [path]
    return items  # type: ignore[return-value]


@attrs.frozen
class EverestUnderTest:
    broker_url: str
    module_id: str
    certs: Path
    simulator: Any

    @property
    def env(self) -> dict[str, str]:
        """What the example flows read: ``EVFLOW_BROKER`` and ``EVEREST_MODULE_ID``."""
        return {"EVFLOW_BROKER": self.broker_url, "EVEREST_MODULE_ID": self.module_id}


@asynccontextmanager
async def everest_simulator(
    workdir: Path | None = None,
    *,
    module_id: str = "evse_security_api",
    pki: Mapping[str, Any] | None = None,
    **options: Any,
) -> AsyncIterator[EverestUnderTest]:
    """A private broker (mosquitto, else amqtt) and the EVerest simulator on a fresh test PKI
    (``pki``: options of ``init_pki``, e.g. ``{"expired_leaf": True}``)."""
    from .localbroker import start_local_broker
    from .simulator.pki import init_pki
    from .simulator.service import EvseSecuritySimulator, SimulatorOptions
    from .simulator.store import CertificateStore
    from .transport import MqttClient

    with tempfile.TemporaryDirectory(prefix="evflow-test-") as scratch:
        root = Path(workdir) if workdir is not None else Path(scratch)
        layout = init_pki(root / "certs", **(pki or {}))
        broker, _name = await trio.to_thread.run_sync(start_local_broker, root)
        try:
            mqtt = MqttClient(BrokerConfig.from_url(broker.url))
            async with trio.open_nursery() as nursery:
                await nursery.start(mqtt.run)
                simulator = EvseSecuritySimulator(
                    mqtt, CertificateStore(layout.root, key_password=layout.key_password),
                    SimulatorOptions(module_id=module_id, **options),
                )
                await nursery.start(simulator.run)
                try:
                    yield EverestUnderTest(broker.url, module_id, layout.root, simulator)
                finally:
                    await mqtt.aclose()
                    nursery.cancel_scope.cancel()
        finally:
            await trio.to_thread.run_sync(broker.stop)
