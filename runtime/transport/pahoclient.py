"""paho-mqtt's side: its client set up for evflow, and what its callbacks report turned into words."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ..broker import BrokerConfig

if TYPE_CHECKING:
    from .wire import Wire

__all__ = ["LastError", "describe_disconnect", "make_paho"]


class LastError(logging.Handler):
    """Keeps paho's last error line: paho logs why a socket failed (an SSL alert, say), returns only
    a generic code, and calls on_disconnect with "Unspecified error"."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


def make_paho(config: BrokerConfig, callbacks: Any) -> tuple[paho.Client, LastError]:
    """paho's client for ``config``, its callbacks bound to ``callbacks`` (the MqttClient), and the
    handler that keeps paho's last error line."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=config.client_id,
        clean_session=config.clean_session,
        # EVerest and the brokers around it speak 3.1.1; amqtt and NATS refuse MQTT 5.
        protocol=MQTTProtocolVersion.MQTTv31 if config.protocol_level == 3 else MQTTProtocolVersion.MQTTv311,
        transport="unix" if config.address.is_unix else "tcp",
        reconnect_on_failure=False,
    )
    client.connect_timeout = config.connect_timeout
    # Every QoS 1 message goes to the wire at once (no paho-side queue outside the byte count);
    # evflow counts those waiting for their PUBACK itself (max_unacknowledged).
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    # evflow acknowledges a QoS 1 message once it is routed, from inside on_message: paho then
    # queues the PUBACK, and the writer sends those of a whole read burst at once.
    client.manual_ack_set(True)
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.will is not None:
        will = config.will
        client.will_set(will.topic, will.payload, will.qos, will.retain)
    context = config.effective_tls_context()
    if context is not None:
        client.tls_set_context(context)
        # The context decides about host names; stop paho from checking again (its own check uses
        # ssl.match_hostname, gone since Python 3.12).
        client.tls_insecure_set(not context.check_hostname)
    client.on_connect = callbacks._on_connect
    client.on_disconnect = callbacks._on_disconnect
    client.on_message = callbacks._on_message
    client.on_subscribe = callbacks._on_subscribe
    # on_publish is set only while a PUBACK is awaited: with it set, paho builds an MQTT 5
    # reason code and properties object for every QoS 0 message it writes.
    client.on_socket_close = callbacks._on_socket_close
    # A logger of this client's own, outside logging's registry, that formats nothing below ERROR.
    paho_log = logging.Logger("evflow.mqtt.paho", logging.ERROR)
    last_error = LastError()
    paho_log.addHandler(last_error)
    client.enable_logger(paho_log)
    return client, last_error


def describe_disconnect(wire: Wire | None, paho_error: str | None, reason: Any) -> str:
    """Why a connection ended, in words: what the socket saw, else paho's own error line."""
    if wire is not None and wire.failure:
        return wire.failure
    if paho_error and reason.is_failure:
        return paho_error
    name = reason.getName() if hasattr(reason, "getName") else str(reason)
    if name == "Keep alive timeout":
        return "the broker did not answer within the keepalive time"
    if name == "Success":
        return "disconnected"
    if name == "Unspecified error":
        return "the connection ended"
    return name
