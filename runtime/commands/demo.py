"""``evflow demo``: everything on this machine, on embedded defaults.

A private broker (mosquitto, or amqtt where mosquitto is not on PATH), the EVerest evse_security
simulator serving a freshly made test PKI, and ``flows/demo.json`` run by the engine. A wire tap on
its own connection shows what crosses the broker: heartbeats, keepalives, each request and its answer
(with the leaf certificate's days to expiry). The flow's own log goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import trio

from ..broker import BrokerConfig
from ..codec import CodecError
from ..engine import FlowEngine
from ..flows import FlowInvalid, load_plan
from ..localbroker import LocalBrokerError, start_local_broker
from ..protocol.envelope import decode_path_reply
from ..simulator.pki import init_pki
from ..simulator.service import EvseSecuritySimulator, SimulatorOptions
from ..simulator.store import CertificateStore
from ..transport import MqttClient, MqttMessage, Overflow
from ._running import run_trio

MODULE_ID = "evse_security_api"


def demo_flow() -> Path:
    """flows/demo.json, installed as package data of ``evflow.flows``."""
    return Path(str(resources.files("evflow.flows").joinpath("demo.json")))


def days_until_expiry(certificate_file: str) -> int | None:
    from cryptography import x509

    try:
        data = Path(certificate_file).read_bytes()
        certificate = (
            x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_certificate(data)
        )
    except (OSError, ValueError):
        return None
    return (certificate.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).days


class WireTap:
    """Renders each message on the broker as one line; pairs replies with their requests."""

    def __init__(self, out: TextIO, module_id: str) -> None:
        self.out = out
        self.api_base = f"everest_api/1/evse_security_consumer/{module_id}/"
        self.started = trio.current_time()
        self._requests: dict[str, tuple[str, float]] = {}  # reply topic -> (operation, sent at)
        self._answered: set[str] = set()

    def show(self, mark: str, text: str) -> None:
        print(f"{trio.current_time() - self.started:7.2f}s  {mark} {text}", file=self.out, flush=True)

    def render(self, message: MqttMessage) -> None:
        topic, payload = message.topic, message.payload
        if topic.startswith(self.api_base):
            direction, _, name = topic[len(self.api_base):].partition("/")
            if direction == "e2m" and name == "heartbeat":
                self.show("♥", f"heartbeat {payload.decode(errors='replace')}")
            elif name == "communication_check":
                self.show("→", f"communication_check {payload.decode(errors='replace')}")
            else:
                self._request(name, payload)
        elif topic in self._requests:
            self._reply(topic, payload)

    def _request(self, operation: str, payload: bytes) -> None:
        try:
            envelope = json.loads(payload)
            reply_to, body = envelope["headers"]["replyTo"], envelope["payload"]
        except (ValueError, KeyError, TypeError):
            self.show("→", f"{operation} (undecodable request)")
            return
        self._requests[reply_to] = (operation, trio.current_time())
        if isinstance(body, dict):
            body = ", ".join(str(v) if k != "include_ocsp" else ("with OCSP" if v else "no OCSP") for k, v in body.items())
        self.show("→", f"{operation}({body})")
        if len(self._requests) > 1000:  # a tap forgets old requests rather than grow
            self._requests.pop(next(iter(self._requests)))

    def _reply(self, topic: str, payload: bytes) -> None:
        operation, sent_at = self._requests[topic]
        took = (trio.current_time() - sent_at) * 1000
        if topic in self._answered:
            self.show("←", f"{operation}: {payload.decode(errors='replace')} again (EVerest sends booleans twice)")
            return
        self._answered.add(topic)
        self.show("←", f"{operation}: {self._describe(operation, payload)}  ({took:.1f} ms)")

    @staticmethod
    def _describe(operation: str, payload: bytes) -> str:
        if operation == "get_verify_location":
            try:
                return decode_path_reply(payload) or "(nothing installed)"
            except CodecError as exc:
                return f"undecodable: {exc}"
        try:
            reply: Any = json.loads(payload)
        except ValueError:
            return f"undecodable: {payload[:60]!r}"
        if not isinstance(reply, dict):
            return json.dumps(reply)
        text = str(reply.get("status"))
        info = reply.get("info") or {}
        if info:
            text += f", chain of {info.get('certificate_count')}"
            days = days_until_expiry(info.get("certificate_single") or info.get("certificate") or "")
            if days is not None:
                text += f", leaf expires in {days} days"
            if info.get("ocsp"):
                text += f", OCSP data for {len(info['ocsp'])}"
            if "password" in info:
                text += ", key encrypted"
        return text


async def demo(broker_url: str, broker_name: str, certs: Path, key_password: str | None,
               duration: float | None, out: TextIO) -> int:
    everest_mqtt = MqttClient(BrokerConfig.from_url(broker_url, client_id="evflow-demo-everest"))
    tap_mqtt = MqttClient(BrokerConfig.from_url(broker_url, client_id="evflow-demo-tap"))
    try:
        plan = load_plan([demo_flow()], env={"EVFLOW_BROKER": broker_url, "EVEREST_MODULE_ID": MODULE_ID})
    except FlowInvalid as invalid:
        print(invalid, file=sys.stderr)
        return 1
    engine = FlowEngine(plan)
    async with trio.open_nursery() as nursery:
        await nursery.start(tap_mqtt.run)
        tap = WireTap(out, MODULE_ID)
        wire = await tap_mqtt.subscribe("#", max_buffer=1024, overflow=Overflow.DROP_OLDEST)
        nursery.start_soon(_render, wire, tap)
        tap.show("•", f"{broker_name} at {broker_url}; certificates in {certs}; flow {demo_flow().name}")
        await nursery.start(everest_mqtt.run)
        simulator = EvseSecuritySimulator(
            everest_mqtt, CertificateStore(certs, key_password=key_password), SimulatorOptions(module_id=MODULE_ID)
        )
        await nursery.start(simulator.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            await nursery.start(engine.run)
            with trio.move_on_after(duration if duration is not None else float("inf")) as running:
                async for signum in signals:
                    tap.show("•", f"{signal.Signals(signum).name}: stopping")
                    break
            if running.cancelled_caught:
                tap.show("•", f"{duration:g} s are up: stopping")
            engine.request_stop()  # the keepalive says its final `false` (acknowledged) while stopping
            await engine.stopped.wait()
        await trio.sleep(0.2)  # display only: give the tap a moment to print the final messages
        await everest_mqtt.aclose()
        await tap_mqtt.aclose()
        nursery.cancel_scope.cancel()
    return 0


async def _render(wire: Any, tap: WireTap) -> None:
    async for message in wire:
        tap.render(message)


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="evflow-demo-") as workdir:
        layout = init_pki(Path(workdir) / "certs")
        try:
            broker, broker_name = start_local_broker(Path(workdir))
        except LocalBrokerError as exc:
            print(f"evflow demo: error: {exc}", file=sys.stderr)
            return 1
        try:
            return run_trio("demo", demo, broker.url, broker_name, layout.root, layout.key_password,
                            args.duration, sys.stdout)
        finally:
            broker.stop()
