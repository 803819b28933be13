"""The exceptions evflow raises across its layers: one hierarchy, no exception groups.

Each says what went wrong in words a gateway operator can act on; none carries a secret.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence


def leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:  # type: ignore[type-arg]
    """The exceptions inside ``group`` and its nested groups."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc


class EvflowError(Exception):
    """Base of every error evflow raises on purpose."""


# ---- broker connection -------------------------------------------------------------------------


class MqttError(EvflowError):
    """The MQTT connection failed or refused something."""


class ConnectError(MqttError):
    """The broker could not be reached, or refused the connection (the reason says which)."""


class SubscribeError(MqttError):
    """The broker refused a subscription (a failed SUBACK); ``topic_filter`` names it."""

    def __init__(self, topic_filter: str, reason: str) -> None:
        self.topic_filter = topic_filter
        super().__init__(f"the broker refused the subscription to {topic_filter!r}: {reason}")


class NotConnected(MqttError):
    """There is no broker connection now (not yet connected, lost, or closed)."""


class OutgoingFull(MqttError):
    """The connection holds as many bytes waiting to be sent as it may (``max_outgoing_bytes``):
    the broker or the network is not taking them. Wait for room, or drop the message."""


# ---- EVerest API requests ----------------------------------------------------------------------


class ApiError(EvflowError):
    """A request to an EVerest API did not produce a result."""


class RequestTimeout(ApiError):
    """No reply within the deadline. EVerest sends none for a request it cannot decode."""

    def __init__(self, operation: str, timeout: float) -> None:
        self.operation = operation
        self.timeout = timeout
        super().__init__(
            f"no reply to {operation} within {timeout:g} s (EVerest does not answer requests it cannot decode)"
        )


class InvalidRequest(ApiError):
    """The request's payload does not fit the operation; ``problems`` list each with its JSON path."""

    def __init__(self, operation: str, problems: Sequence[str]) -> None:
        self.operation = operation
        self.problems = tuple(problems)
        super().__init__(f"invalid {operation} request: {'; '.join(self.problems)}")


class InvalidReply(ApiError):
    """EVerest's reply could not be decoded; ``problems`` list each with its JSON path."""

    def __init__(self, operation: str, problems: Sequence[str]) -> None:
        self.operation = operation
        self.problems = tuple(problems)
        super().__init__(f"invalid reply to {operation}: {'; '.join(self.problems)}")


class InvalidPayload(EvflowError):
    """A message on a subscribed topic does not decode; ``problems`` list each with its JSON path."""

    def __init__(self, topic: str, problems: Sequence[str]) -> None:
        self.topic = topic
        self.problems = tuple(problems)
        super().__init__(f"invalid payload on {topic}: {'; '.join(self.problems)}")


# ---- discovery (the entrypoint API) ------------------------------------------------------------


class DiscoveryError(EvflowError):
    """Discovery did not name exactly one module: none answered, or several did (``module_ids``)."""

    def __init__(self, message: str, api_type: str | None = None, module_ids: Sequence[str] = ()) -> None:
        self.api_type = api_type
        self.module_ids = tuple(module_ids)
        super().__init__(message)
