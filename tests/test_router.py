"""The sans-IO router and PUBACK table, without a broker: a model broker that processes the client's
packets in order, as MQTT 3.1.1 brokers do, in both delivery modes seen in the field (mosquitto: once
per client; amqtt and NATS: once per matching subscription), and a model of paho's packet ids."""

from __future__ import annotations

import collections
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from evflow.runtime.protocol.acks import PubackTable
from evflow.runtime.protocol.router import Route, Router, RouteState, SubscribeRequest
from evflow.runtime.protocol.topics import filter_covers, topic_matches

FILTERS = ["a/b", "a/c", "a/+", "a/#", "#", "+/b", "deny/x", "$s/#", "$s/b"]
TOPICS = ["a/b", "a/c", "a", "x/b", "deny/x", "$s/b"]


@attrs.define
class Copy:
    """A PUBLISH the broker sends the client."""

    topic: str
    retain: bool
    serial: int  # which publish (live) or which retained value it is
    quiet: bool = False  # published while no request was in flight (no transient overlap)


@attrs.define
class Suback:
    request: SubscribeRequest
    granted: list[int | None]


class ModelBroker:
    """The broker side of one connection: processes the client's packets in order."""

    def __init__(self, per_filter: bool) -> None:
        self.per_filter = per_filter
        self.subscriptions: dict[str, int] = {}
        self.retained: dict[str, int] = {}  # topic -> serial of its retained value
        self.inbound: collections.deque[Copy | Suback] = collections.deque()  # to the client
        self.outbound: collections.deque[tuple[str, Any]] = collections.deque()  # from the client

    def process(self) -> None:
        kind, packet = self.outbound.popleft()
        if kind == "unsubscribe":
            self.subscriptions.pop(packet, None)
            return
        granted: list[int | None] = []
        for topic_filter, qos in packet.filters:
            if topic_filter.startswith("deny"):
                granted.append(None)
                continue
            self.subscriptions[topic_filter] = qos
            granted.append(qos)
        self.inbound.append(Suback(packet, granted))
        for (topic_filter, _qos), answer in zip(packet.filters, granted, strict=True):
            if answer is not None:  # each SUBSCRIBE brings the retained messages its filters match
                for topic, serial in self.retained.items():
                    if topic_matches(topic_filter, topic):
                        self.inbound.append(Copy(topic, True, serial))

    def publish(self, topic: str, serial: int, quiet: bool = False) -> int:
        """A live message; returns how many copies this client gets."""
        matching = [f for f in self.subscriptions if topic_matches(f, topic)]
        copies = len(matching) if self.per_filter else min(1, len(matching))
        for _ in range(copies):
            self.inbound.append(Copy(topic, False, serial, quiet))
        return copies


class RouterMachine(RuleBasedStateMachine):
    per_filter = False

    @initialize()
    def setup(self) -> None:
        self.router = Router()
        self.broker = ModelBroker(self.per_filter)
        self.serial = 0
        self.routes: list[Route] = []
        # Per route: what it received since its SUBSCRIBE (or the last restore), in order.
        self.received: dict[int, list[Copy]] = collections.defaultdict(list)
        # Per route: the live serials it must get (published while it was active and quiet).
        self.owed_live: dict[int, set[int]] = collections.defaultdict(set)
        self.refused: list[Route] = []
        self.lost: list[Route] = []

    # ---- the client ------------------------------------------------------------------------------

    @rule(topic_filter=st.sampled_from(FILTERS), qos=st.sampled_from([0, 1]))
    def subscribe(self, topic_filter: str, qos: int) -> None:
        route = Route(topic_filter, qos)
        self.routes.append(route)
        self.broker.outbound.append(("subscribe", self.router.add(route)))

    @precondition(lambda self: any(r.state is not RouteState.CLOSED for r in self.routes))
    @rule(data=st.data())
    def unsubscribe(self, data: st.DataObject) -> None:
        route = data.draw(st.sampled_from([r for r in self.routes if r.state is not RouteState.CLOSED]))
        for topic_filter in self.router.remove(route):
            self.broker.outbound.append(("unsubscribe", topic_filter))
        assert self.router.remove(route) == ()  # idempotent

    @precondition(lambda self: self.broker.outbound)
    @rule()
    def broker_processes_a_packet(self) -> None:
        self.broker.process()

    @precondition(lambda self: self.broker.inbound)
    @rule()
    def client_reads_a_packet(self) -> None:
        packet = self.broker.inbound.popleft()
        if isinstance(packet, Suback):
            outcome = self.router.acknowledge(packet.request, packet.granted)
            assert all(route.state is RouteState.ACTIVE for route in outcome.ready)
            self.refused.extend(route for route, _ in outcome.refused)
            for topic_filter in outcome.unsubscribe:
                self.broker.outbound.append(("unsubscribe", topic_filter))
            for request in outcome.subscribe:
                self.broker.outbound.append(("subscribe", request))
            return
        for route in self.router.deliver(packet.topic, packet.retain):
            assert route.state is not RouteState.CLOSED and topic_matches(route.topic_filter, packet.topic)
            self.received[id(route)].append(packet)
            self.owed_live[id(route)].discard(packet.serial)

    @rule(topic=st.sampled_from(TOPICS), retain=st.booleans())
    def someone_publishes(self, topic: str, retain: bool) -> None:
        self.serial += 1
        quiet = not self.broker.outbound and not self.broker.inbound and not self.router.pending_requests
        if retain:
            self.broker.retained[topic] = self.serial
        self.broker.publish(topic, self.serial, quiet)
        if quiet:  # everything settled: every active matching route must get it
            for route in self.routes:
                if route.state is RouteState.ACTIVE and topic_matches(route.topic_filter, topic):
                    self.owed_live[id(route)].add(self.serial)

    @rule()
    def connection_lost_and_back(self) -> None:
        self.lost.extend(self.router.connection_lost())
        self.broker.subscriptions.clear()
        self.broker.inbound.clear()
        self.broker.outbound.clear()
        for route in self.routes:
            self.received[id(route)].clear()
            self.owed_live[id(route)].clear()
        request = self.router.restore()
        if request is not None:
            self.broker.outbound.append(("subscribe", request))

    # ---- what must hold ------------------------------------------------------------------------

    @invariant()
    def a_retained_copy_comes_only_before_anything_else_on_its_topic(self) -> None:
        for route in self.routes:
            seen: set[str] = set()
            for copy in self.received[id(route)]:
                again = copy.retain and copy.topic in seen
                assert not again, f"{route.topic_filter} got {copy.topic} again as retained"
                seen.add(copy.topic)

    @invariant()
    def closed_routes_are_gone(self) -> None:
        live = {id(r) for r in self.router.routes}
        for route in self.routes:
            assert (id(route) in live) == (route.state is not RouteState.CLOSED)

    def settle(self) -> None:
        """Run both sides until nothing is in flight."""
        while self.broker.outbound or self.broker.inbound:
            if self.broker.outbound:
                self.broker_processes_a_packet()
            else:
                self.client_reads_a_packet()

    def teardown(self) -> None:
        if not hasattr(self, "router"):
            return
        self.settle()
        # No waiter is left: every route was answered, refused or lost.
        assert not self.router.pending_requests
        assert all(route.state is not RouteState.PENDING for route in self.routes)
        assert all(route.topic_filter.startswith("deny") for route in self.refused)
        # The broker holds exactly what the router believes, and no filter is covered by another
        # (no lasting overlap that one could remove; the model grants every QoS asked for).
        assert set(self.broker.subscriptions) == set(self.router.broker_filters)
        for topic_filter, qos in self.broker.subscriptions.items():
            assert self.router.granted(topic_filter) == qos
            assert qos >= self.router.broker_filters[topic_filter]  # at least what its routes need
        for narrow in self.broker.subscriptions:
            for wide in self.broker.subscriptions:
                assert wide == narrow or not filter_covers(wide, narrow), (wide, narrow)
        for route in self.routes:
            if route.state is not RouteState.ACTIVE:
                continue
            # Served by a broker filter that covers it at its QoS...
            via = route.broker_filter
            assert via is not None and filter_covers(via, route.topic_filter)
            assert (self.router.granted(via) or 0) >= route.qos
            # ...it got every retained message its filter matches, and every live one it was owed.
            got = {copy.topic for copy in self.received[id(route)]}
            for topic in self.broker.retained:
                if topic_matches(route.topic_filter, topic):
                    assert topic in got, f"{route.topic_filter} never got retained {topic}"
            assert not self.owed_live[id(route)], f"{route.topic_filter} missed live messages"
            if not self.per_filter or not any(self._overlaps(route.topic_filter, other) for other in FILTERS):
                # Once per client, or no filter overlaps its own without covering it: never twice.
                serials = [copy.serial for copy in self.received[id(route)] if not copy.retain and copy.quiet]
                assert len(serials) == len(set(serials)), (route.topic_filter, serials)

    @staticmethod
    def _overlaps(mine: str, other: str) -> bool:
        """Whether a topic matches both filters while neither covers the other."""
        if filter_covers(mine, other) or filter_covers(other, mine):
            return False
        return any(topic_matches(mine, topic) and topic_matches(other, topic) for topic in TOPICS)


class PerFilterRouterMachine(RouterMachine):
    per_filter = True


_settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestRouterOncePerClient = RouterMachine.TestCase
TestRouterOncePerClient.settings = _settings
TestRouterOncePerFilter = PerFilterRouterMachine.TestCase
TestRouterOncePerFilter.settings = _settings


# ---- examples ---------------------------------------------------------------------------------


def test_three_concurrent_subscribes_to_one_filter_each_wait_for_their_own_suback() -> None:
    # Issue 16, item 2: QoS 0, 0, 1 on one filter; the upgrade must not strand the second waiter.
    router = Router()
    routes = [Route("t", 0), Route("t", 0), Route("t", 1)]
    requests = [router.add(route) for route in routes]
    assert [r.filters for r in requests] == [(("t", 0),), (("t", 0),), (("t", 1),)]
    for request in requests:
        assert router.acknowledge(request, [q for _, q in request.filters]).ready == tuple(request.routes)
    assert all(route.state is RouteState.ACTIVE for route in routes)
    assert router.broker_filters == {"t": 1}


def test_a_covered_filter_is_subscribed_for_its_retained_messages_then_let_go() -> None:
    router = Router()
    wide, narrow = Route("status/+", 1), Route("status/a", 0)
    router.acknowledge(router.add(wide), [1])
    assert router.deliver("status/a", retain=True) == [wide]  # its own SUBSCRIBE's retained copy
    request = router.add(narrow)
    assert request.filters == (("status/a", 0),)  # sent, though status/+ covers it
    outcome = router.acknowledge(request, [0])
    assert outcome.ready == (narrow,) and outcome.unsubscribe == ("status/a",)
    assert narrow.broker_filter == "status/+"
    # The retained copy its SUBSCRIBE brings reaches the new route only; live ones reach both.
    assert router.deliver("status/a", retain=True) == [narrow]
    assert router.deliver("status/a", retain=False) == [narrow, wide]
    # The wide filter stays while the narrow route relies on it.
    assert router.remove(wide) == ()
    assert router.remove(narrow) == ("status/+",)


def test_a_wide_filter_that_covers_an_older_narrow_one_takes_it_over() -> None:
    router = Router()
    narrow, wide = Route("a/b", 0), Route("a/#", 0)
    router.acknowledge(router.add(narrow), [0])
    outcome = router.acknowledge(router.add(wide), [0])
    assert outcome.unsubscribe == ("a/b",) and router.broker_filters == {"a/#": 0}
    # Not at a lower QoS: a QoS 1 route is not moved under a QoS 0 subscription.
    router2 = Router()
    narrow1 = Route("a/b", 1)
    router2.acknowledge(router2.add(narrow1), [1])
    assert router2.acknowledge(router2.add(Route("a/#", 0)), [0]).unsubscribe == ()


def test_a_refused_subscription_closes_its_route_only() -> None:
    router = Router()
    kept = Route("x/+", 0)
    router.acknowledge(router.add(kept), [0])
    refused = Route("x/y", 1)
    outcome = router.acknowledge(router.add(refused), [None])
    assert outcome.refused == ((refused, "x/y"),) and refused.state is RouteState.CLOSED
    assert kept.state is RouteState.ACTIVE and router.broker_filters == {"x/+": 0}


def test_a_lost_connection_fails_pending_routes_and_restores_the_rest() -> None:
    router = Router()
    active, pending = Route("a", 1), Route("b", 0)
    router.acknowledge(router.add(active), [1])
    router.add(pending)
    assert router.deliver("a", retain=True) == [active]
    assert router.connection_lost() == [pending] and pending.state is RouteState.CLOSED
    restore = router.restore()
    assert restore is not None and restore.restore and restore.filters == (("a", 1),)
    assert router.deliver("a", retain=True) == [active]  # retained again after a reconnect
    assert router.acknowledge(restore, [1]).refused == ()


def test_a_granted_qos_below_the_request_counts() -> None:
    router = Router()
    route = Route("q", 1)
    router.acknowledge(router.add(route), [0])  # a broker with max_qos 0
    assert router.granted("q") == 0


def test_a_route_leaving_lowers_what_later_subscribes_ask_for() -> None:
    router = Router()
    low, high = Route("q", 0), Route("q", 1)
    router.acknowledge(router.add(low), [0])
    router.acknowledge(router.add(high), [1])
    router.remove(high)
    router.connection_lost()
    restore = router.restore()
    assert restore is not None and restore.filters == (("q", 0),)


# ---- the PUBACK table ---------------------------------------------------------------------------------


@attrs.define(eq=False)
class Info:
    """paho's MQTTMessageInfo, as far as the table sees it."""

    published: bool = False


@st.composite
def publish_scripts(draw: st.DrawFn) -> list[tuple[str, int]]:
    return draw(st.lists(st.tuples(st.sampled_from(["qos0", "qos1", "puback", "settle"]), st.integers(0, 7)),
                         max_size=120))


@settings(max_examples=500)
@given(publish_scripts())
def test_a_qos1_waiter_completes_on_its_puback_never_on_a_qos0_write_with_its_id(script: list[tuple[str, int]]) -> None:
    # Issue 16 review: paho calls on_publish for QoS 0 writes too, with ids from the same counter
    # as QoS 1 ones (wrapping at 65535; here at 8, so that they collide often).
    table: PubackTable[int] = PubackTable()
    next_mid = 0
    outstanding: dict[int, tuple[int, Info]] = {}  # mid -> (waiter, info)
    acked: set[int] = set()  # waiters whose PUBACK came
    completed: list[int] = []
    waiter_ids = iter(range(10_000))
    for action, pick in script:
        if action in ("qos0", "qos1"):
            mid, next_mid = next_mid, (next_mid + 1) % 8
            if action == "qos0":
                table.hint(mid)  # written: paho calls on_publish at once
            elif mid not in outstanding:  # paho refuses a QoS 1 id still waiting
                waiter, info = next(waiter_ids), Info()
                outstanding[mid] = (waiter, info)
                earlier = table.expect(mid, lambda info=info: info.published, waiter)
                if earlier is not None:  # the id's previous message, acknowledged but not settled yet
                    assert earlier in acked
                    completed.append(earlier)
        elif action == "puback" and outstanding:
            mid = sorted(outstanding)[pick % len(outstanding)]
            waiter, info = outstanding.pop(mid)
            table.hint(mid)  # paho calls on_publish, then marks the message published
            info.published = True
            acked.add(waiter)
        elif action == "settle":
            done = table.settle()
            assert set(done) <= acked, "completed without its PUBACK"
            completed += done
        assert len(table) >= len(outstanding)
    completed += table.settle()
    assert sorted(completed) == sorted(acked) and len(completed) == len(set(completed))
    assert len(table) == len(outstanding)


def test_the_puback_table_refuses_an_id_twice_and_gives_up_its_waiters() -> None:
    table: PubackTable[str] = PubackTable()
    table.expect(1, lambda: False, "one")
    with pytest.raises(ValueError):
        table.expect(1, lambda: False, "again")
    table.hint(1)
    assert table.settle() == [] and len(table) == 1  # a hint alone completes nothing
    table.expect(2, lambda: True)  # no waiter: counted until its PUBACK
    table.hint(2)
    assert table.settle() == [] and len(table) == 1
    assert table.take_all() == ["one"] and len(table) == 0
