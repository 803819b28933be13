"""``mqtt-broker``: one shared MQTT connection, referenced by id from other nodes; Node-RED's config
node of the same name, read as Node-RED 4 writes it.

From Node-RED: ``broker`` (a host name, or a URL ``mqtt://``/``mqtts://``), ``port``, ``usetls`` and
``tls`` (a ``tls-config`` node), ``clientid``, ``keepalive``, ``cleansession``, ``protocolVersion``
(3 and 4; 5 runs as 3.1.1, with a warning), ``compatmode``, the birth, close and will messages
(``birthTopic``/``birthPayload``/``birthQos``/``birthRetain``…), and the credentials ``user`` and
``password`` (from Node-RED's decrypted ``flows_cred.json``, or ``${NAME}`` in the flow file, never a
literal). ``autoConnect: false`` is refused: evflow connects when the flow starts. MQTT 5 properties
(``birthMsg``, ``userProps``, ``sessionExpiry``) are accepted and not sent.

evflow's own: ``unix:///path`` brokers, TLS from files (``ca_file``, ``cert_file``, ``key_file``,
``key_password``, ``check_hostname``), and the bounds of what the connection holds (``max_payload``,
``max_held``, ``max_held_bytes``, ``max_outgoing_bytes``), ``connect_timeout``, ``reconnect_max_delay``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import attrs
import trio

from evflow.runtime.broker import BrokerConfig, BrokerUrlError, WillMessage, make_tls_context, parse_broker_url
from evflow.runtime.errors import ConnectError, NotConnected
from evflow.runtime.nodeapi import (
    ConfigNode,
    ConfigWarning,
    LooseBool,
    LooseInt,
    LooseStr,
    Readiness,
    number_range,
    ref,
    renamed,
    run_service,
    secret,
)
from evflow.runtime.protocol.topics import validate_publish_topic
from evflow.runtime.transport import MqttClient


@attrs.frozen(kw_only=True)
class BrokerCredentials:
    # user name to log in with
    user: str | None = None
    # ${NAME} in a flow file; as it is in a decrypted flows_cred.json
    password: str | None = secret()


@attrs.frozen(kw_only=True)
class MqttBrokerConfig:
    # host name or address (with `port`), or a URL: mqtt://host:port, mqtts://host:port, unix:///path
    broker: str
    # with a host name in `broker`: the port (default 1883, 8883 with TLS)
    port: LooseStr = ""
    # connect with TLS (a host name in `broker`); `tls` names a tls-config node with the files
    usetls: LooseBool = False
    tls: str | None = ref("tls-config", default=None, converter=lambda v: v or None)
    # client id; empty: a unique one per connection (brokers drop or mute a second client with the same id)
    clientid: str = ""
    autoConnect: LooseBool = True
    # seconds of silence before a ping
    keepalive: LooseInt = attrs.field(default=60, validator=number_range(0, 65535))
    # false: the broker keeps the session (subscriptions, queued messages) across connections; needs a clientid
    cleansession: LooseBool = True
    autoUnsubscribe: LooseBool = True
    # 4: MQTT 3.1.1; 3: MQTT 3.1; 5 runs as 3.1.1 (MQTT 5 properties are not sent)
    protocolVersion: LooseInt = 4
    compatmode: LooseBool = False
    verifyservercert: LooseBool = False
    # published on every connect
    birthTopic: str = ""
    birthPayload: str = ""
    birthQos: LooseStr = "0"
    birthRetain: LooseBool = False
    birthMsg: dict[str, Any] = attrs.field(factory=dict)
    # published before a clean disconnect
    closeTopic: str = ""
    closePayload: str = ""
    closeQos: LooseStr = "0"
    closeRetain: LooseBool = False
    closeMsg: dict[str, Any] = attrs.field(factory=dict)
    # published by the broker when the connection is lost without a goodbye
    willTopic: str = ""
    willPayload: str = ""
    willQos: LooseStr = "0"
    willRetain: LooseBool = False
    willMsg: dict[str, Any] = attrs.field(factory=dict)
    userProps: Any = ""
    sessionExpiry: LooseStr = ""
    # Node-RED's credentials: {"user": ..., "password": "${NAME}"}, or merged from flows_cred.json
    credentials: BrokerCredentials | None = None
    # evflow's names for the log-in (as ${NAME}); Node-RED's `credentials` is the same
    username: str | None = secret()
    password: str | None = secret()
    # TLS from files (mqtts:// or usetls): CA file (default: the system's), client certificate and key
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = secret()
    check_hostname: bool = True
    connect_timeout: float = attrs.field(default=10.0, validator=number_range(above=0))
    # larger incoming payloads are dropped, counted and logged
    max_payload: int = attrs.field(default=256 * 1024, validator=number_range(1))
    # a subscriber that falls behind keeps, beyond its queue, at most this many messages and payload
    # bytes; more are dropped, counted
    max_held: int = attrs.field(default=50_000, validator=number_range(1))
    max_held_bytes: int = attrs.field(default=8 * 1024 * 1024, validator=number_range(1))
    # bytes published and not yet sent (a slow or stalled broker); at this mark `mqtt out` waits or
    # drops (its `overflow`), and other publishers wait
    max_outgoing_bytes: int = attrs.field(default=1024 * 1024, validator=number_range(1024))
    # seconds between reconnect attempts at most (they double from 0.1 s, with jitter)
    reconnect_max_delay: float = attrs.field(default=30.0, validator=number_range(0.1))
    client_id: str | None = renamed("write Node-RED's `clientid`")


_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")


def broker_url(config: MqttBrokerConfig) -> str:
    """The URL Node-RED builds: ``broker`` itself when it is a URL, else from ``usetls``, host and port."""
    broker = config.broker.strip()
    if "${" in broker or "$(" in broker:
        raise BrokerUrlError(f"{broker!r} holds an environment reference that was not substituted: one is "
                             "substituted only when it is the whole value (as in Node-RED), e.g. \"${MQTT_HOST}\"")
    if "://" in broker:
        if broker.split("://", 1)[0].lower() in ("ws", "wss"):
            raise BrokerUrlError(f"MQTT over WebSockets ({broker!r}) is not supported by evflow: use mqtt:// or mqtts://")
        parse_broker_url(broker)
        return broker
    if not _is_host(broker):
        raise BrokerUrlError(f"{broker!r} is not a host name or address")
    port = str(config.port).strip()
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise BrokerUrlError(f"port {config.port!r} is not a port number (1-65535)")
    host = f"[{broker}]" if ":" in broker else broker
    return f"{'mqtts' if config.usetls else 'mqtt'}://{host}:{port or (8883 if config.usetls else 1883)}"


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return _HOST_NAME.fullmatch(text) is not None


def _qos(value: Any, where: str) -> int:
    text = str(value).strip() or "0"
    if text not in ("0", "1", "2"):
        raise ValueError(f"QoS must be 0, 1 or 2, got {value!r} @ $.{where}")
    return int(text)


class MqttBroker(ConfigNode[MqttBrokerConfig]):
    """A connection to an MQTT broker, shared by every node that names this one."""

    type = "mqtt-broker"
    Config = MqttBrokerConfig

    @classmethod
    def check(cls, config: MqttBrokerConfig) -> list[ConfigWarning]:
        try:
            url = broker_url(config)
        except BrokerUrlError as exc:
            raise ValueError(f"{exc} @ $.broker") from None
        warnings: list[ConfigWarning] = []
        tls_files = config.ca_file or config.cert_file or config.key_file
        if tls_files and not parse_broker_url(url).tls:
            raise ValueError("TLS files are set but the broker URL is not mqtts:// (nor usetls) @ $.broker")
        if config.key_file and not config.cert_file:
            raise ValueError("key_file needs cert_file @ $.cert_file")
        if config.password is not None and config.username is None:
            raise ValueError("a password needs a username @ $.username")
        if config.credentials is not None and config.username is not None:
            raise ValueError("give the log-in once: `credentials` (Node-RED's) or `username`/`password` @ $.username")
        if not config.autoConnect:
            raise ValueError("autoConnect false (connecting on an action message) is not supported: evflow "
                             "connects when the flow starts @ $.autoConnect")
        if config.protocolVersion not in (3, 4, 5):
            raise ValueError(f"protocolVersion must be 3, 4 or 5, got {config.protocolVersion} @ $.protocolVersion")
        if config.protocolVersion == 5:
            warnings.append(ConfigWarning("$.protocolVersion", "MQTT 5 is not supported: evflow connects with "
                                          "MQTT 3.1.1, and MQTT 5 properties are not sent"))
        if not config.cleansession and not config.clientid:
            warnings.append(ConfigWarning("$.cleansession", "a session kept by the broker needs a fixed clientid: "
                                          "a clean session is used (as Node-RED does)"))
        for kind in ("birth", "close", "will"):
            topic = getattr(config, f"{kind}Topic")
            _qos(getattr(config, f"{kind}Qos"), f"{kind}Qos")
            if topic:
                try:
                    validate_publish_topic(topic)
                except ValueError as exc:
                    raise ValueError(f"{exc} @ $.{kind}Topic") from None
        return warnings

    def _broker_config(self) -> BrokerConfig:
        c = self.config
        url = broker_url(c)
        username, password = c.username, c.password
        if c.credentials is not None:
            username, password = c.credentials.user or None, c.credentials.password
        options: dict[str, object] = {"keepalive": c.keepalive, "username": username, "password": password,
                                      "connect_timeout": c.connect_timeout, "max_payload": c.max_payload,
                                      "max_held": c.max_held, "max_held_bytes": c.max_held_bytes,
                                      "max_outgoing_bytes": c.max_outgoing_bytes,
                                      "reconnect_max": c.reconnect_max_delay,
                                      "clean_session": c.cleansession or not c.clientid,
                                      "protocol_level": 3 if c.protocolVersion == 3 or c.compatmode else 4}
        if c.clientid:
            options["client_id"] = c.clientid
        if c.willTopic:
            options["will"] = WillMessage(c.willTopic, c.willPayload.encode(), _qos(c.willQos, "willQos"), c.willRetain)
        if parse_broker_url(url).tls:
            tls = self.context.config_node(c.tls).config if c.tls else None  # type: ignore[attr-defined]
            options["tls_context"] = make_tls_context(
                ca_file=c.ca_file or (tls.ca or None if tls else None),
                cert_file=c.cert_file or (tls.cert or None if tls else None),
                key_file=c.key_file or (tls.key or None if tls else None),
                key_password=c.key_password or (tls.credentials.passphrase if tls and tls.credentials else None),
                check_hostname=c.check_hostname if tls is None else tls.verifyservercert,
            )
        return BrokerConfig.from_url(url, **options)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            config = self._broker_config()
        except (OSError, ValueError) as exc:  # unreadable TLS files, a wrong key password
            raise ConnectError(f"TLS set-up failed: {exc}") from None
        self.mqtt = MqttClient(config)
        if not self.config.birthTopic:
            await run_service(self.mqtt.run, task_status=task_status)  # connected, or ConnectError
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(run_service, self.mqtt.run)
            task_status.started()
            await self._publish_births()

    async def _publish_births(self) -> None:
        """Node-RED's birth message, on every connect (the first included)."""
        c = self.config
        qos = _qos(c.birthQos, "birthQos")
        while True:
            await self.mqtt.wait_connected()
            try:
                await self.mqtt.publish(c.birthTopic, c.birthPayload.encode(), qos, c.birthRetain)
            except NotConnected:
                self.context.log.info("birth message not sent: the connection was lost again; sent on the next")
            await self.mqtt.wait_connection_lost()

    async def close(self) -> None:
        c = self.config
        if c.closeTopic and self.mqtt.connected:
            with trio.move_on_after(1) as waited:  # a goodbye, not a reason to hold the stop
                try:
                    await self.mqtt.publish(c.closeTopic, c.closePayload.encode(), _qos(c.closeQos, "closeQos"),
                                            c.closeRetain)
                except NotConnected:
                    self.context.log.info("close message not sent: the connection was lost")
            if waited.cancelled_caught:
                self.context.log.warning("close message not acknowledged within 1 s")
        await self.mqtt.aclose()

    def stats(self) -> dict[str, int]:
        return attrs.asdict(self.mqtt.stats) if hasattr(self, "mqtt") else {}

    def readiness(self) -> Readiness:
        mqtt = getattr(self, "mqtt", None)
        if mqtt is None:
            return Readiness(False, "not started")
        if mqtt.connected:
            return Readiness(True, since=mqtt.state_since)
        return Readiness(False, mqtt.down_reason, mqtt.state_since)


__all__ = ["BrokerCredentials", "BrokerUrlError", "MqttBroker", "MqttBrokerConfig", "broker_url"]
