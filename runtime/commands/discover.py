"""``evflow discover``: which API modules does the EVerest on this broker run, under which ids?"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

import trio

from ..broker import BrokerConfig, BrokerUrlError
from ..codec import unstructure
from ..discovery import DiscoveryResult, discover_apis, nobody_answered
from ..models.entrypoint import ApiParameter
from ..protocol.discovery import request_topic
from ..protocol.topics import TopicError
from ..transport import MqttClient
from ._running import run_trio


def describe_monitoring(api: ApiParameter) -> str:
    """The communication figures the module gave, in words; empty when it gave none."""
    monitoring = api.communication_monitoring
    if monitoring is None:
        return ""
    parts = []
    if monitoring.heartbeat_period_ms is not None:
        parts.append(f"heartbeat every {monitoring.heartbeat_period_ms} ms")
    if monitoring.communication_check_period_s is not None:
        parts.append(f"communication check within {monitoring.communication_check_period_s} s")
    if monitoring.request_reply_timeout_s is not None:
        parts.append(f"request reply timeout {monitoring.request_reply_timeout_s} s")
    return ", ".join(parts)


def text_lines(apis: Sequence[ApiParameter]) -> list[str]:
    """One line per API of a module, in columns: type, module_id, version, then the figures."""
    type_width = max(len(api.type) for api in apis)
    id_width = max(len(api.module_id) for api in apis)
    lines = []
    for api in apis:
        line = f"{api.type:<{type_width}}  {api.module_id:<{id_width}}  version {api.version}"
        figures = describe_monitoring(api)
        lines.append(f"{line}  {figures}" if figures else line)
    return lines


def report(result: DiscoveryResult, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if result.invalid:
        print(f"evflow discover: {result.invalid} invalid reply(ies) ignored; the first: {result.first_problem}",
              file=err)
    if not result.apis:
        text = nobody_answered(result, args.api, args.external_prefix, "--external-prefix")
        if args.wait_ready and not result.ready_beacon:
            text += f"; no ready beacon came within {args.wait_ready:g} s either"
        print(f"evflow discover: {text}", file=err)
        return 1
    # Modules answer in any order: sorted, the same EVerest gives the same output.
    apis = sorted(result.apis, key=lambda api: (api.type, api.module_id))
    if args.format == "json":
        print(json.dumps([unstructure(api) for api in apis], indent=2, ensure_ascii=False), file=out)
    else:
        for line in text_lines(apis):
            print(line, file=out)
    return 0


async def discover(config: BrokerConfig, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    mqtt = MqttClient(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(mqtt.run)
        result = await discover_apis(mqtt, external_prefix=args.external_prefix, api_type=args.api,
                                     window=args.window, wait_for_ready_beacon=args.wait_ready)
        await mqtt.aclose()
        nursery.cancel_scope.cancel()
    return report(result, args, out, err)


def run(args: argparse.Namespace) -> int:
    try:
        config = BrokerConfig.from_url(args.broker)
        request_topic(args.api, args.external_prefix)  # names a bad prefix or API type before connecting
    except (BrokerUrlError, TopicError) as exc:
        print(f"evflow discover: error: {exc}", file=sys.stderr)
        return 2
    return run_trio("discover", discover, config, args, sys.stdout, sys.stderr)
