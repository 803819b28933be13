"""``evflow demo``: everything on this machine, on embedded defaults.

A private mosquitto on a free port, the EVerest evse_security simulator serving a freshly made test PKI,
and an evflow client that watches the heartbeat, keeps EVerest's communication check alive and asks
the three questions in rounds. Each event is one line on stdout; the simulator's own state changes
(its communication-check watchdog) appear in the log on stderr.
"""

from __future__ import annotations

import argparse
import datetime
import signal
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import trio

from ..apis.evse_security_client import EvseSecurityClient
from ..broker import BrokerConfig
from ..errors import ApiError, InvalidPayload
from ..models.evse_security import CaCertificateType, GetCertificateInfoStatus, LeafCertificateType
from ..mosquitto import MosquittoBroker, MosquittoError
from ..protocol.heartbeat import BeatKind, HeartbeatSequence
from ..simulator.pki import init_pki
from ..simulator.service import EvseSecuritySimulator, SimulatorOptions
from ..simulator.store import CertificateStore
from ..transport import MqttClient
from ._running import run_trio

MODULE_ID = "evse_security_api"
KEEPALIVE_INTERVAL = 2.0  # below EVerest's default communication-check timeout of 5 s
ROUND_INTERVAL = 5.0


class Screen:
    """Timestamped lines: seconds since the demo started, then what happened."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = trio.current_time()

    def show(self, mark: str, text: str) -> None:
        print(f"{trio.current_time() - self.started:7.2f}s  {mark} {text}", file=self.out, flush=True)


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
    return (certificate.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).days


async def watch_heartbeat(client: EvseSecurityClient, screen: Screen) -> None:
    sequence = HeartbeatSequence()
    async with await client.heartbeats() as beats:
        while True:
            try:
                beat = await beats.receive()
            except InvalidPayload as exc:
                screen.show("!", f"invalid heartbeat: {exc}")
                continue
            event = sequence.observe(beat)
            note = {BeatKind.GAP: f"  ({event.missed} missed)", BeatKind.RESTARTED: "  (EVerest restarted)"}
            screen.show("♥", f"heartbeat {beat}{note.get(event.kind, '')}")


async def keep_alive(client: EvseSecurityClient, screen: Screen) -> None:
    next_at = trio.current_time()
    while True:
        await client.communication_check(True)
        screen.show("→", "communication_check true")
        next_at += KEEPALIVE_INTERVAL
        await trio.sleep_until(next_at)


async def ask_rounds(client: EvseSecurityClient, screen: Screen) -> None:
    while True:
        for ca_type in CaCertificateType:
            await ask(screen, f"is_ca_certificate_installed({ca_type})", client.is_ca_certificate_installed(ca_type))
        await ask(screen, "get_verify_location(V2G)", client.get_verify_location(CaCertificateType.V2G))
        for leaf_type in (LeafCertificateType.V2G, LeafCertificateType.CSMS, LeafCertificateType.MO):
            started = trio.current_time()
            try:
                result = await client.get_leaf_certificate_info(leaf_type, include_ocsp=True)
            except ApiError as exc:
                screen.show("✗", f"get_leaf_certificate_info({leaf_type}): {exc}")
                continue
            took = (trio.current_time() - started) * 1000
            text = f"get_leaf_certificate_info({leaf_type}) → {result.status}"
            if result.status is GetCertificateInfoStatus.Accepted and result.info is not None:
                info = result.info
                days = days_until_expiry(info.certificate_single or info.certificate or "")
                text += f", chain of {info.certificate_count}"
                if days is not None:
                    text += f", leaf expires in {days} days"
                if info.ocsp:
                    text += f", OCSP data for {len(info.ocsp)}"
                if info.password is not None:
                    text += ", key encrypted"
            screen.show("←", f"{text}  ({took:.1f} ms)")
        await trio.sleep(ROUND_INTERVAL)


async def ask(screen: Screen, what: str, request: object) -> None:
    started = trio.current_time()
    try:
        answer = await request  # type: ignore[misc]
    except ApiError as exc:
        screen.show("✗", f"{what}: {exc}")
        return
    shown = str(answer).lower() if isinstance(answer, bool) else "(none installed)" if answer is None else answer
    screen.show("←", f"{what} → {shown}  ({(trio.current_time() - started) * 1000:.1f} ms)")


async def demo(broker_url: str, certs: Path, key_password: str | None, duration: float | None, out: TextIO) -> int:
    screen = Screen(out)
    everest_mqtt = MqttClient(BrokerConfig.from_url(broker_url, client_id="evflow-demo-everest"))
    app_mqtt = MqttClient(BrokerConfig.from_url(broker_url, client_id="evflow-demo-client"))
    async with trio.open_nursery() as nursery:
        await nursery.start(everest_mqtt.run)
        await nursery.start(app_mqtt.run)
        store = CertificateStore(certs, key_password=key_password)
        await nursery.start(EvseSecuritySimulator(everest_mqtt, store, SimulatorOptions(module_id=MODULE_ID)).run)
        client = EvseSecurityClient(app_mqtt, MODULE_ID)
        await nursery.start(client.run)
        screen.show("•", f"broker {broker_url}, EVerest simulator for module {MODULE_ID!r}, certificates in {certs}")
        with trio.move_on_after(duration if duration is not None else float("inf")) as running:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as jobs:
                    jobs.start_soon(watch_heartbeat, client, screen)
                    jobs.start_soon(keep_alive, client, screen)
                    jobs.start_soon(ask_rounds, client, screen)
                    async for signum in signals:
                        screen.show("•", f"{signal.Signals(signum).name}: stopping")
                        jobs.cancel_scope.cancel()
                        break
        if running.cancelled_caught:
            screen.show("•", f"{duration:g} s are up: stopping")
        # A deliberate, final stop: tell EVerest to stop its communication check (acknowledged).
        await client.communication_check(False, qos=1)
        screen.show("→", "communication_check false (final)")
        await app_mqtt.aclose()
        await everest_mqtt.aclose()
        nursery.cancel_scope.cancel()
    return 0


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="evflow-demo-") as workdir:
        layout = init_pki(Path(workdir) / "certs")
        try:
            broker = MosquittoBroker(Path(workdir) / "mosquitto").start()
        except MosquittoError as exc:
            print(f"evflow demo: error: {exc}", file=sys.stderr)
            return 1
        try:
            return run_trio("demo", demo, broker.url, layout.root, layout.key_password, args.duration, sys.stdout)
        finally:
            broker.stop()
