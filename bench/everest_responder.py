"""A fast EVerest for the request legs: answers ``is_ca_certificate_installed`` as EVerest's
implementation does, the JSON boolean published twice to the request's ``replyTo``. Plain paho-mqtt
with its own loop; prints ``ready`` once subscribed.

Unlike EVerest it sends with TCP_NODELAY and acknowledges reads at once: it stands for an EVerest
that answers at once, and must not add a Nagle/delayed-ACK stall of its own (its second copy would
otherwise wait for the broker's ACK of the first), so the legs measure the client side alone.

    python bench/everest_responder.py --port 1883 --module-id bench_security
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)
INSTALLED = {"V2G", "CSMS"}
CA_TYPES = {"V2G", "MO", "CSMS", "MF"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--module-id", required=True)
    args = parser.parse_args()

    request_topic = f"everest_api/1/evse_security_consumer/{args.module_id}/m2e/is_ca_certificate_installed"
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)

    def on_connect(client: paho.Client, _userdata: object, _flags: object, _reason: object, _props: object) -> None:
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.subscribe(request_topic, 0)

    def on_subscribe(*_: object) -> None:
        print("ready", flush=True)

    def on_message(client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        if _TCP_QUICKACK is not None:
            client.socket().setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        try:
            envelope = json.loads(message.payload)
            reply_to = envelope["headers"]["replyTo"]
            ca_type = envelope["payload"]
        except (ValueError, KeyError, TypeError):
            return  # EVerest: "Invalid data: Deserialization failed.", and no reply
        if ca_type not in CA_TYPES:
            return
        body = json.dumps(ca_type in INSTALLED)
        client.publish(reply_to, body, 0)
        client.publish(reply_to, body, 0)  # EVerest's implementation answers booleans twice

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    # Plain paho from start to end, repeated in each of these programs on purpose: bench/common.py
    # imports evflow, whose import cost and memory would then be counted in this baseline.
    client.connect(args.host, args.port, keepalive=30)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
