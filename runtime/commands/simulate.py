"""``evflow simulate``: EVerest's evse_security API module on a broker, or ``--init-pki`` a test PKI, or,
with ``--api NAME``, EVerest's side of any API read from its document, driven by commands on stdin."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

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
    if args.api is not None and not (args.api == "evse_security_consumer" and args.certs):
        return run_generic(args)
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


# ---- any API, from its document (--api) ---------------------------------------------------------

# The evse_security simulator's options: named when given with another API rather than ignored.
_EVSE_SECURITY_ONLY = (("--certs", "certs", None), ("--strict", "strict", False),
                       ("--reply-delay-ms", "reply_delay_ms", 0), ("--drop-ratio", "drop_ratio", 0.0),
                       ("--malformed-ratio", "malformed_ratio", 0.0),
                       ("--heartbeat-pause-after", "heartbeat_pause_after", None),
                       ("--heartbeat-pause-s", "heartbeat_pause_s", 0.0), ("--seed", "seed", None))

MAX_COMMAND_BYTES = 1024 * 1024
COMMANDS_HELP = "commands: ops | sent [OP] | publish OP JSON | ask OP [JSON]"


def _error(message: str) -> int:
    print(f"evflow simulate: error: {message}", file=sys.stderr)
    return 2


def run_generic(args: argparse.Namespace) -> int:
    from ..asyncapi.catalogue import ApiCatalogue
    from ..asyncapi.documents import DocumentError
    from ..codec import CodecError, load_json

    missing = [flag for flag, value in (("--broker", args.broker), ("--module-id", args.module_id)) if not value]
    if missing:
        return _error(f"{', '.join(missing)} required")
    given = [flag for flag, name, default in _EVSE_SECURITY_ONLY if getattr(args, name) != default]
    if given:
        return _error(f"{', '.join(given)}: for the evse_security_consumer simulator only, not with --api {args.api}")
    try:
        config = BrokerConfig.from_url(args.broker, client_id=f"evflow-simulator-{args.module_id}")
        validate_external_prefix(args.external_prefix)
    except (BrokerUrlError, TopicError, ValueError) as exc:
        return _error(str(exc))
    answers = {}
    if args.answers:
        try:
            answers = load_json(Path(args.answers).read_bytes())
        except OSError as exc:
            return _error(f"--answers {args.answers}: cannot read: {exc.strerror or exc}")
        except CodecError as exc:
            return _error(f"--answers {args.answers}: {exc}")
        if type(answers) is not dict:
            return _error(f"--answers {args.answers}: expected an object {{operation: reply}}")
    try:
        api = ApiCatalogue.default().api(args.api)  # --api-docs is in $EVFLOW_API_DOCS already (cli.main)
    except DocumentError as exc:
        return _error(str(exc))
    return run_trio("simulate", serve_api, config, api, answers, args)


async def serve_api(config: BrokerConfig, api: Any, answers: dict[str, Any], args: argparse.Namespace) -> int:
    from ..output import flush_all, stdout_writer
    from ..simulator.generic import BadAnswer, GenericApiSimulator, SimulatorError

    try:
        simulator = GenericApiSimulator(
            MqttClient(config), api, args.module_id, external_prefix=args.external_prefix,
            heartbeat_interval_ms=args.heartbeat_interval_ms, heartbeat_start=args.heartbeat_start,
            comm_check_timeout_s=args.comm_check_timeout_s, answers=answers, reply_timeout_s=args.reply_timeout_s,
        )
    except BadAnswer as exc:
        return _error(f"--answers {args.answers}: {exc.detail}")
    except (SimulatorError, TopicError) as exc:
        return _error(str(exc))
    mqtt = simulator.mqtt
    say = stdout_writer().write  # never blocks the loop on a slow reader of stdout
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(mqtt.run)
            await nursery.start(simulator.run)
            say(f"simulating {api.name} at {simulator.base} on {config.address} "
                f"({len(simulator.operations)} operations); {COMMANDS_HELP}\n")
            nursery.start_soon(_read_commands, simulator, say)
            async for _ in signals:
                break
            await mqtt.aclose()
            nursery.cancel_scope.cancel()
    flush_all()
    return 0


async def _read_commands(simulator: Any, say: Any) -> None:
    """Commands from stdin, one a line, each answered on stdout. At the end of stdin the simulator
    goes on serving (run with stdin from /dev/null, it is a plain simulator)."""
    import os

    pending = b""
    skipping = False  # the rest of a line too long to be a command
    while True:
        # A thread, not trio's FdStream: that would set O_NONBLOCK on a terminal shared with the shell.
        try:
            chunk = await trio.to_thread.run_sync(os.read, 0, 65536, abandon_on_cancel=True)
        except OSError:  # no stdin at all (closed with <&-): nothing to read commands from
            return
        if not chunk:
            return
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if skipping and lines:
            lines, skipping = lines[1:], False
        if len(pending) > MAX_COMMAND_BYTES:  # no newline in sight: not a command line
            say(f"error: a command line longer than {MAX_COMMAND_BYTES} bytes: dropped\n")
            pending, skipping = b"", True
        for line in lines:
            for answer in await run_command(simulator, line.decode("utf-8", "replace")):
                say(answer + "\n")


def parse_command(line: str) -> tuple[str, str | None, Any]:
    """``(command, operation or None, JSON argument or None)``; ValueError saying what is wrong."""
    from ..codec import CodecError, load_json

    parts = line.strip().split(maxsplit=2)
    if not parts:
        return "", None, None
    command, rest = parts[0], parts[1:]
    expected = {"ops": (0, 0), "sent": (0, 1), "publish": (1, 2), "ask": (1, 2)}
    if command not in expected:
        raise ValueError(f"unknown command {command!r} ({COMMANDS_HELP})")
    least, most = expected[command]
    if not least <= len(rest) <= most:
        raise ValueError(f"{command}: wrong number of arguments ({COMMANDS_HELP})")
    value = None
    if len(rest) == 2:
        try:
            value = load_json(rest[1])
        except CodecError as exc:
            raise ValueError(f"{command} {rest[0]}: {exc}") from None
    return command, rest[0] if rest else None, value


async def run_command(simulator: Any, line: str) -> list[str]:
    """The lines that answer one command; a bad command or a failed one is one ``error:`` line."""
    from ..codec import CodecError, dump_json
    from ..errors import EvflowError

    try:
        command, op_id, value = parse_command(line)
    except ValueError as exc:
        return [f"error: {exc}"]
    try:
        if command == "":
            return []
        if command == "ops":
            return [f"{op.id} {op.kind} {op.address}" for op in simulator.operations.values()]
        if command == "sent":
            names = [op_id] if op_id is not None else [
                i for i, op in simulator.operations.items() if op.kind == "send"]
            answer = []
            for name in names:
                values = simulator.received(name)
                answer += [f"sent {name} {dump_json(v).decode()}" for v in values] or [f"sent {name} (none)"]
                if simulator.invalid_sent[name]:
                    answer.append(f"sent {name}: {simulator.invalid_sent[name]} more that broke the schema")
            return answer or ["sent: the API has no send operations"]
        assert op_id is not None
        if command == "publish":
            await simulator.publish(op_id, value)
            return [f"published {op_id}"]
        reply = await simulator.ask(op_id, value)
        return [f"reply {op_id} {dump_json(reply).decode()}"]
    except CodecError as exc:
        return [f"error: {command} {op_id}: {exc}"]
    except EvflowError as exc:  # an unknown operation, no reply, a reply that breaks the schema, the broker gone
        return [f"error: {command} {op_id}: {exc}"]
