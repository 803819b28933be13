"""EVerest's entrypoint API: the pure protocol, discovery against a real mosquitto (evflow's simulator and
a plain-paho stand-in of EVerest's ApiHelper), find_module, the ready beacon, and `evflow discover`."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import paho.mqtt.client as paho
import pytest
import trio
import trio.testing
from paho.mqtt.enums import CallbackAPIVersion

from evflow.runtime.codec import CodecError
from evflow.runtime.discovery import discover_apis, find_module
from evflow.runtime.errors import DiscoveryError
from evflow.runtime.models.entrypoint import ApiDiscoverResponse, ApiParameter, CommunicationParameters
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.protocol.discovery import (
    DiscoveredApis,
    decode_discovery_reply,
    decode_discovery_request,
    discover_replies,
    discover_topic,
    discovery_reply_topic,
    encode_discovery_reply,
    encode_discovery_request,
    query_modules_replies,
    query_modules_topic,
    ready_beacon_topic,
    reply_to_for,
)
from evflow.runtime.protocol.topics import TopicError
from evflow.runtime.simulator.entrypoint import serve_entrypoint
from evflow.runtime.transport import MqttClient, MqttMessage, Subscription

from .conftest import connected_client
from .processes import CLI, evflow

COMM = CommunicationParameters(heartbeat_period_ms=1000, communication_check_period_s=5)
SECURITY = ApiParameter(type="evse_security_consumer", module_id="security_api", version=1, communication_monitoring=COMM)
METER = ApiParameter(type="powermeter", module_id="meter_api", version=1, communication_monitoring=CommunicationParameters(
    heartbeat_period_ms=500, communication_check_period_s=3, request_reply_timeout_s=10))
DISPLAY = ApiParameter(type="display_message", module_id="meter_api", version=2)
TWO_MODULES = (SECURITY, METER, DISPLAY)


# ---- the pure protocol ----------------------------------------------------------------------------


def test_topics_with_and_without_the_external_prefix() -> None:
    assert discover_topic() == "everest_api/discover"
    assert discover_topic("site/1/") == "site/1/everest_api/discover"
    assert query_modules_topic("powermeter") == "everest_api/query-modules/powermeter"
    assert query_modules_topic("powermeter", "p_") == "p_everest_api/query-modules/powermeter"
    assert ready_beacon_topic("site/1/") == "site/1/everest_api/ready_beacon"
    with pytest.raises(TopicError, match="wildcards"):
        discover_topic("site/+/")
    with pytest.raises(TopicError, match="API type must be a single topic level"):
        query_modules_topic("power/meter")
    with pytest.raises(TopicError, match="API type must not be empty"):
        query_modules_topic("")


def test_reply_topic_is_under_the_prefix_and_reply_to_is_not() -> None:
    topic = discovery_reply_topic("site/1/", "a1b2c3")
    assert topic == "site/1/evflow/discover/a1b2c3"
    assert reply_to_for(topic, "site/1/") == "evflow/discover/a1b2c3"
    assert reply_to_for("evflow/discover/x", "") == "evflow/discover/x"
    with pytest.raises(TopicError, match=r"\[A-Za-z0-9_-\]"):
        discovery_reply_topic("", "a.b")
    with pytest.raises(TopicError, match="not under external_prefix"):
        reply_to_for("other/evflow/discover/x", "site/1/")


def test_request_is_a_reply_to_header_and_no_payload() -> None:
    assert encode_discovery_request("evflow/discover/abc") == b'{"headers":{"replyTo":"evflow/discover/abc"}}'
    with pytest.raises(TopicError):
        encode_discovery_request("evflow/#")  # EVerest would not publish there: refused, not waited on


def test_everest_side_decodes_requests_as_everest_does() -> None:
    assert decode_discovery_request(b'{"headers": {"replyTo": "r/1"}}') == "r/1"
    assert decode_discovery_request(b'{"headers": {"replyTo": "r/1"}, "payload": [1], "x": 2}') == "r/1"
    for data, problem in [
        (b"{not json", "invalid JSON"),
        (b"[]", "expected an object @ $"),
        (b"{}", "required key missing @ $.headers.replyTo"),
        (b'{"headers": []}', "required key missing @ $.headers.replyTo"),
        (b'{"headers": {"replyTo": 5}}', "expected a string @ $.headers.replyTo"),
        (b'{"headers": {"replyTo": ""}}', "@ $.headers.replyTo"),
        (b'{"headers": {"replyTo": "a/+"}}', "wildcards): 'a/+' @ $.headers.replyTo"),
    ]:
        with pytest.raises(CodecError) as caught:
            decode_discovery_request(data)
        assert problem in str(caught.value), data


def test_reply_decodes_and_ignores_unknown_keys_at_every_level() -> None:
    data = json.dumps({"apis": [
        {"type": "powermeter", "module_id": "pm1", "version": 1, "vendor": "x",
         "communication_monitoring": {"heartbeat_period_ms": 1000, "communication_check_period_s": 5,
                                      "request_reply_timeout_s": 5, "later": True}},
        {"type": "display_message", "module_id": "pm1", "version": 2},
    ], "extra": {}}).encode()
    assert decode_discovery_reply(data) == ApiDiscoverResponse(apis=(
        ApiParameter(type="powermeter", module_id="pm1", version=1, communication_monitoring=CommunicationParameters(
            heartbeat_period_ms=1000, communication_check_period_s=5, request_reply_timeout_s=5)),
        ApiParameter(type="display_message", module_id="pm1", version=2),
    ))
    assert decode_discovery_reply(b'{"apis": []}') == ApiDiscoverResponse(apis=())


@pytest.mark.parametrize(("data", "problems"), [
    (b"{}", ["required key missing @ $.apis"]),
    (b'{"apis": {}}', ["expected an array, got an object @ $.apis"]),
    (b'{"apis": [{"type": "t", "version": "1"}]}',
     ["required key missing @ $.apis[0].module_id", "expected an integer, got a string @ $.apis[0].version"]),
    (b'{"apis": [{"type": "t", "module_id": "m", "version": 1}, 7]}', ["expected an object, got an integer @ $.apis[1]"]),
    (b'{"apis": [{"type": "t", "module_id": "m", "version": 1, "communication_monitoring": {"heartbeat_period_ms": 1.5}}]}',
     ["expected an integer, got a number @ $.apis[0].communication_monitoring.heartbeat_period_ms"]),
    (b'{"apis": [{"type": "t", "module_id": "m", "version": 2147483648}]}',
     ["expected an integer in -2147483648..2147483647, got 2147483648 @ $.apis[0].version"]),
    (b"[1, 2", None),
    (b"\xff", ["invalid UTF-8 @ $"]),
])
def test_bad_replies_name_each_problem_with_its_json_path(data: bytes, problems: list[str] | None) -> None:
    with pytest.raises(CodecError) as caught:
        decode_discovery_reply(data)
    if problems is None:
        assert caught.value.problems[0].startswith("invalid JSON") and caught.value.problems[0].endswith("@ $")
    else:
        assert sorted(caught.value.problems) == sorted(problems)


def test_reply_bytes_are_everests() -> None:
    # What nlohmann's dump(4) writes for ApiHelper's discover_response (its objects sort their keys).
    everest = (
        b'{\n    "apis": [\n        {\n            "communication_monitoring": {\n'
        b'                "communication_check_period_s": 5,\n                "heartbeat_period_ms": 1000\n'
        b'            },\n            "module_id": "security_api",\n            "type": "evse_security_consumer",\n'
        b'            "version": 1\n        }\n    ]\n}'
    )
    assert encode_discovery_reply(ApiDiscoverResponse(apis=(SECURITY,))) == everest
    assert encode_discovery_reply(ApiDiscoverResponse(apis=())) == b'{\n    "apis": []\n}'


def test_one_answer_per_module_its_apis_sorted_by_type() -> None:
    assert discover_replies(TWO_MODULES) == [ApiDiscoverResponse(apis=(SECURITY,)),
                                            ApiDiscoverResponse(apis=(DISPLAY, METER))]
    assert query_modules_replies(TWO_MODULES, "powermeter") == [ApiDiscoverResponse(apis=(METER,))]
    assert query_modules_replies(TWO_MODULES, "nothing") == []


def test_collector_merges_in_arrival_order_drops_repeats_counts_invalid() -> None:
    collected = DiscoveredApis()
    assert collected.receive(encode_discovery_reply(ApiDiscoverResponse(apis=(METER, DISPLAY)))) == (METER, DISPLAY)
    assert collected.receive(b'{"apis": [{"type": "x"}]}') == ()
    assert collected.receive(b"garbage") == ()
    # The same module again (a second request of the run), one API now with another version: first one wins.
    again = ApiParameter(type="powermeter", module_id="meter_api", version=7)
    assert collected.receive(encode_discovery_reply(ApiDiscoverResponse(apis=(again, SECURITY)))) == (SECURITY,)
    assert collected.apis == [METER, DISPLAY, SECURITY]
    assert (collected.replies, collected.repeats, collected.invalid) == (2, 1, 2)
    assert collected.first_problem == "required key missing @ $.apis[0].module_id; required key missing @ $.apis[0].version"
    assert collected.module_ids() == ["meter_api", "security_api"]
    assert collected.module_ids("display_message") == ["meter_api"]

    only_meters = DiscoveredApis(api_type="powermeter")
    assert only_meters.receive(encode_discovery_reply(ApiDiscoverResponse(apis=(DISPLAY, METER)))) == (METER,)
    assert not DiscoveredApis().answered and only_meters.answered


# ---- against a real broker ------------------------------------------------------------------------


client_of = connected_client  # a second evflow connection: the EVerest side's


@asynccontextmanager
async def serving(broker: MosquittoBroker, apis: Sequence[ApiParameter], **options: Any) -> AsyncIterator[None]:
    async with client_of(broker) as everest, trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: serve_entrypoint(everest, apis, task_status=task_status, **options))
        yield
        nursery.cancel_scope.cancel()


def drain(spy: Subscription) -> list[MqttMessage]:
    messages = []
    while True:
        try:
            messages.append(spy.receive_nowait())
        except trio.WouldBlock:
            return messages


async def test_discover_hears_each_module_once(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    async with serving(broker, TWO_MODULES):
        with trio.fail_after(10):
            result = await discover_apis(mqtt, window=1.0)
    assert sorted(result.apis, key=lambda api: api.type) == [DISPLAY, SECURITY, METER]
    assert result.replies == 2 and result.invalid == 0  # one message per module, not per API
    assert sorted(result.module_ids) == ["meter_api", "security_api"]
    assert result.request_topic == "everest_api/discover" and not result.ready_beacon


async def test_external_prefix_on_the_wire(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    spy = await mqtt.subscribe("#", max_buffer=1000)
    async with serving(broker, TWO_MODULES, external_prefix="site/1/"):
        with trio.fail_after(10):
            result = await discover_apis(mqtt, external_prefix="site/1/", window=1.0)
            elsewhere = await discover_apis(mqtt, window=0.3)  # EVerest's prefix not given: nobody hears
    assert len(result.apis) == 3 and elsewhere.apis == () and elsewhere.replies == 0
    messages = [m for m in drain(spy) if not m.topic.endswith("ready_beacon")]
    requests = [m for m in messages if m.topic.endswith("/discover")]
    assert [m.topic for m in requests] == ["site/1/everest_api/discover", "everest_api/discover"]
    reply_to = json.loads(requests[0].payload)["headers"]["replyTo"]
    assert json.loads(requests[0].payload) == {"headers": {"replyTo": reply_to}}
    assert reply_to.startswith("evflow/discover/")  # without the prefix: EVerest adds it
    replies = [m for m in messages if m not in requests]
    assert [m.topic for m in replies] == ["site/1/" + reply_to] * 2
    assert sorted(m.payload for m in replies) == sorted(encode_discovery_reply(r) for r in discover_replies(TWO_MODULES))


async def test_query_modules_hears_only_that_type(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    async with serving(broker, TWO_MODULES):
        with trio.fail_after(10):
            meters = await discover_apis(mqtt, api_type="powermeter", window=1.0)
            nothing = await discover_apis(mqtt, api_type="ocpp", window=0.3)
    assert meters.apis == (METER,) and meters.replies == 1
    assert meters.request_topic == "everest_api/query-modules/powermeter"
    assert nothing.apis == () and nothing.replies == 0


async def test_find_module_wants_exactly_one(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    second = ApiParameter(type="evse_security_consumer", module_id="security_api_2", version=1)
    with trio.fail_after(20):
        with pytest.raises(DiscoveryError) as none:
            await find_module(mqtt, "evse_security_consumer", external_prefix="p/", window=0.3)
        assert none.value.api_type == "evse_security_consumer" and none.value.module_ids == ()
        text = str(none.value)
        assert "'evse_security_consumer'" in text and "'p/'" in text and "within 0.3" in text
        assert "'p/everest_api/query-modules/evse_security_consumer'" in text

        async with serving(broker, TWO_MODULES, external_prefix="p/"):
            assert await find_module(mqtt, "evse_security_consumer", external_prefix="p/") == SECURITY

        async with serving(broker, (*TWO_MODULES, second)):
            with pytest.raises(DiscoveryError) as several:
                await find_module(mqtt, "evse_security_consumer")
    assert sorted(several.value.module_ids) == ["security_api", "security_api_2"]
    assert "2 modules implement the 'evse_security_consumer' API" in str(several.value)
    assert "security_api, security_api_2" in str(several.value) or "security_api_2, security_api" in str(several.value)
    assert "set module_id" in str(several.value)


async def test_malformed_requests_get_no_answer(broker: MosquittoBroker, mqtt: MqttClient,
                                                caplog: pytest.LogCaptureFixture) -> None:
    spy = await mqtt.subscribe("#", max_buffer=1000)
    caplog.set_level(logging.WARNING, "evflow.simulator.entrypoint")
    async with serving(broker, TWO_MODULES, ready_beacon=False):
        for bad in (b"{not json", b'{"payload": {}}', b'{"headers": {"replyTo": "a/#"}}'):
            await mqtt.publish("everest_api/discover", bad)
        with trio.fail_after(10):
            result = await discover_apis(mqtt, window=1.0)  # answered after the bad ones were handled
    assert result.replies == 2
    messages = drain(spy)
    assert [m.topic for m in messages if m.topic == "everest_api/discover"] == ["everest_api/discover"] * 4
    answers = [m.topic for m in messages if m.topic != "everest_api/discover"]
    assert len(answers) == 2 and answers[0] == answers[1] and answers[0].startswith("evflow/discover/")
    assert caplog.text.count("Deserialization failed") == 1  # rate-limited: the first line, then a count
    assert "no reply" in caplog.text


async def test_an_answer_it_cannot_publish_is_logged_not_fatal(broker: MosquittoBroker, mqtt: MqttClient,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "evflow.simulator.entrypoint")
    async with serving(broker, TWO_MODULES, external_prefix="p/"):
        # EVerest's proxy lets this replyTo through; with the prefix in front the topic is too long.
        await mqtt.publish("p/everest_api/discover", encode_discovery_request("e" * 65535))
        with trio.fail_after(10):
            result = await discover_apis(mqtt, external_prefix="p/", window=1.0)
    assert result.replies == 2 and "cannot answer on 'p/eeee" in caplog.text


# ---- the ready beacon (virtual time: the broker is real, trio's clock moves only when told) --------


@pytest.fixture
def clock(mock_clock: trio.testing.MockClock) -> trio.testing.MockClock:
    """Trio's clock stands still unless a test jumps it; the broker's I/O goes on in real time. Should
    a test hang (I/O stalled for seconds of real time), the clock jumps on, so its deadlines fire."""
    mock_clock.autojump_threshold = 5.0
    return mock_clock


async def receive(subscription: Subscription, count: int) -> list[MqttMessage]:
    with trio.fail_after(10):
        return [await subscription.receive() for _ in range(count)]


async def test_ready_beacon_after_the_window_asks_again(
    broker: MosquittoBroker, mqtt: MqttClient, clock: trio.testing.MockClock
) -> None:
    requests = await mqtt.subscribe("everest_api/discover")
    answers = await mqtt.subscribe("evflow/discover/+")
    results = []

    async def run() -> None:
        results.append(await discover_apis(mqtt, window=1.0, wait_for_ready_beacon=30.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await receive(requests, 1)
        clock.jump(1.0)  # the first window passes with nobody answering: EVerest is not up yet
        await trio.testing.wait_all_tasks_blocked()
        assert not results
        async with serving(broker, TWO_MODULES):  # EVerest comes up: subscribes, then sends its beacon
            await receive(requests, 1)  # asked again on the beacon...
            await receive(answers, 2)  # ...and both modules answered
            await trio.testing.wait_all_tasks_blocked()
            assert not results  # the second window is still open
            clock.jump(1.0)
    (result,) = results
    assert result.ready_beacon and len(result.apis) == 3 and result.replies == 2
    assert result.waited == pytest.approx(2.0)  # a window, then the beacon, then another window


async def test_ready_beacon_within_the_window_asks_again(
    broker: MosquittoBroker, mqtt: MqttClient, clock: trio.testing.MockClock
) -> None:
    requests = await mqtt.subscribe("everest_api/discover")
    answers = await mqtt.subscribe("evflow/discover/+")
    results = []

    async def run() -> None:
        results.append(await discover_apis(mqtt, window=1.0, wait_for_ready_beacon=30.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await receive(requests, 1)
        clock.jump(0.5)
        async with serving(broker, TWO_MODULES):
            await receive(requests, 1)
            await receive(answers, 2)
            clock.jump(0.5)  # the first window's end: the window started over at the beacon
            await trio.testing.wait_all_tasks_blocked()
            assert not results
            clock.jump(0.5)
    (result,) = results
    assert result.ready_beacon and len(result.apis) == 3 and result.waited == pytest.approx(1.5)


async def test_everest_up_already_costs_no_beacon_wait(
    broker: MosquittoBroker, mqtt: MqttClient, clock: trio.testing.MockClock
) -> None:
    answers = await mqtt.subscribe("evflow/discover/+")
    results = []

    async def run() -> None:
        results.append(await discover_apis(mqtt, window=1.0, wait_for_ready_beacon=30.0))

    async with serving(broker, TWO_MODULES), trio.open_nursery() as nursery:  # its beacon went out already
        nursery.start_soon(run)
        await receive(answers, 2)
        clock.jump(1.0)
    (result,) = results
    assert not result.ready_beacon and len(result.apis) == 3 and result.waited == pytest.approx(1.0)


async def test_no_beacon_and_no_answer_waits_the_whole_time(mqtt: MqttClient, clock: trio.testing.MockClock) -> None:
    requests = await mqtt.subscribe("everest_api/discover")
    results = []

    async def run() -> None:
        results.append(await discover_apis(mqtt, window=1.0, wait_for_ready_beacon=5.0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await receive(requests, 1)
        clock.jump(1.0)
        await trio.testing.wait_all_tasks_blocked()
        assert not results  # past the window, still waiting for the beacon
        clock.jump(4.0)
    (result,) = results
    assert result.apis == () and not result.ready_beacon and result.waited == pytest.approx(5.0)


# ---- EVerest's ApiHelper, as a plain MQTT client ---------------------------------------------------


def apihelper_reply_to(data: bytes) -> str | None:
    """Where ApiHelper answers a discovery request (prefix not included), or None where it does not.

    Its RequestReply decoder (generic/json_codec.cpp) takes headers.replyTo when there is one, else "";
    a replyTo that is not a string fails to decode; then ValidatingMqttProxy drops a publish to an empty
    topic, one with a wildcard or NUL, or one longer than 65535 characters.
    """
    try:
        request = json.loads(data)
    except ValueError:
        return None  # "Invalid data: Deserialization failed."
    reply_to: Any = ""
    if isinstance(request, dict) and isinstance(request.get("headers"), dict) and "replyTo" in request["headers"]:
        reply_to = request["headers"]["replyTo"]
    if not isinstance(reply_to, str):
        return None
    try:
        size = len(reply_to.encode("utf-8"))  # std::string::length(): bytes
    except UnicodeEncodeError:
        return None  # nlohmann's parser refuses a lone surrogate escape
    if not reply_to or size > 65535 or any(char in reply_to for char in "\0+#"):
        return None  # "ValidatingMqttProxy: Droped ... as topic ... invalid"
    return reply_to


def nlohmann_dump4(value: Any) -> bytes:
    """nlohmann::json::dump(4): objects are std::maps, so their keys come out sorted."""
    return json.dumps(value, indent=4, sort_keys=True, ensure_ascii=False).encode()


class ApiHelperModule:
    """One EVerest API module serving the entrypoint API as ApiHelper does (init_entrypoint_API,
    generate_api_entrypoint_cmd_*, publish_ready_beacon), with a paho connection of its own as each EVerest
    module has. It shares no code with evflow."""

    def __init__(self, broker: MosquittoBroker, module_id: str, implemented: dict[str, int],
                 comm: dict[str, int], *, prefix: str = "", api_module_ids: Sequence[str] = ()) -> None:
        self.prefix = prefix
        self.beacon = sorted(api_module_ids)[:1] == [module_id]  # the module whose id sorts first sends it
        # CommunicationParameters' to_json sets only what is given: none given leaves it JSON null.
        params = [{"type": api_type, "module_id": module_id, "version": version, "communication_monitoring": comm or None}
                  for api_type, version in sorted(implemented.items())]  # implemented_apis is a std::map
        self.bodies = {f"{prefix}everest_api/discover": nlohmann_dump4({"apis": params})}
        for param in params:
            self.bodies[f"{prefix}everest_api/query-modules/{param['type']}"] = nlohmann_dump4({"apis": [param]})
        self._broker = broker
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"everest-{module_id}", protocol=paho.MQTTv311)
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_connect = lambda *_: self._client.subscribe([(topic, 0) for topic in self.bodies])

    async def __aenter__(self) -> ApiHelperModule:
        self._client.connect(self._broker.host, self._broker.port)
        self._client.loop_start()
        assert await trio.to_thread.run_sync(self._subscribed.wait, 5.0), "not subscribed within 5 s"
        return self

    def ready(self) -> None:
        """EVerest calls every module's ready() once all of them are initialised (subscribed)."""
        if self.beacon:
            self._client.publish(f"{self.prefix}everest_api/ready_beacon", "{}", qos=2)

    async def __aexit__(self, *exc_info: object) -> None:
        self._client.disconnect()
        await trio.to_thread.run_sync(self._client.loop_stop)

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:  # paho's thread
        reply_to = apihelper_reply_to(message.payload)
        if reply_to is not None:
            self._client.publish(self.prefix + reply_to, self.bodies[message.topic], qos=2)  # EVerest: QoS 2


@pytest.mark.parametrize("data", [
    b'{"headers": {"replyTo": "r/1"}}', b'{"headers": {"replyTo": "r/1"}, "payload": null}', b"{not json", b"[]",
    b"{}", b'{"payload": 1}', b'{"headers": "r"}', b'{"headers": {"replyTo": 1}}', b'{"headers": {"replyTo": ""}}',
    b'{"headers": {"replyTo": "a/+/b"}}', b'{"headers": {"replyTo": "a/#"}}', b'{"headers": {"replyTo": "a\\u0000"}}',
    b'{"headers": {"replyTo": "$SYS/x"}}', ('{"headers": {"replyTo": "%s"}}' % ("\u00e9" * 32768)).encode(),
    ('{"headers": {"replyTo": "%s"}}' % ("e" * 65535)).encode(), b'{"headers": {"replyTo": "\\ud800"}}',
])
def test_simulator_answers_what_apihelper_answers(data: bytes) -> None:
    try:
        ours: str | None = decode_discovery_request(data)
    except CodecError:
        ours = None
    assert ours == apihelper_reply_to(data)


def test_communication_monitoring_null_is_unset() -> None:
    # What ApiHelper sends for a module that sets none of the figures.
    response = decode_discovery_reply(nlohmann_dump4({"apis": [
        {"type": "t", "module_id": "m", "version": 1, "communication_monitoring": None}]}))
    assert response.apis[0].communication_monitoring is None


async def test_discovers_everests_api_modules(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    ids = ["api_b", "api_a"]
    security = dict(implemented={"evse_security_consumer": 1}, comm={"heartbeat_period_ms": 1000,
                                                                        "communication_check_period_s": 5})
    requests = await mqtt.subscribe("ev/everest_api/discover")
    answers = await mqtt.subscribe("ev/evflow/discover/+")
    async with trio.open_nursery() as nursery:
        results = []

        async def run() -> None:  # started before EVerest: it waits for the ready beacon
            results.append(await discover_apis(mqtt, external_prefix="ev/", window=1.0, wait_for_ready_beacon=20))

        nursery.start_soon(run)
        await receive(requests, 1)
        async with ApiHelperModule(broker, "api_a", prefix="ev/", api_module_ids=ids, **security) as a, \
                ApiHelperModule(broker, "api_b", {"powermeter": 1, "display_message": 1}, {}, prefix="ev/",
                                api_module_ids=ids) as b:
            for module in (a, b):
                module.ready()
            answered = await receive(answers, 2)
            with trio.fail_after(10):
                meters = await discover_apis(mqtt, external_prefix="ev/", api_type="powermeter", window=1.0)
    (result,) = results
    assert result.ready_beacon and result.replies == 2 and result.invalid == 0  # one per module
    assert sorted(result.apis, key=lambda api: api.type) == [
        ApiParameter(type="display_message", module_id="api_b", version=1),
        ApiParameter(type="evse_security_consumer", module_id="api_a", version=1, communication_monitoring=COMM),
        ApiParameter(type="powermeter", module_id="api_b", version=1),
    ]
    assert meters.apis == (ApiParameter(type="powermeter", module_id="api_b", version=1),) and meters.replies == 1
    # evflow's simulator sends EVerest's bytes (for a module that gives its figures).
    security = [api for api in result.apis if api.module_id == "api_a"]
    assert encode_discovery_reply(ApiDiscoverResponse(apis=tuple(security))) in [m.payload for m in answered]


# ---- `evflow discover` ----------------------------------------------------------------------------


async def run_cli(*args: str) -> tuple[int, str, str]:
    with trio.fail_after(60):
        done = await trio.run_process([*CLI, "discover", *args], capture_stdout=True, capture_stderr=True, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_cli_lists_the_modules(broker: MosquittoBroker) -> None:
    async with serving(broker, TWO_MODULES):
        async with evflow(["discover", "--broker", broker.url, "--window", "1"]) as child:
            assert await child.exited(60) == 0, child.text
    assert child.text.splitlines() == [
        "display_message         meter_api     version 2",
        "evse_security_consumer  security_api  version 1  heartbeat every 1000 ms, communication check within 5 s",
        "powermeter              meter_api     version 1  heartbeat every 500 ms, communication check within 3 s, "
        "request reply timeout 10 s",
    ]


async def test_cli_json_with_prefix_and_api_type(broker: MosquittoBroker) -> None:
    async with serving(broker, TWO_MODULES, external_prefix="site/1/"):
        code, out, err = await run_cli("--broker", broker.url, "--external-prefix", "site/1/", "--api", "powermeter",
                                       "--format", "json")
    assert code == 0, err
    assert json.loads(out) == [{"type": "powermeter", "module_id": "meter_api", "version": 1, "communication_monitoring": {
        "heartbeat_period_ms": 500, "communication_check_period_s": 3, "request_reply_timeout_s": 10}}]


async def test_cli_nobody_answers(broker: MosquittoBroker) -> None:
    async with serving(broker, TWO_MODULES, external_prefix="site/1/"):
        code, out, err = await run_cli("--broker", broker.url, "--window", "0.5")
    assert code == 1 and out == ""
    assert err.startswith("evflow discover: no API module answered on 'everest_api/discover' within 0.5 s.")
    assert "no API modules (module types ending in _API)" in err and "mqtt_external_prefix" in err
    assert "--external-prefix" in err and len(err.splitlines()) == 1


async def test_cli_waits_for_the_ready_beacon(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    requests = await mqtt.subscribe("everest_api/query-modules/powermeter")
    async with evflow(["discover", "--broker", broker.url, "--api", "powermeter", "--wait-ready", "30"]) as child:
        await receive(requests, 1)
        async with serving(broker, TWO_MODULES):
            assert await child.exited(60) == 0, child.text
    assert child.text.splitlines() == [
        "powermeter  meter_api  version 1  heartbeat every 500 ms, communication check within 3 s, "
        "request reply timeout 10 s",
    ]


async def test_cli_reports_invalid_replies_and_goes_on(broker: MosquittoBroker, mqtt: MqttClient) -> None:
    requests = await mqtt.subscribe("everest_api/discover")

    async def answer_badly() -> None:
        request = (await receive(requests, 1))[0]
        reply_to = json.loads(request.payload)["headers"]["replyTo"]
        await mqtt.publish(reply_to, b'{"apis": [{"type": "powermeter"}]}')
        await mqtt.publish(reply_to, b"not json")
        await mqtt.publish(reply_to, encode_discovery_reply(ApiDiscoverResponse(apis=(SECURITY,))))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_badly)
        code, out, err = await run_cli("--broker", broker.url, "--window", "2")
    assert code == 0, err
    assert out.split() == ["evse_security_consumer", "security_api", "version", "1", "heartbeat", "every", "1000", "ms,",
                           "communication", "check", "within", "5", "s"]
    assert err.strip() == ("evflow discover: 2 invalid reply(ies) ignored; the first: required key missing "
                           "@ $.apis[0].module_id; required key missing @ $.apis[0].version")


@pytest.mark.parametrize(("args", "message"), [
    (["--broker", "http://localhost"], "evflow discover: error: unsupported broker URL scheme 'http'"),
    (["--broker", "mqtt://127.0.0.1:1", "--external-prefix", "site/#"],
     "evflow discover: error: external_prefix must not contain wildcards: 'site/#'"),
    (["--broker", "mqtt://127.0.0.1:1", "--api", "a/b"], "evflow discover: error: API type must be a single topic level"),
    (["--broker", "mqtt://127.0.0.1:1", "--window", "0"], "argument --window: expected a positive number"),
    (["--broker", "mqtt://127.0.0.1:1", "--wait-ready", "-1"], "argument --wait-ready: expected 0 or a positive"),
    ([], "the following arguments are required: --broker"),
])
async def test_cli_bad_arguments(args: list[str], message: str) -> None:
    code, out, err = await run_cli(*args)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("evflow")]) == 1
