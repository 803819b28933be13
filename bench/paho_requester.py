"""The request floor: plain paho-mqtt doing the request flow's work, with paho's own loop and no engine.

On each trigger it asks EVerest's ``is_ca_certificate_installed`` (V2G) with a reply topic of its own
(EVerest's replies carry no correlation id); on the reply it publishes the first copy as the result
and drops the duplicate (EVerest's implementation answers booleans twice).

It sends with TCP_NODELAY and acknowledges every read at once (TCP_QUICKACK): mosquitto keeps Nagle
on by default, and an ignored duplicate reply would otherwise leave its ACK to the kernel's 40 ms
delayed-ACK timer, holding the broker's next packet to this client behind it (SPEC.md, Brokers).

    python bench/paho_requester.py --port 1883 --module-id bench_security
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import socket
import sys

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--module-id", required=True)
    parser.add_argument("--trigger-topic", default="bench/request/trigger")
    parser.add_argument("--result-topic", default="bench/request/result")
    args = parser.parse_args()

    request_topic = f"everest_api/1/evse_security_consumer/{args.module_id}/m2e/is_ca_certificate_installed"
    reply_prefix = f"floor/reply/{secrets.token_hex(4)}"
    pending: set[str] = set()
    counter = 0
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)

    def on_connect(client: paho.Client, _userdata: object, _flags: object, _reason: object, _props: object) -> None:
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe([(args.trigger_topic, 0), (f"{reply_prefix}/+", 0)])

    def on_message(client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        nonlocal counter
        if _TCP_QUICKACK is not None:
            # Re-armed after each read: the kernel leaves quick-ACK mode by itself.
            client.socket().setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        if message.topic == args.trigger_topic:
            counter += 1
            reply_to = f"{reply_prefix}/{counter}"
            pending.add(reply_to)
            client.publish(request_topic, json.dumps({"headers": {"replyTo": reply_to}, "payload": "V2G"}), 0)
        elif message.topic in pending:  # the first copy; later ones find nothing pending
            pending.discard(message.topic)
            client.publish(args.result_topic, json.dumps(json.loads(message.payload)), 0)

    client.on_connect = on_connect
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    # Plain paho from start to end, repeated in each of these programs on purpose: bench/common.py
    # imports evflow, whose import cost and memory would then be counted in this baseline.
    client.connect(args.host, args.port, keepalive=30)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
