"""The ``evflow`` command line.

Arguments are declared here (cheap); a command's code, and what it imports, is loaded only when that
command runs, so ``evflow --help`` or a quick command does not pay for the whole runtime.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected 0 or a positive number of seconds, got {text!r}")
    return value


def _u64(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= 2**64 - 1:
        raise argparse.ArgumentTypeError(f"expected 0..2^64-1, got {text}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def _listen_address(text: str) -> tuple[str, int]:
    """``[HOST:]PORT``: an IP address (IPv6 in brackets) or ``localhost``; 127.0.0.1 when not given."""
    import ipaddress

    host, _, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected [HOST:]PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {port}")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(f"host must be an IP address or localhost, got {host!r}") from None
    return host, port


def _node_log_level(text: str) -> tuple[str, int]:
    node_id, _, level = text.rpartition("=")
    levels = {"debug": 10, "info": 20, "warning": 30, "error": 40}
    if not node_id or level not in levels:
        raise argparse.ArgumentTypeError(f"expected NODE_ID=LEVEL (LEVEL: {', '.join(levels)}), got {text!r}")
    return node_id, levels[level]


def _add_api_target(parser: argparse.ArgumentParser, *, broker_required: bool) -> None:
    parser.add_argument("--broker", required=broker_required, metavar="URL",
                        help="broker URL: mqtt://host:port, mqtts://host:port or unix:///path")
    parser.add_argument("--module-id", required=broker_required, metavar="ID",
                        help="module id of the evse_security_consumer API module in EVerest's config")
    parser.add_argument("--external-prefix", default="", metavar="P",
                        help="EVerest's mqtt_external_prefix (default: none)")


def _existing_path(text: str) -> str:
    import os

    if not os.path.exists(text):
        raise argparse.ArgumentTypeError(f"no such file or directory: {text!r}")
    return text


def _add_api_docs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-docs", action="append", type=_existing_path, metavar="PATH",
                        help="an EVerest API document (AsyncAPI YAML), or a directory of them: node types "
                        "<api>/<operation> for each (repeatable; searched before $EVFLOW_API_DOCS and "
                        "<prefix>/share/everest/EVerest_API)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evflow",
        description="Flows for EVerest's evse_security_consumer API over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"evflow {__version__}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="log level (default: info)")
    parser.add_argument("--log-format", default="auto", choices=["auto", "text", "json"],
                        help="log lines: text (coloured on a terminal), json, or auto (default): text on a "
                        "terminal, JSON lines otherwise")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    probe = commands.add_parser(
        "probe",
        help="ask a running EVerest the three evse_security questions and watch its heartbeat",
        description="Connect to the broker, send each evse_security_consumer request once per certificate "
        "type, print the answers, then watch EVerest's heartbeat for --duration seconds.",
    )
    _add_api_target(probe, broker_required=True)
    probe.add_argument("--timeout", type=_positive_float, default=5.0, metavar="S",
                       help="request timeout in seconds (default: 5)")
    probe.add_argument("--duration", type=_positive_float, default=3.0, metavar="S",
                       help="seconds to watch the heartbeat (default: 3)")
    probe.set_defaults(module="evflow.runtime.commands.probe")

    discover = commands.add_parser(
        "discover", help="list the API modules a running EVerest answers discovery for",
        description="Ask EVerest's API modules (the entrypoint API's discover, or query-modules with --api) "
        "which APIs they implement, collect the answers for --window seconds, and list each API with its "
        "module id. Exit 0 when a module answered, 1 when none did.",
    )
    discover.add_argument("--broker", required=True, metavar="URL",
                          help="broker URL: mqtt://host:port, mqtts://host:port or unix:///path")
    discover.add_argument("--external-prefix", default="", metavar="P",
                          help="EVerest's mqtt_external_prefix (default: none)")
    discover.add_argument("--api", metavar="TYPE", help="only modules implementing this API type (query-modules)")
    discover.add_argument("--window", type=_positive_float, default=1.0, metavar="S",
                          help="seconds to collect answers for: each module answers on its own (default: 1)")
    discover.add_argument("--wait-ready", type=_non_negative_float, default=0.0, metavar="S",
                          help="when nothing answers at once, wait up to S seconds for EVerest's ready beacon "
                          "and ask again (for a run while EVerest starts; default: 0, do not wait)")
    discover.add_argument("--format", choices=["text", "json"], default="text")
    discover.set_defaults(module="evflow.runtime.commands.discover")

    run = commands.add_parser(
        "run", help="run flow files until stopped (SIGINT/SIGTERM)",
        description="Load, validate and run the flow files; stop cleanly on SIGINT or SIGTERM (a second "
        "signal stops at once).",
    )
    run.add_argument("flows", nargs="+", metavar="FLOW.json", help="flow files (one flow together)")
    run.add_argument("--credentials", metavar="FILE",
                     help="NAME=value lines for ${NAME} in the flows (secrets: kept out of flow files and logs)")
    run.add_argument("--node-red-credentials", metavar="FILE",
                     help="Node-RED's flows_cred.json, decrypted: credentials of the flow's nodes")
    run.add_argument("--skip-unsupported", action="store_true",
                     help="run without the nodes of unsupported types (Node-RED's dashboard…), cutting their wires")
    run.add_argument("--stop-timeout", type=_positive_float, default=5.0, metavar="S",
                     help="on SIGINT/SIGTERM, seconds for the whole stop (default: 5)")
    run.add_argument("--drain-timeout", type=_positive_float, default=2.0, metavar="S",
                     help="of those, at most this long for messages in flight to finish (default: 2)")
    run.add_argument("--close-timeout", type=_positive_float, default=2.0, metavar="S",
                     help="and at most this long for the nodes to close (default: 2)")
    run.add_argument("--http", type=_listen_address, metavar="[HOST:]PORT",
                     help="serve /healthz, /ready, /metrics and the status page (/) here; HOST defaults to "
                     "127.0.0.1 (loopback): name another address to be reached from the network (default: off)")
    run.add_argument("--node-log-level", type=_node_log_level, action="append", metavar="NODE_ID=LEVEL",
                     help="a node's own log level, above or below --log-level (repeatable)")
    _add_api_docs(run)
    run.set_defaults(module="evflow.runtime.commands.run")

    validate = commands.add_parser(
        "validate", help="check flow files without running them (exit 0 valid, 1 not)",
        description="Report every problem of the flow files at once, each with file, node id and JSON path.",
    )
    validate.add_argument("flows", nargs="+", metavar="FLOW.json")
    validate.add_argument("--credentials", metavar="FILE", help="NAME=value lines for ${NAME} in the flows")
    validate.add_argument("--node-red-credentials", metavar="FILE",
                          help="Node-RED's flows_cred.json, decrypted: credentials of the flow's nodes")
    validate.add_argument("--skip-unsupported", action="store_true",
                          help="validate the flow as `run --skip-unsupported` would run it")
    validate.add_argument("--format", choices=["text", "json"], default="text")
    _add_api_docs(validate)
    validate.set_defaults(module="evflow.runtime.commands.validate")

    import_nodered = commands.add_parser(
        "import-nodered", help="report what of a Node-RED flows file evflow runs, what not, and why",
        description="Read Node-RED's flows.json (and its decrypted flows_cred.json) as `evflow run` would and "
        "write a report: the nodes that will run, the unsupported ones and the wires --skip-unsupported cuts, "
        "and every problem with its node id and JSON path. Nothing is converted: evflow runs the file as it is. "
        "Exit 0 when the flow runs (with --skip-unsupported if needed), 1 when it does not.",
    )
    import_nodered.add_argument("flows", metavar="flows.json")
    import_nodered.add_argument("node_red_credentials", nargs="?", metavar="flows_cred.json",
                                help="Node-RED's credentials file, decrypted")
    import_nodered.add_argument("--credentials", metavar="FILE", help="NAME=value lines for ${NAME} in the flows")
    import_nodered.add_argument("--output", metavar="FILE", help="write the report here instead of stdout")
    _add_api_docs(import_nodered)
    import_nodered.set_defaults(module="evflow.runtime.commands.import_nodered")

    nodes = commands.add_parser("nodes", help="list the node types: built-in and installed plugins")
    nodes.add_argument("--format", choices=["text", "json"], default="text")
    _add_api_docs(nodes)
    nodes.set_defaults(module="evflow.runtime.commands.nodes")

    test = commands.add_parser(
        "test", help="run declarative flow tests (inputs and expected outputs, JSON)",
        description="Run each test file's cases against its flow (with a private broker and the EVerest "
        "simulator when the file asks for them); exit 0 when every case passed.",
    )
    test.add_argument("tests", nargs="+", metavar="TEST.json")
    _add_api_docs(test)
    test.set_defaults(module="evflow.runtime.commands.test")

    schema = commands.add_parser(
        "schema", help="print a JSON Schema for flow files (built-in and installed node types)",
        description="A JSON Schema (draft 2020-12) that editors use to check flow files as they are typed.",
    )
    schema.add_argument("--output", metavar="FILE", help="write it to FILE instead of stdout")
    _add_api_docs(schema)
    schema.set_defaults(module="evflow.runtime.commands.schema")

    simulate = commands.add_parser(
        "simulate", help="be EVerest's side of an API: evse_security from a certificate directory, or any API "
        "from its document (--api)",
        description="Serve EVerest's evse_security_consumer API on a broker from a certificate directory laid "
        "out as EVerest's (ca/v2g/V2G_ROOT_CA.pem, client/cso/, ...), with its heartbeat and communication-check "
        "watchdog; or, with --init-pki DIR, create such a directory with a complete test PKI; or, with --api NAME, "
        "be EVerest's side of any API from its AsyncAPI document (--api-docs): requests answered with --answers or "
        "the document's examples, what the client sends recorded, and commands read from stdin, one a line: "
        "publish OP JSON, ask OP [JSON], sent [OP], ops.",
    )
    _add_api_target(simulate, broker_required=False)
    simulate.add_argument("--api", metavar="NAME",
                          help="the API to be EVerest's side of, read from its document (default: "
                          "evse_security_consumer from --certs)")
    simulate.add_argument("--answers", metavar="FILE.json",
                          help="with --api: {operation: reply} for the requests, instead of the document's examples")
    simulate.add_argument("--reply-timeout-s", type=_positive_float, default=5.0, metavar="S",
                          help="with --api: how long `ask` waits for the client's reply, EVerest's "
                          "cfg_request_reply_to_s (default 5 here, to see a missing answer soon; EVerest's is 550)")
    simulate.add_argument("--certs", metavar="DIR", help="the certificate directory to serve")
    simulate.add_argument("--heartbeat-interval-ms", type=int, default=1000, metavar="N",
                          help="heartbeat period (default 1000; <= 0: none)")
    simulate.add_argument("--heartbeat-start", type=_u64, default=0, metavar="N",
                          help="first heartbeat id (to exercise the u64 wrap)")
    simulate.add_argument("--comm-check-timeout-s", type=float, default=5.0, metavar="N",
                          help="communication-check timeout (default 5; <= 0: off)")
    simulate.add_argument("--strict", action="store_true",
                          help="the document's wire form instead of EVerest's implementation's")
    faults = simulate.add_argument_group("fault injection")
    faults.add_argument("--reply-delay-ms", type=int, default=0, metavar="N")
    faults.add_argument("--drop-ratio", type=_ratio, default=0.0, metavar="R", help="share of requests left unanswered")
    faults.add_argument("--malformed-ratio", type=_ratio, default=0.0, metavar="R", help="share of replies garbled")
    faults.add_argument("--heartbeat-pause-after", type=int, default=None, metavar="N")
    faults.add_argument("--heartbeat-pause-s", type=float, default=0.0, metavar="S")
    faults.add_argument("--seed", type=int, default=None, help="seed of the random faults (repeatable runs)")
    pki = simulate.add_argument_group("test PKI")
    pki.add_argument("--init-pki", metavar="DIR", help="create a test PKI in DIR and exit")
    pki.add_argument("--expired-leaf", action="store_true")
    pki.add_argument("--not-yet-valid-leaf", action="store_true")
    pki.add_argument("--drop-leaf-key", action="store_true")
    pki.add_argument("--no-key-password", action="store_true", help="leave the leaf keys unencrypted")
    _add_api_docs(simulate)
    simulate.set_defaults(module="evflow.runtime.commands.simulate")

    graph = commands.add_parser(
        "graph", help="draw flow files: Mermaid or Graphviz DOT text, or SVG with Graphviz installed",
        description="A picture of the flow: each node labelled with name and type, one group per tab, wires "
        "from their ports (error ports dashed), dotted lines to the config nodes used.",
    )
    graph.add_argument("flows", nargs="+", metavar="FLOW.json")
    graph.add_argument("--format", choices=["mermaid", "dot", "svg"], default="mermaid",
                       help="mermaid (default), dot, or svg (runs Graphviz's dot)")
    graph.add_argument("--output", metavar="FILE", help="write here instead of stdout")
    graph.add_argument("--credentials", metavar="FILE", help="NAME=value lines for ${NAME} in the flows")
    _add_api_docs(graph)
    graph.set_defaults(module="evflow.runtime.commands.graph")

    demo = commands.add_parser(
        "demo",
        help="run everything locally: a private broker, the EVerest simulator with a fresh PKI, a client",
        description="Start a private mosquitto, an EVerest evse_security simulator serving a freshly made "
        "test PKI, and an evflow client asking it; show what flows. Stops on Ctrl-C or after --duration.",
    )
    demo.add_argument("--duration", type=_positive_float, default=None, metavar="S",
                      help="stop after this many seconds (default: run until Ctrl-C)")
    demo.set_defaults(module="evflow.runtime.commands.demo")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "api_docs", None):
        # One place every command's registry looks: in front of what the environment names.
        import os

        os.environ["EVFLOW_API_DOCS"] = os.pathsep.join([*args.api_docs, os.environ.get("EVFLOW_API_DOCS", "")])
    from .logsetup import configure_logging

    configure_logging(args.log_level, args.log_format)
    command = importlib.import_module(args.module)
    try:
        return int(command.run(args))
    except KeyboardInterrupt:
        return 130
    finally:
        from .output import flush_all

        flush_all()  # the last log lines (and debug output) go out before the process ends


if __name__ == "__main__":
    sys.exit(main())
