"""``evflow probe``: ask a running EVerest each evse_security question once, then watch its heartbeat."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import trio

from ..apis.evse_security_client import EvseSecurityClient
from ..broker import BrokerConfig, BrokerUrlError
from ..errors import ApiError, InvalidPayload
from ..models.evse_security import CaCertificateType, GetCertificateInfoResult, LeafCertificateType
from ..protocol.heartbeat import BeatKind, HeartbeatSequence
from ..protocol.topics import ApiTopics, TopicError, validate_external_prefix
from ..transport import MqttClient
from ._running import run_trio


def describe_leaf(result: GetCertificateInfoResult) -> str:
    """One line for a leaf answer; the key password is never shown, only whether there is one."""
    if result.info is None:
        return str(result.status)
    info = result.info
    parts = [str(result.status), f"key {info.key}", f"{info.certificate_count} certificate(s)"]
    if info.certificate_single:
        parts.append(f"leaf {info.certificate_single}")
    if info.password is not None:
        parts.append("key encrypted (password given)")
    if info.ocsp:
        parts.append(f"OCSP data for {len(info.ocsp)} certificate(s)")
    return ", ".join(parts)


async def ask_everything(client: EvseSecurityClient, out: TextIO) -> int:
    """Send every request once per type; returns how many failed."""
    failures = 0
    for ca_type in CaCertificateType:
        for name, call in (("is_ca_certificate_installed", client.is_ca_certificate_installed),
                           ("get_verify_location", client.get_verify_location)):
            try:
                answer = await call(ca_type)
            except ApiError as exc:
                failures += 1
                print(f"  {name}({ca_type}): FAILED: {exc}", file=out)
            else:
                shown = "(nothing installed)" if answer is None else str(answer).lower() if isinstance(answer, bool) else answer
                print(f"  {name}({ca_type}) -> {shown}", file=out)
    for leaf_type in (LeafCertificateType.V2G, LeafCertificateType.CSMS):
        try:
            result = await client.get_leaf_certificate_info(leaf_type, include_ocsp=True)
        except ApiError as exc:
            failures += 1
            print(f"  get_leaf_certificate_info({leaf_type}): FAILED: {exc}", file=out)
        else:
            print(f"  get_leaf_certificate_info({leaf_type}) -> {describe_leaf(result)}", file=out)
    return failures


async def watch_heartbeat(client: EvseSecurityClient, duration: float, out: TextIO) -> int:
    """Print each heartbeat for ``duration`` seconds; returns how many arrived."""
    sequence = HeartbeatSequence()
    count = 0
    async with await client.heartbeats() as beats:
        with trio.move_on_after(duration):
            while True:
                try:
                    beat = await beats.receive()
                except InvalidPayload as exc:
                    print(f"  heartbeat: invalid: {exc}", file=out)
                    continue
                count += 1
                event = sequence.observe(beat)
                note = {BeatKind.GAP: f" ({event.missed} missed)", BeatKind.RESTARTED: " (EVerest restarted)",
                        BeatKind.REPEATED: " (repeated)"}.get(event.kind, "")
                print(f"  heartbeat {beat}{note}", file=out)
    return count


async def probe(config: BrokerConfig, module_id: str, external_prefix: str, timeout: float, duration: float,
                out: TextIO) -> int:
    mqtt = MqttClient(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(mqtt.run)
        client = EvseSecurityClient(mqtt, module_id, external_prefix=external_prefix, request_timeout=timeout)
        await nursery.start(client.run)
        print(f"connected to {config.address}; asking module {module_id!r}", file=out)
        failures = await ask_everything(client, out)
        print(f"watching the heartbeat for {duration:g} s", file=out)
        beats = await watch_heartbeat(client, duration, out)
        await mqtt.aclose()
        nursery.cancel_scope.cancel()
    if beats == 0:
        print("no heartbeat arrived", file=out)
    return 1 if failures or beats == 0 else 0


def run(args: argparse.Namespace) -> int:
    try:
        config = BrokerConfig.from_url(args.broker)
        # The client validates these too; checking first names a typo before any connection attempt.
        ApiTopics("evse_security_consumer", 1, args.module_id, validate_external_prefix(args.external_prefix))
    except (BrokerUrlError, TopicError) as exc:
        print(f"evflow probe: error: {exc}", file=sys.stderr)
        return 2
    return run_trio("probe", probe, config, args.module_id, args.external_prefix, args.timeout, args.duration,
                    sys.stdout)
