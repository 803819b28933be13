"""Where the broker is and how to log in: broker URLs and :class:`BrokerConfig`. Pure, no sockets.

URLs: ``mqtt://host[:port]`` (1883), ``mqtts://host[:port]`` (8883, TLS), ``unix:///path/to/socket``.
Credentials never go in a URL: URLs end up in flow files and logs.
"""

from __future__ import annotations

import secrets
import ssl
import urllib.parse

import attrs

__all__ = ["BrokerAddress", "BrokerConfig", "BrokerUrlError", "WillMessage", "make_tls_context", "parse_broker_url"]

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class BrokerUrlError(ValueError):
    """A broker URL evflow cannot use; the message says what to write instead."""


@attrs.frozen
class BrokerAddress:
    scheme: str  # "mqtt", "mqtts" or "unix"
    host: str  # host name, IP address, or the socket path for "unix"
    port: int  # 0 for "unix"

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    @property
    def is_unix(self) -> bool:
        return self.scheme == "unix"

    def __str__(self) -> str:
        if self.is_unix:
            return f"unix://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    if not isinstance(url, str) or not url:
        raise BrokerUrlError("a broker URL is required, e.g. mqtt://localhost:1883")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BrokerUrlError(f"invalid broker URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts", "unix"):
        raise BrokerUrlError(
            f"unsupported broker URL scheme {parts.scheme!r} in {url!r}: use mqtt://, mqtts:// or unix://"
        )
    if parts.username is not None or parts.password is not None:
        raise BrokerUrlError(
            "credentials do not belong in the broker URL (it is logged and kept in flow files): "
            "set the username and password from the environment instead"
        )
    if parts.query or parts.fragment:
        raise BrokerUrlError(f"a broker URL takes no query or fragment: {url!r}")
    if scheme == "unix":
        if parts.netloc:
            raise BrokerUrlError(f"a unix socket URL is unix:///absolute/path, got {url!r}")
        if not parts.path.startswith("/") or parts.path == "/":
            raise BrokerUrlError(f"a unix socket URL needs an absolute path: {url!r}")
        return BrokerAddress("unix", parts.path, 0)
    if not parts.hostname:
        raise BrokerUrlError(f"the broker URL names no host: {url!r}")
    if parts.path not in ("", "/"):
        raise BrokerUrlError(f"an {scheme}:// URL takes no path: {url!r}")
    return BrokerAddress(scheme, parts.hostname, port if port is not None else _DEFAULT_PORTS[scheme])


def make_tls_context(
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    key_password: str | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client TLS context: the system's CAs or ``ca_file``; a client certificate for mutual TLS."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.check_hostname = check_hostname
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file, password=key_password)
    return context


def _new_client_id() -> str:
    # Unique per client: brokers disconnect (or, amqtt, silently mute) an older client with the same id.
    return f"evflow-{secrets.token_hex(6)}"


@attrs.frozen
class WillMessage:
    """What the broker publishes for this client when its connection is lost without a goodbye."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False


@attrs.frozen(kw_only=True)
class BrokerConfig:
    """Everything needed to connect to one broker. Secrets are kept out of ``repr``."""

    address: BrokerAddress = attrs.field(converter=lambda v: parse_broker_url(v) if isinstance(v, str) else v)
    client_id: str = attrs.field(factory=_new_client_id)
    keepalive: int = attrs.field(default=30)
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls_context: ssl.SSLContext | None = attrs.field(default=None, repr=False, eq=False)
    connect_timeout: float = 10.0
    # QoS 1 messages published and not yet acknowledged by the broker; beyond, publishing raises
    # OutgoingFull (mqtt out's window and the API clients' in-flight limits stay well below).
    max_unacknowledged: int = 1000
    # Bytes published and not yet taken by the kernel (the broker or the network is slow): at this
    # mark publishing raises OutgoingFull, and `publish` waits until half of it is free again.
    max_outgoing_bytes: int = 1024 * 1024
    # Larger incoming payloads are dropped (counted, logged): nothing of this API comes near it.
    max_payload: int = 256 * 1024
    # A subscription whose consumer falls behind keeps, beyond its buffer, a backlog of at most this
    # many messages and payload bytes; what does not fit is dropped, counted. The connection's reader
    # never waits for a consumer.
    max_held: int = 50_000
    max_held_bytes: int = 8 * 1024 * 1024
    # Reconnect delays: doubling from `reconnect_min` up to `reconnect_max` seconds, with jitter.
    reconnect_min: float = 0.1
    reconnect_max: float = attrs.field(default=30.0)
    will: WillMessage | None = None
    # False: the broker keeps this client's subscriptions and queued QoS 1/2 messages across
    # connections (needs a fixed client id).
    clean_session: bool = True
    # 4: MQTT 3.1.1 (what EVerest speaks); 3: MQTT 3.1 (Node-RED's compatibility mode).
    protocol_level: int = attrs.field(default=4, validator=attrs.validators.in_((3, 4)))

    @keepalive.validator
    def _check_keepalive(self, _attribute: object, value: int) -> None:
        if not 0 <= value <= 65535:
            raise ValueError(f"keepalive must be 0..65535 seconds, got {value}")

    @reconnect_max.validator
    def _check_reconnect(self, _attribute: object, value: float) -> None:
        if not 0 < self.reconnect_min <= value:
            raise ValueError(f"reconnect delays must be 0 < reconnect_min <= reconnect_max, got {self.reconnect_min} and {value}")

    @client_id.validator
    def _check_client_id(self, _attribute: object, value: str) -> None:
        if not value or len(value.encode()) > 65535 or "\0" in value:
            raise ValueError(f"invalid MQTT client id {value!r}")

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> BrokerConfig:
        return cls(address=parse_broker_url(url), **kwargs)  # type: ignore[arg-type]

    def effective_tls_context(self) -> ssl.SSLContext | None:
        """The TLS context to use: the given one, or the system default for ``mqtts://``."""
        if self.tls_context is not None:
            return self.tls_context
        if self.address.tls:
            return make_tls_context()
        return None
