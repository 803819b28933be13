"""``mqtt-broker``: one shared MQTT connection, referenced by id from other nodes."""

from __future__ import annotations

import attrs
import trio

from evflow.runtime.broker import BrokerConfig, BrokerUrlError, make_tls_context, parse_broker_url
from evflow.runtime.errors import ConnectError
from evflow.runtime.nodeapi import ConfigNode, ConfigWarning, field_check, number_range, run_service, secret
from evflow.runtime.transport import MqttClient


@attrs.frozen(kw_only=True)
class MqttBrokerConfig:
    # mqtt://host:port, mqtts://host:port (TLS) or unix:///path/to/socket
    broker: str = attrs.field(validator=field_check(parse_broker_url))
    # Default: a unique id per connection (brokers drop or mute a second client with the same id).
    client_id: str | None = None
    keepalive: int = attrs.field(default=30, validator=number_range(0, 65535))
    username: str | None = secret()
    password: str | None = secret()
    # TLS (mqtts://): CA file (default: the system's), client certificate and key for mutual TLS.
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


class MqttBroker(ConfigNode[MqttBrokerConfig]):
    """A connection to an MQTT broker, shared by every node that names this one."""

    type = "mqtt-broker"
    Config = MqttBrokerConfig

    @classmethod
    def check(cls, config: MqttBrokerConfig) -> list[ConfigWarning]:
        tls_files = config.ca_file or config.cert_file or config.key_file
        if tls_files and not parse_broker_url(config.broker).tls:
            raise ValueError("TLS files are set but the broker URL is not mqtts:// @ $.broker")
        if config.key_file and not config.cert_file:
            raise ValueError("key_file needs cert_file @ $.cert_file")
        if config.password is not None and config.username is None:
            raise ValueError("a password needs a username @ $.username")
        return []

    def _broker_config(self) -> BrokerConfig:
        c = self.config
        options: dict[str, object] = {"keepalive": c.keepalive, "username": c.username, "password": c.password,
                                      "connect_timeout": c.connect_timeout, "max_payload": c.max_payload,
                                      "max_held": c.max_held, "max_held_bytes": c.max_held_bytes,
                                      "max_outgoing_bytes": c.max_outgoing_bytes,
                                      "reconnect_max": c.reconnect_max_delay}
        if c.client_id:
            options["client_id"] = c.client_id
        if parse_broker_url(c.broker).tls:
            options["tls_context"] = make_tls_context(
                ca_file=c.ca_file, cert_file=c.cert_file, key_file=c.key_file,
                key_password=c.key_password, check_hostname=c.check_hostname,
            )
        return BrokerConfig.from_url(c.broker, **options)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            config = self._broker_config()
        except (OSError, ValueError) as exc:  # unreadable TLS files, a wrong key password
            raise ConnectError(f"TLS set-up failed: {exc}") from None
        self.mqtt = MqttClient(config)
        await run_service(self.mqtt.run, task_status=task_status)  # connected, or ConnectError

    async def close(self) -> None:
        await self.mqtt.aclose()

    def stats(self) -> dict[str, int]:
        return attrs.asdict(self.mqtt.stats) if hasattr(self, "mqtt") else {}


__all__ = ["MqttBroker", "MqttBrokerConfig", "BrokerUrlError"]
