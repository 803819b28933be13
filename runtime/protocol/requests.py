"""Request/reply correlation without correlation ids: one reply topic per request.

EVerest's replies carry nothing that names the request, so each request gets its own reply topic under
a per-client prefix (``{reply_prefix}/{n}``); the client subscribes once to ``{reply_prefix}/+`` before
its first request. A reply on a topic with no open request is dropped and counted: a duplicate (EVerest
sends boolean replies twice), a late one (its request was abandoned), or unknown.
"""

from __future__ import annotations

import bisect
import collections
import enum
from typing import Any

import attrs

from ..codec import CodecError
from ..errors import InvalidReply
from .api import Operation
from .topics import SAFE_LEVEL, TopicError, validate_external_prefix

__all__ = ["LATENCY_BUCKETS", "Dropped", "DropReason", "LatencyHistogram", "OperationStats", "PendingRequest", "Reply",
           "ReplyFailed", "RequestStats", "RequestTable"]

# Upper bounds (seconds) of the request latency buckets: EVerest answers in about a millisecond on
# a gateway, its request timeout is seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@attrs.frozen(eq=False)
class PendingRequest:
    """An open request: its operation and the topic its reply will arrive on (prefix included)."""

    operation: Operation[Any, Any]
    reply_topic: str


@attrs.frozen
class Reply:
    """The decoded answer to ``request``."""

    request: PendingRequest
    value: Any


@attrs.frozen
class ReplyFailed:
    """An answer to ``request`` arrived but did not decode."""

    request: PendingRequest
    error: InvalidReply


class DropReason(enum.StrEnum):
    DUPLICATE = "duplicate"  # its request was answered already
    LATE = "late"  # its request was abandoned (timed out, cancelled, connection lost)
    UNKNOWN = "unknown"  # no request of this client ever used that topic, or it was forgotten


@attrs.frozen
class Dropped:
    topic: str
    reason: DropReason


@attrs.define
class RequestStats:
    sent: int = 0
    answered: int = 0
    invalid: int = 0
    abandoned: int = 0
    duplicate: int = 0
    late: int = 0
    unknown: int = 0


@attrs.define
class LatencyHistogram:
    """How long answered requests took: ``counts[i]`` of them took at most ``LATENCY_BUCKETS[i]``
    seconds and more than the bucket before; the last count, more than every bound."""

    counts: list[int] = attrs.field(factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)


@attrs.define
class OperationStats:
    """One operation's requests: the latency of the answered ones, and the timed-out ones."""

    latency: LatencyHistogram = attrs.field(factory=LatencyHistogram)
    timeouts: int = 0


class _Closed(enum.Enum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"


class RequestTable:
    """Allocates reply topics and matches replies to open requests.

    ``reply_prefix`` is the full topic prefix the client listens under (EVerest's external prefix
    included). Memory is bounded: at most ``max_open`` open requests (the client's in-flight limit) and
    the ``remember_closed`` most recently closed ones, to tell duplicates and late replies apart.
    """

    def __init__(self, reply_prefix: str, *, max_open: int = 1024, remember_closed: int = 1024) -> None:
        validate_external_prefix(reply_prefix)
        if reply_prefix.endswith("/"):
            raise TopicError(f"reply prefix must not end with '/': {reply_prefix!r}")
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.reply_prefix = reply_prefix
        self.max_open = max_open
        self._remember_closed = remember_closed
        self._next_number = 0
        self._open: dict[str, PendingRequest] = {}
        self._closed: collections.OrderedDict[str, _Closed] = collections.OrderedDict()
        self.stats = RequestStats()

    @property
    def reply_filter(self) -> str:
        """The one subscription that receives every reply of this table."""
        return f"{self.reply_prefix}/+"

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def closed_count(self) -> int:
        """Closed requests remembered (at most ``remember_closed``)."""
        return len(self._closed)

    def open(self, operation: Operation[Any, Any]) -> PendingRequest:
        """A new request with a reply topic no other request of this table has used."""
        if len(self._open) >= self.max_open:
            raise RuntimeError(f"more than {self.max_open} requests open; the client must bound them")
        number = self._next_number
        self._next_number += 1
        request = PendingRequest(operation, f"{self.reply_prefix}/{number}")
        self._open[request.reply_topic] = request
        self.stats.sent += 1
        return request

    def abandon(self, request: PendingRequest) -> None:
        """The client gave up on ``request``; a reply that still comes is counted as late."""
        if self._open.pop(request.reply_topic, None) is not None:
            self.stats.abandoned += 1
            self._remember(request.reply_topic, _Closed.ABANDONED)

    def abandon_all(self) -> list[PendingRequest]:
        """Close every open request (connection lost); returns them so the client can fail each."""
        requests = list(self._open.values())
        for request in requests:
            self.abandon(request)
        return requests

    def receive(self, topic: str, payload: bytes) -> Reply | ReplyFailed | Dropped:
        request = self._open.pop(topic, None)
        if request is None:
            return self._dropped(topic)
        self._remember(topic, _Closed.ANSWERED)
        try:
            value = request.operation.decode_reply(payload)
        except CodecError as exc:
            self.stats.invalid += 1
            return ReplyFailed(request, InvalidReply(request.operation.name, exc.problems))
        self.stats.answered += 1
        return Reply(request, value)

    def _dropped(self, topic: str) -> Dropped:
        closed = self._closed.get(topic)
        if closed is _Closed.ANSWERED:
            self.stats.duplicate += 1
            return Dropped(topic, DropReason.DUPLICATE)
        if closed is _Closed.ABANDONED:
            self.stats.late += 1
            return Dropped(topic, DropReason.LATE)
        self.stats.unknown += 1
        return Dropped(topic, DropReason.UNKNOWN)

    def _remember(self, topic: str, how: _Closed) -> None:
        self._closed[topic] = how
        if len(self._closed) > self._remember_closed:
            self._closed.popitem(last=False)


def reply_prefix_for(external_prefix: str, client_token: str, base: str = "evflow/reply") -> str:
    """The full reply prefix of one client: ``{external_prefix}{base}/{client_token}``.

    ``client_token`` keeps two clients on one broker apart; it is one topic level of ``[A-Za-z0-9_-]``
    so that every broker accepts it.
    """
    if not SAFE_LEVEL.fullmatch(client_token):
        raise TopicError(f"client token must match [A-Za-z0-9_-]+: {client_token!r}")
    return f"{external_prefix}{base}/{client_token}"
