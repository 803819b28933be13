"""``evflow simulate``: EVerest's evse_security API module on a broker, or ``--init-pki`` a test PKI."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import trio

from ..broker import BrokerConfig, BrokerUrlError
from ..protocol.topics import ApiTopics, TopicError, validate_external_prefix
from ..transport import MqttClient
from ._running import run_trio


def init_pki_command(args: argparse.Namespace) -> int:
    from ..simulator.pki import init_pki

    root = Path(args.init_pki)
    if root.exists() and any(root.iterdir()):
        print(f"evflow simulate: error: {root} is not empty; give a new or empty directory", file=sys.stderr)
        return 2
    layout = init_pki(
        root, expired_leaf=args.expired_leaf, not_yet_valid_leaf=args.not_yet_valid_leaf,
        drop_leaf_key=args.drop_leaf_key, **({"key_password": None} if args.no_key_password else {}),
    )
    print(f"test PKI written to {layout.root}")
    print(f"  SECC leaf {layout.secc.certificate_single} (chain {layout.secc.certificate_chain})")
    print(f"  CSMS leaf {layout.csms.certificate_single}")
    if layout.key_password is not None:
        print(f"  leaf keys are encrypted; the passphrase is in {layout.root / 'private_key_password'}")
    return 0


async def serve(config: BrokerConfig, certs: Path, args: argparse.Namespace) -> int:
    from ..simulator.pki import PASSWORD_FILE_NAME
    from ..simulator.service import EvseSecuritySimulator, Faults, SimulatorOptions
    from ..simulator.store import CertificateStore

    password_file = certs / PASSWORD_FILE_NAME
    key_password = password_file.read_text().strip() if password_file.is_file() else None
    options = SimulatorOptions(
        module_id=args.module_id, external_prefix=args.external_prefix,
        heartbeat_interval_ms=args.heartbeat_interval_ms, heartbeat_start=args.heartbeat_start,
        comm_check_timeout_s=args.comm_check_timeout_s, strict=args.strict,
        faults=Faults(reply_delay=args.reply_delay_ms / 1000, drop_ratio=args.drop_ratio,
                      malformed_ratio=args.malformed_ratio, heartbeat_pause_after=args.heartbeat_pause_after,
                      heartbeat_pause=args.heartbeat_pause_s, seed=args.seed),
    )
    mqtt = MqttClient(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(mqtt.run)
            simulator = EvseSecuritySimulator(mqtt, CertificateStore(certs, key_password=key_password), options)
            await nursery.start(simulator.run)
            print(f"simulating {simulator.topics.base} on {config.address} from {certs}", flush=True)
            async for _ in signals:
                break
            await mqtt.aclose()
            nursery.cancel_scope.cancel()
    return 0


def run(args: argparse.Namespace) -> int:
    if args.init_pki:
        return init_pki_command(args)
    missing = [flag for flag, value in (("--broker", args.broker), ("--module-id", args.module_id),
                                        ("--certs", args.certs)) if not value]
    if missing:
        print(f"evflow simulate: error: {', '.join(missing)} required (or --init-pki DIR)", file=sys.stderr)
        return 2
    try:
        config = BrokerConfig.from_url(args.broker, client_id=f"evflow-simulator-{args.module_id}")
        ApiTopics("evse_security_consumer", 1, args.module_id, validate_external_prefix(args.external_prefix))
    except (BrokerUrlError, TopicError, ValueError) as exc:
        print(f"evflow simulate: error: {exc}", file=sys.stderr)
        return 2
    certs = Path(args.certs)
    if not certs.is_dir():
        print(f"evflow simulate: error: --certs {certs} is not a directory (make one with --init-pki)", file=sys.stderr)
        return 2
    return run_trio("simulate", serve, config, certs.resolve(), args)
