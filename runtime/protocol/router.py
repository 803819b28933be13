"""Local subscribers and the broker's subscriptions of one client connection: sans-IO.

A :class:`Route` is one local subscriber of a topic filter. The :class:`Router` decides which
SUBSCRIBE and UNSUBSCRIBE packets the connection sends, which routes a received message goes to,
and when a subscriber's wait for its SUBACK is over. It never touches a socket: the transport feeds
it events (a route added or removed, a SUBACK, the connection lost or back) and carries out what it
returns.

The rules, each for a reason the MQTT 3.1.1 brokers around EVerest give:

* **Every new route sends a SUBSCRIBE for its own filter**, even when a wider filter of this client
  covers it: the broker sends a SUBSCRIBE's retained messages only in answer to that SUBSCRIBE.
  A route waits for *its own* SUBACK, never for one another route's request may replace.
* **A filter that a granted wider one covers is unsubscribed again** once its SUBACK is in, and its
  routes are served by the wider one: amqtt and NATS deliver a message once per matching broker
  subscription (mosquitto once per client), so lasting overlaps would duplicate every message. When
  the wider one was granted a lower QoS, it is subscribed again at the narrower one's QoS first.
  Filters that overlap without one covering the other (``a/+/c`` and ``a/b/+``) stay as they are:
  MQTT 3.1.1 has no way to tell which subscription a copy came for.
* **A filter's QoS is the highest its routes ask for**: a SUBSCRIBE at a higher QoS replaces the
  broker's subscription; when a route leaves, nothing is sent (a higher QoS than needed does no
  harm), and later SUBSCRIBEs of the filter ask for what the remaining routes need.
* **A retained message reaches each route once**: a retained copy (retain flag set, which brokers
  set only on messages sent for a new subscription) goes to a route only if it has not had a
  message on that topic since its SUBSCRIBE, so another route's SUBSCRIBE, or a second filter of a
  restoring SUBSCRIBE, does not repeat it. A wildcard route remembers up to
  :data:`MAX_REMEMBERED_TOPICS` topics for this; beyond that, such a copy may reach it again.
* **On reconnect** (clean session) every broker filter is subscribed again in one request, and
  routes take the retained messages once more: they may have missed updates meanwhile.

The table is optimistic: it describes the broker once it has processed every packet sent so far
(brokers process a client's packets in order), so a SUBSCRIBE after an UNSUBSCRIBE of the same
filter needs no special case.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from .topics import compile_filter, filter_covers, validate_filter

__all__ = ["MAX_REMEMBERED_TOPICS", "Route", "RouteState", "Router", "SubackOutcome", "SubscribeRequest"]

# Topics a wildcard route remembers having received, to keep repeated retained copies from it.
MAX_REMEMBERED_TOPICS = 1024


class RouteState(enum.Enum):
    PENDING = "pending"  # added, its SUBACK not in yet (messages already reach it)
    ACTIVE = "active"
    CLOSED = "closed"  # removed, refused by the broker, or its request lost with the connection


@attrs.define(eq=False, slots=True)
class Route:
    """A local subscriber of ``topic_filter`` at ``qos``; ``owner`` is the transport's object."""

    topic_filter: str
    qos: int
    owner: Any = None
    state: RouteState = RouteState.PENDING
    # The broker filter whose subscription brings this route its messages (its own, or a wider one).
    broker_filter: str | None = None
    wildcard: bool = attrs.field(init=False)
    matches: Callable[[str], bool] = attrs.field(init=False, repr=False)
    # Whether an exact route had a message since its SUBSCRIBE; a wildcard route's topics that had.
    settled: bool = attrs.field(init=False, default=False)
    seen: set[str] = attrs.field(init=False, factory=set, repr=False)

    def __attrs_post_init__(self) -> None:
        validate_filter(self.topic_filter)
        if self.qos not in (0, 1, 2):
            raise ValueError(f"QoS must be 0, 1 or 2, got {self.qos}")
        self.wildcard = "+" in self.topic_filter or "#" in self.topic_filter
        self.matches = compile_filter(self.topic_filter)


@attrs.define(eq=False)
class SubscribeRequest:
    """One SUBSCRIBE packet: its filters, and the routes that wait for its SUBACK."""

    filters: tuple[tuple[str, int], ...]
    routes: list[Route]
    restore: bool = False
    # The table entries it counts as in flight (an entry may leave the table meanwhile).
    _entries: list[_BrokerFilter] = attrs.field(factory=list, repr=False)


@attrs.frozen
class SubackOutcome:
    ready: tuple[Route, ...] = ()  # their wait is over: subscribed
    refused: tuple[tuple[Route, str], ...] = ()  # (route, the filter the broker refused): closed
    refused_filters: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()  # filters to UNSUBSCRIBE now
    subscribe: tuple[SubscribeRequest, ...] = ()  # SUBSCRIBEs to send now (a QoS raised to prune)


@attrs.define(eq=False)
class _BrokerFilter:
    requested_qos: int
    granted_qos: int | None = None  # None until a SUBACK granted it on this connection
    in_flight: int = 0  # SUBSCRIBEs naming it, sent and not acknowledged
    users: list[Route] = attrs.field(factory=list)  # routes it brings messages to


class Router:
    """See the module docstring. ``deliver`` is on every received message's path: keep it lean."""

    def __init__(self) -> None:
        self._exact: dict[str, list[Route]] = {}
        self._wildcards: list[Route] = []
        self._filters: dict[str, _BrokerFilter] = {}
        self._pending: list[SubscribeRequest] = []

    # ---- what the connection holds ---------------------------------------------------------------

    @property
    def broker_filters(self) -> dict[str, int]:
        """Filter -> requested QoS of every broker subscription (as the broker will have it)."""
        return {topic_filter: entry.requested_qos for topic_filter, entry in self._filters.items()}

    def granted(self, topic_filter: str) -> int | None:
        entry = self._filters.get(topic_filter)
        return None if entry is None else entry.granted_qos

    @property
    def routes(self) -> list[Route]:
        return [route for routes in self._exact.values() for route in routes] + list(self._wildcards)

    @property
    def pending_requests(self) -> list[SubscribeRequest]:
        return list(self._pending)

    # ---- events ----------------------------------------------------------------------------------

    def add(self, route: Route) -> SubscribeRequest:
        """A new subscriber: messages reach it from now on; send the returned SUBSCRIBE and pass its
        SUBACK to :meth:`acknowledge`."""
        if route.state is not RouteState.PENDING or route.broker_filter is not None:
            raise ValueError("a route is added once")
        if route.wildcard:
            self._wildcards.append(route)
        else:
            self._exact.setdefault(route.topic_filter, []).append(route)
        entry = self._filters.get(route.topic_filter)
        if entry is None:
            entry = self._filters[route.topic_filter] = _BrokerFilter(route.qos)
        else:
            entry.requested_qos = max(entry.requested_qos, route.qos)
        entry.users.append(route)
        route.broker_filter = route.topic_filter
        request = SubscribeRequest(((route.topic_filter, entry.requested_qos),), [route])
        self._send(request, [entry])
        return request

    def remove(self, route: Route) -> tuple[str, ...]:
        """A subscriber leaves (idempotent); returns the filters to UNSUBSCRIBE."""
        if route.state is RouteState.CLOSED:
            return ()
        self._close(route)
        return self._release(route)

    def acknowledge(self, request: SubscribeRequest, granted: Sequence[int | None]) -> SubackOutcome:
        """The SUBACK of ``request``: ``granted`` has the granted QoS of each filter, None where the
        broker refused it."""
        if request not in self._pending:
            return SubackOutcome()  # answered already, or lost with its connection
        self._pending.remove(request)
        for entry in request._entries:
            entry.in_flight -= 1
        refused_filters: list[str] = []
        for (topic_filter, qos), answer in zip(request.filters, granted, strict=False):
            held = self._filters.get(topic_filter)
            if answer is None:
                refused_filters.append(topic_filter)
            elif held is not None:
                held.granted_qos = min(qos, answer)
        refused_filters.extend(f for f, _ in request.filters[len(granted):])  # a short SUBACK refuses the rest
        ready: list[Route] = []
        refused: list[tuple[Route, str]] = []
        unsubscribe: list[str] = []
        for route in request.routes:
            if route.state is not RouteState.PENDING:
                continue
            if route.topic_filter in refused_filters:
                self._close(route)
                unsubscribe.extend(self._release(route))
                refused.append((route, route.topic_filter))
            else:
                route.state = RouteState.ACTIVE
                ready.append(route)
        pruned, upgrades = self._prune()
        unsubscribe.extend(pruned)
        return SubackOutcome(tuple(ready), tuple(refused), tuple(refused_filters), tuple(unsubscribe), upgrades)

    def withdraw(self, request: SubscribeRequest) -> None:
        """``request`` was never sent (the connection refused it at once): forget it. Its routes
        are removed by the caller."""
        if request in self._pending:
            self._pending.remove(request)
            for entry in request._entries:
                entry.in_flight -= 1

    def connection_lost(self) -> list[Route]:
        """The connection is gone (and with it the broker's session): returns the routes whose
        SUBSCRIBE was lost, now closed. The others stay, to be restored on the next connection."""
        lost: list[Route] = []
        for request in self._pending:
            for route in request.routes:
                if route.state is RouteState.PENDING:
                    self._close(route)
                    self._release(route)
                    lost.append(route)
        self._pending.clear()
        for entry in self._filters.values():
            entry.granted_qos = None
            entry.in_flight = 0
        return lost

    def restore(self) -> SubscribeRequest | None:
        """A new connection: the one SUBSCRIBE that brings every broker filter back (None when
        there are none). Routes take retained messages again."""
        for route in self.routes:
            route.settled = False
            route.seen.clear()
        if not self._filters:
            return None
        filters = tuple((topic_filter, entry.requested_qos) for topic_filter, entry in self._filters.items())
        request = SubscribeRequest(filters, [], restore=True)
        self._send(request, list(self._filters.values()))
        return request

    def deliver(self, topic: str, retain: bool) -> list[Route]:
        """The routes a received message goes to (exact filters first, each group in the order the
        routes were added). A retained copy skips routes that had this topic already."""
        found: list[Route] = []
        exact = self._exact.get(topic)
        if exact is not None:
            for route in exact:
                if retain and route.settled:
                    continue
                route.settled = True
                found.append(route)
        for route in self._wildcards:
            if route.matches(topic):
                seen = route.seen
                if topic in seen:
                    if retain:
                        continue
                elif len(seen) < MAX_REMEMBERED_TOPICS:
                    seen.add(topic)
                found.append(route)
        return found

    # ---- inside ----------------------------------------------------------------------------------

    def _send(self, request: SubscribeRequest, entries: Iterable[_BrokerFilter]) -> None:
        for entry in entries:
            entry.in_flight += 1
            request._entries.append(entry)
        self._pending.append(request)

    def _close(self, route: Route) -> None:
        route.state = RouteState.CLOSED
        if route.wildcard:
            self._wildcards.remove(route)
        else:
            routes = self._exact[route.topic_filter]
            routes.remove(route)
            if not routes:
                del self._exact[route.topic_filter]

    def _release(self, route: Route) -> tuple[str, ...]:
        broker_filter, route.broker_filter = route.broker_filter, None
        entry = self._filters.get(broker_filter) if broker_filter is not None else None
        if entry is None:
            return ()
        entry.users.remove(route)
        if entry.users:
            # Later SUBSCRIBEs of this filter (a restore) ask for what the remaining routes need.
            entry.requested_qos = max(user.qos for user in entry.users)
            return ()
        del self._filters[broker_filter]  # type: ignore[arg-type]
        return (broker_filter,)  # type: ignore[return-value]

    def _prune(self) -> tuple[list[str], tuple[SubscribeRequest, ...]]:
        """Unsubscribe every settled filter that a granted wider one covers at a QoS as high,
        moving its routes to the wider one, until no such filter is left; where the wider one's
        QoS is too low, ask for it to be raised (once: a broker may grant less)."""
        pruned: list[str] = []
        while True:
            found = self._covered_filter()
            if found is None:
                break
            narrow, wide = found
            entry, cover = self._filters.pop(narrow), self._filters[wide]
            for route in entry.users:
                route.broker_filter = wide
            cover.users.extend(entry.users)
            # What the moved routes need (granted already): a later prune must not go below it.
            cover.requested_qos = max(cover.requested_qos, entry.requested_qos)
            pruned.append(narrow)
        return pruned, tuple(self._upgrades())

    def _settled(self) -> list[tuple[str, _BrokerFilter]]:
        return [(f, e) for f, e in self._filters.items() if e.in_flight == 0 and e.granted_qos is not None]

    def _covered_filter(self) -> tuple[str, str] | None:
        settled = self._settled()
        for narrow, entry in settled:
            for wide, cover in settled:
                enough = cover.granted_qos >= entry.requested_qos  # type: ignore[operator]
                if wide != narrow and enough and filter_covers(wide, narrow):
                    return narrow, wide
        return None

    def _upgrades(self) -> list[SubscribeRequest]:
        requests: list[SubscribeRequest] = []
        settled = self._settled()
        for narrow, entry in settled:
            for wide, cover in settled:
                if wide != narrow and cover.requested_qos < entry.requested_qos and filter_covers(wide, narrow):
                    cover.requested_qos = entry.requested_qos
                    request = SubscribeRequest(((wide, cover.requested_qos),), [])
                    self._send(request, [cover])
                    requests.append(request)
                    break
        return requests
