"""The throughput floor: plain paho-mqtt with its own network loop, no engine.

Subscribes to the input topic, parses each payload as JSON, keeps the numbers >= 1000 and publishes
them (serialised again, as a flow's `mqtt out` does) to the output topic, at the same QoS both ways.
Whatever evflow adds on top of this is what its engine costs.

    python bench/paho_forwarder.py --port 1883 --qos 1 --in-topic a/b --out-topic bench/out
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0)
    parser.add_argument("--in-topic", required=True)
    parser.add_argument("--out-topic", required=True)
    args = parser.parse_args()

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    out_topic, qos = args.out_topic, args.qos

    def on_connect(client: paho.Client, _userdata: object, _flags: object, reason: object, _props: object) -> None:
        client.subscribe(args.in_topic, qos)

    def on_message(client: paho.Client, _userdata: object, message: paho.MQTTMessage) -> None:
        try:
            value = json.loads(message.payload)
        except ValueError:
            return
        if type(value) in (int, float) and value >= 1000:
            client.publish(out_topic, json.dumps(value), qos)

    client.on_connect = on_connect
    client.on_message = on_message
    # SIGTERM from the harness: leave the loop and exit cleanly.
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    # Plain paho from start to end, repeated in each of these programs on purpose: bench/common.py
    # imports evflow, whose import cost and memory would then be counted in this baseline.
    client.connect(args.host, args.port, keepalive=30)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
