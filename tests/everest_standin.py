"""An EVerest stand-in for tests: a plain paho client (paho's own thread) answering as SPEC.md says.

It shares no code with evflow's transport or protocol core, so a bug there cannot hide itself. Defaults
reproduce EVerest's implementation: boolean replies published twice, the verify location as raw text
naming the bundle file (empty when none is installed), no reply to a request it cannot decode.
Everything it receives is handed to the trio test through a memory channel.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import attrs
import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import CallbackAPIVersion

CA_TYPES = {"V2G", "MO", "CSMS", "MF"}
LEAF_TYPES = {"CSMS", "V2G", "MF", "MO"}


@attrs.frozen
class Received:
    topic: str
    payload: bytes


def default_leaf_answer(request: dict[str, Any]) -> dict[str, Any]:
    if request["certificate_type"] not in ("CSMS", "V2G"):
        return {"status": "Rejected"}
    info: dict[str, Any] = {
        "key": "/etc/everest/certs/client/cso/SECC_LEAF.key",
        "certificate_count": 3,
        "certificate": "/etc/everest/certs/client/cso/CPO_CERT_CHAIN.pem",
        "certificate_single": "/etc/everest/certs/client/cso/SECC_LEAF.pem",
        "password": "leaf-key-secret",
        "vendor_extension": {"ignored": True},
    }
    if request["include_ocsp"]:
        info["ocsp"] = [
            {"hash": {"hash_algorithm": "SHA256", "issuer_name_hash": "ab" * 32, "issuer_key_hash": "cd" * 32,
                      "serial_number": "1f"}}
        ]
    return {"status": "Accepted", "info": info}


class EverestStandIn:
    def __init__(
        self,
        host: str,
        port: int,
        module_id: str,
        *,
        external_prefix: str = "",
        installed: frozenset[str] = frozenset({"V2G", "CSMS"}),
        strict: bool = False,
        answer: bool = True,
        leaf_answer: Callable[[dict[str, Any]], dict[str, Any]] = default_leaf_answer,
        reply_delay: float = 0.0,
    ) -> None:
        self.prefix = external_prefix
        self.base = f"{external_prefix}everest_api/1/evse_security_consumer/{module_id}"
        self.installed = installed
        self.strict = strict
        self.answer = answer
        self.leaf_answer = leaf_answer
        self.reply_delay = reply_delay
        self._host, self._port = host, port
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"everest-standin-{id(self)}",
                                   protocol=paho.MQTTv311)
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        # Subscribe on every (re)connect, as EVerest does: paho keeps no subscriptions across them.
        self._client.on_connect = lambda *_: self._client.subscribe(f"{self.base}/m2e/#", qos=0)
        self._token: trio.lowlevel.TrioToken | None = None
        self._send, self.received = trio.open_memory_channel[Received](10_000)

    async def __aenter__(self) -> EverestStandIn:
        self._token = trio.lowlevel.current_trio_token()
        self._client.connect(self._host, self._port)
        self._client.loop_start()
        ok = await trio.to_thread.run_sync(self._subscribed.wait, 5.0)
        assert ok, "the stand-in was not subscribed within 5 s"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._client.disconnect()
        await trio.to_thread.run_sync(self._client.loop_stop)

    def heartbeat(self, beat_id: int) -> None:
        self._client.publish(f"{self.base}/e2m/heartbeat", json.dumps(beat_id), qos=0)

    def publish_raw(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=0)

    # paho's thread from here on
    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        assert self._token is not None
        try:
            trio.from_thread.run_sync(self._send.send_nowait, Received(message.topic, message.payload),
                                      trio_token=self._token)
        except trio.RunFinishedError:
            return  # the test is over
        operation = message.topic.rsplit("/", 1)[-1]
        try:
            envelope = json.loads(message.payload)
            reply_to = envelope.get("headers", {}).get("replyTo")
            payload = envelope["payload"]
        except (ValueError, KeyError, AttributeError, TypeError):
            return  # EVerest: "Invalid data: Deserialization failed.", and no reply
        if not self.answer or reply_to is None:
            return
        if self.reply_delay:
            timer = threading.Timer(self.reply_delay, self._answer, (operation, self.prefix + reply_to, payload))
            timer.daemon = True
            timer.start()
        else:
            self._answer(operation, self.prefix + reply_to, payload)

    def _answer(self, operation: str, reply_topic: str, payload: Any) -> None:
        if operation == "is_ca_certificate_installed":
            if not isinstance(payload, str) or payload not in CA_TYPES:
                return
            body = json.dumps(payload in self.installed)
            self._client.publish(reply_topic, body)
            if not self.strict:
                self._client.publish(reply_topic, body)  # EVerest's implementation answers twice
        elif operation == "get_leaf_certificate_info":
            if not isinstance(payload, dict) or payload.get("certificate_type") not in LEAF_TYPES \
                    or payload.get("encoding") not in ("PEM", "DER") or type(payload.get("include_ocsp")) is not bool:
                return
            self._client.publish(reply_topic, json.dumps(self.leaf_answer(payload)))
        elif operation == "get_verify_location":
            if not isinstance(payload, str) or payload not in CA_TYPES:
                return
            if self.strict:
                self._client.publish(reply_topic, json.dumps(f"/etc/everest/certs/ca/{payload.lower()}"))
            elif payload in self.installed:
                self._client.publish(reply_topic, f"/etc/everest/certs/ca/{payload.lower()}/{payload}_ROOT_CA.pem")
            else:
                self._client.publish(reply_topic, b"")
