"""Node-RED's change and switch nodes, and the JavaScript value semantics they rest on.

Every expected value here is a fact taken from Node-RED 4.1 itself (its change and switch nodes run
in node-red-node-test-helper on Node.js 20) or from ``node -e``: the flows are written in Node-RED's
export shape, and the outputs are what Node-RED sent for the same messages.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import attrs
import pytest

from evflow.nodes import _jsvalues as js
from evflow.nodes.change import Change
from evflow.nodes.json_parser import Json
from evflow.nodes.switch import Switch
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import Message, new_message
from evflow.runtime.properties import UNDEFINED
from evflow.runtime.registry import Registry
from evflow.runtime.testing import FlowUnderTest, run_flow
from evflow.runtime.typedinput import js_regex

TYPES = [Change, Switch, Json]

# ---- JavaScript values (facts from `node -e`) ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e21, "1e+21"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (123456789012345680000.0, "123456789012345680000"),
        (0.1 + 0.2, "0.30000000000000004"), (-0.0, "0"), (2**53 + 1, "9007199254740992"), (100, "100"),
        (1e20, "100000000000000000000"), (0.000001, "0.000001"), (1 / 3, "0.3333333333333333"),
        (5e-324, "5e-324"), (-1e21, "-1e+21"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        (math.nan, "NaN"), (-math.inf, "-Infinity"), (12.0, "12"),
    ],
)  # fmt: skip
def test_number_to_string(value: float, text: str) -> None:
    assert js.number_to_string(value) == text


@pytest.mark.parametrize(
    ("value", "number"),
    [
        (" 12 ", 12), ("", 0), ("0x1A", 26), ("-0x1A", math.nan), ("1e3", 1000), (".5", 0.5), ("5.", 5),
        ("1_0", math.nan), ([], 0), ([5], 5), ([1, 2], math.nan), ({}, math.nan), (None, 0), (UNDEFINED, math.nan),
        (True, 1), (b"12", 12), ("\u00a012\n", 12), ("Infinity", math.inf), ("-Infinity", -math.inf),
        ("infinity", math.nan), ("0b11", 3), ("0o17", 15), ("+0x1", math.nan), ("\u0661", math.nan),
    ],
)  # fmt: skip
def test_to_number(value: Any, number: float) -> None:
    result = js.to_number(value)
    assert (math.isnan(result) and math.isnan(number)) or result == number


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ([1, [2, 3], None, UNDEFINED], "1,2,3,,"), ({}, "[object Object]"), (None, "null"), (b"12", "12"),
        ([], ""), (True, "true"), (-0.0, "0"), ([[]], ""), (UNDEFINED, "undefined"), (1.0, "1"),
    ],
)  # fmt: skip
def test_to_string(value: Any, text: str) -> None:
    assert js.to_string(value) == text


LIST = [1, 2]
BUFFER = b"12"


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (BUFFER, "12", True), (BUFFER, 12, True), (LIST, "1,2", True), ([1], 1, True), (None, 0, False),
        (None, UNDEFINED, True), (None, False, False), ("1", True, True), ("0", False, True), ("", 0, True),
        (math.nan, math.nan, False), ({}, "[object Object]", True), ([], False, True), ([0], False, True),
        (LIST, LIST, True), ([1, 2], [1, 2], False), ("5", 5.0, True), (" 5 ", 5, True), ("05", "5", False),
        (True, 1, True), (True, "true", False),
    ],
)  # fmt: skip
def test_loose_equals(a: Any, b: Any, equal: bool) -> None:
    assert js.loose_equals(a, b) is equal
    assert js.loose_equals(b, a) is equal


def test_strict_equals() -> None:
    assert js.strict_equals(1, 1.0)
    assert not js.strict_equals(1, True)
    assert not js.strict_equals("1", 1)
    assert not js.strict_equals([1], [1])
    assert js.strict_equals(LIST, LIST)
    assert not js.strict_equals(math.nan, math.nan)
    assert js.strict_equals(None, None) and not js.strict_equals(None, UNDEFINED)


@pytest.mark.parametrize(
    ("a", "b", "lt", "lte"),
    [
        ("a", "b", True, True), ("B", "a", True, True), ("10", "9", True, True), (10, "9", False, False),
        ("abc", 5, False, False), (None, 1, True, True), (UNDEFINED, 1, False, False), ([2], 10, True, True),
        (True, 2, True, True), ("\uffff", "\U00010000", False, False), (None, 0, False, True),
        (UNDEFINED, UNDEFINED, False, False), (math.nan, math.nan, False, False), ("a", None, False, False),
        ("b", "b", False, True),
    ],
)  # fmt: skip
def test_compare(a: Any, b: Any, lt: bool, lte: bool) -> None:
    order = js.compare(a, b)
    assert (order is not None and order < 0) is lt
    assert (order is not None and order <= 0) is lte


def test_truthy_and_type_of() -> None:
    assert [js.truthy(v) for v in (UNDEFINED, None, False, 0, math.nan, "", [], {}, "0", b"", -1)] == [
        False, False, False, False, False, False, True, True, True, True, True,
    ]  # fmt: skip
    assert [js.type_of(v) for v in (UNDEFINED, None, True, 1.5, "x", [], {}, b"", js_regex("a"))] == [
        "undefined", "object", "boolean", "number", "string", "object", "object", "object", "object",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "key", "has"),
    [
        ("abc", "0", True), ("abc", "3", False), ("abc", "length", True), ([1], "length", True), ([1], "0", True),
        (b"12", "0", True), (b"12", "length", False), (5, "x", False), ([1], "00", False), (True, "x", False),
        ({"a": 1}, "a", True), ("\U00010000", "1", True),
    ],
)  # fmt: skip
def test_has_own_property(value: Any, key: str, has: bool) -> None:
    assert js.has_own_property(value, key) is has


@pytest.mark.parametrize(
    ("pattern", "replacement", "text", "everywhere", "once"),
    [
        (r"(\w)(\d)", "$2$1[$0$3$$]$`", "a1 b2", "1a[$0$3$] 2b[$0$3$]a1 ", "1a[$0$3$] b2"),
        ("a", "$&$&", "banana", "baanaanaa", "baanana"),
        ("", "-", "abc", "-a-b-c-", "-abc"),
        ("x*", "-", "abc", "-a-b-c-", "-abc"),
        (r"(?<first>\w)(?<second>\w)?", "$<second>-$<first>", "abc", "b-a-c", "b-ac"),
        (r"(?<first>\w)", "$<nope>|$<first", "ab", "|$<first|$<first", "|$<firstb"),
        ("(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)", "$11$10$01$1a", "abcdefghijk", "kjaaa", "kjaaa"),
        ("b", "$'", "abc", "acc", "acc"),
        ("(a)|(b)", "[$2]", "ab", "[][b]", "[]b"),
    ],
)  # fmt: skip
def test_replace(pattern: str, replacement: str, text: str, everywhere: str, once: str) -> None:
    regex = js_regex(pattern)
    assert js.replace(text, regex, replacement) == everywhere
    assert js.replace(text, regex, replacement, count=1) == once


# ---- running one node ----------------------------------------------------------------------------

TAB = {"id": "A", "type": "tab", "label": "Flow 1", "disabled": False, "info": "", "env": []}
CATCH = {"id": "catch", "type": "catch", "z": "A", "name": "", "scope": None, "uncaught": False,
         "x": 100, "y": 300, "wires": [[]]}  # fmt: skip


def change_node(rules: list[dict[str, Any]] | None, node_id: str = "n", wires: list[list[str]] | None = None,
                **legacy: Any) -> dict[str, Any]:  # fmt: skip
    """A change node as Node-RED 4's editor exports it (with its legacy keys, empty)."""
    node: dict[str, Any] = {"id": node_id, "type": "change", "z": "A", "name": ""}
    if rules is not None:
        node["rules"] = rules
    node.update({"action": "", "property": "", "from": "", "to": "", "reg": False, **legacy})
    return {**node, "x": 300, "y": 100, "wires": wires if wires is not None else [[]]}


def switch_node(rules: list[dict[str, Any]], node_id: str = "n", wires: list[list[str]] | None = None,
                **options: Any) -> dict[str, Any]:  # fmt: skip
    node = {"id": node_id, "type": "switch", "z": "A", "name": "", "property": "payload", "propertyType": "msg",
            "rules": rules, "checkall": "true", "repair": False, "outputs": len(rules), **options}  # fmt: skip
    return {**node, "x": 300, "y": 100, "wires": wires if wires is not None else [[] for _ in rules]}


def message(fields: dict[str, Any]) -> Message:
    """A message from Node-RED's form: payload, topic and any other properties."""
    fields = dict(fields)
    payload = fields.pop("payload", UNDEFINED)
    topic = fields.pop("topic", "")
    return new_message(payload, topic).with_props(fields)


def as_node_red(msg: Message) -> dict[str, Any]:
    """A message in Node-RED's form (without what is not there: an undefined payload, an empty topic)."""
    fields: dict[str, Any] = {}
    if msg.payload is not UNDEFINED:
        fields["payload"] = msg.payload
    if msg.topic not in ("", UNDEFINED):
        fields["topic"] = msg.topic
    fields.update(msg.props)
    return fields


@attrs.define
class Outcome:
    ports: list[list[Message]]
    errors: list[Message]
    flow: FlowUnderTest

    def port(self, index: int = 0) -> list[dict[str, Any]]:
        return [as_node_red(msg) for msg in self.ports[index]]

    def error_texts(self) -> list[str]:
        return [msg.error.message for msg in self.errors if msg.error is not None]


async def taken(flow: FlowUnderTest, node_id: str, port: int) -> list[Message]:
    found = []
    while not flow.nothing_sent(node_id, port):
        found.append(await flow.expect(node_id, port))
    return found


async def run_node(node: dict[str, Any], inputs: list[dict[str, Any] | Message], *, extra: list[dict[str, Any]] = (),
                   flow_context: dict[str, Any] | None = None) -> Outcome:  # fmt: skip
    """Send ``inputs`` to ``node`` (id "n") in a flow with a catch node; once the flow stopped (every
    message handled), what each port sent and what the catch node got."""
    async with run_flow([TAB, node, CATCH, *extra], node_types=TYPES) as flow:
        for key, value in (flow_context or {}).items():
            flow.engine.contexts.flow("A").set(key, value)
        for each in inputs:
            await flow.inject_message("n", each if isinstance(each, Message) else message(each))
    ports = [await taken(flow, "n", port) for port in range(len(node["wires"]))]
    return Outcome(ports, await taken(flow, "catch", 0), flow)


def load_problems(tmp_path: Path, nodes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    import json

    path = tmp_path / "flow.json"
    path.write_text(json.dumps([TAB, *nodes]))
    with pytest.raises(FlowInvalid) as failure:
        load_plan([path], registry=Registry.from_entry_points().with_types(*TYPES), env={})
    return [(problem.path, problem.message) for problem in failure.value.problems if problem.severity == "error"]


# ---- change: what Node-RED 4.1 sent for the same rules and messages ------------------------------

# name: (rules, input messages, output messages)
CHANGE_CASES: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]] = {
    "set every type": (
        [{"t": "set", "p": "s", "pt": "msg", "to": "text", "tot": "str"},
         {"t": "set", "p": "n", "pt": "msg", "to": "12.50", "tot": "num"},
         {"t": "set", "p": "b", "pt": "msg", "to": "TRUE", "tot": "bool"},
         {"t": "set", "p": "j", "pt": "msg", "to": '{"a":[1,{"b":null}]}', "tot": "json"},
         {"t": "set", "p": "payload.deep[1].x", "pt": "msg", "to": "topic", "tot": "msg"},
         {"t": "set", "p": "num", "pt": "msg", "to": "0x1F", "tot": "num"},
         {"t": "set", "p": "bin", "pt": "msg", "to": "[1,2]", "tot": "bin"}],
        [{"payload": {"k": 1}, "topic": "t1"}],
        [{"payload": {"k": 1, "deep": [None, {"x": "t1"}]}, "topic": "t1", "s": "text", "n": 12.5, "b": True,
          "j": {"a": [1, {"b": None}]}, "num": 31, "bin": b"\x01\x02"}],
    ),
    "setting undefined deletes": (
        [{"t": "set", "p": "topic", "pt": "msg", "to": "missing", "tot": "msg"},
         {"t": "set", "p": "payload.a", "pt": "msg", "to": "missing", "tot": "msg"},
         {"t": "set", "p": "payload.x.y", "pt": "msg", "to": "nothere.deeper", "tot": "msg"},
         {"t": "set", "p": "keep", "pt": "msg", "to": "still", "tot": "str"}],
        [{"payload": {"a": 1, "b": 2}, "topic": "t1"}],
        [{"payload": {"b": 2}, "keep": "still"}],
    ),
    "change text": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": "a.b", "fromt": "str", "to": "[$&]", "tot": "str"}],
        [{"payload": "a.b axb a.b"}, {"payload": "a.b"}, {"payload": 5}, {"payload": {"x": "a.b"}}],
        [{"payload": "[a.b] axb [a.b]"}, {"payload": "[$&]"}, {"payload": 5}, {"payload": {"x": "a.b"}}],
    ),
    "change a whole value to a number": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": "5", "fromt": "num", "to": "10", "tot": "num"}],
        [{"payload": "5"}, {"payload": 5}, {"payload": "15"}, {"payload": "x5x"}, {"payload": 6}, {"payload": True}],
        [{"payload": 10}, {"payload": 10}, {"payload": "110"}, {"payload": "x10x"}, {"payload": 6}, {"payload": True}],
    ),
    "change a boolean": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": "true", "fromt": "bool", "to": "yes", "tot": "str"}],
        [{"payload": True}, {"payload": False}, {"payload": "true"}, {"payload": "is true"}, {"payload": 1}],
        [{"payload": "yes"}, {"payload": False}, {"payload": "yes"}, {"payload": "is yes"}, {"payload": 1}],
    ),
    "a replaced text that reads as the boolean becomes it": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": "^(on|yes)$", "fromt": "re", "to": "true", "tot": "bool"}],
        [{"payload": "on"}, {"payload": "yes"}, {"payload": "off"}],
        [{"payload": True}, {"payload": True}, {"payload": "off"}],
    ),
    "regular expression groups": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": r"(\w+)@(\w+)", "fromt": "re",
          "to": "$2 at $1 ($&) $3 $$", "tot": "str"}],
        [{"payload": "me@home, you@work"}],
        [{"payload": "home at me (me@home) $3 $, work at you (you@work) $3 $"}],
    ),
    "search for a msg value": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": "find", "fromt": "msg", "to": "X", "tot": "str"}],
        [{"payload": "a-b-a", "find": "a"}, {"payload": "an undefined value undefined", "find": 3},
         {"payload": 3, "find": 3}, {"payload": True, "find": True}],
        [{"payload": "X-b-X", "find": "a"}, {"payload": "an X value undefined", "find": 3},
         {"payload": "X", "find": 3}, {"payload": True, "find": True}],
    ),
    "an env search value is searched for as written": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": "HOME", "fromt": "env", "to": "place", "tot": "str"}],
        [{"payload": "HOME sweet HOME"}],
        [{"payload": "place sweet place"}],
    ),
    "the replacement is the value's text": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": "a", "fromt": "str", "to": "1.50", "tot": "num"},
         {"t": "change", "p": "topic", "pt": "msg", "from": "x", "fromt": "str", "to": "[1,[2,3]]", "tot": "json"}],
        [{"payload": "banana", "topic": "x-x"}, {"payload": "a", "topic": "x"}],
        [{"payload": "b1.5n1.5n1.5", "topic": "1,2,3-1,2,3"}, {"payload": 1.5, "topic": [1, [2, 3]]}],
    ),
    "an empty search value": (
        [{"t": "change", "p": "payload", "pt": "msg", "from": "", "fromt": "str", "to": "-", "tot": "str"}],
        [{"payload": "abc"}, {"payload": ""}],
        [{"payload": "-a-b-c-"}, {"payload": "-"}],
    ),
    "delete": (
        [{"t": "delete", "p": "payload.a", "pt": "msg"}, {"t": "delete", "p": "payload.list[0]", "pt": "msg"},
         {"t": "delete", "p": "topic", "pt": "msg"}, {"t": "delete", "p": "nothere.deeper", "pt": "msg"}],
        [{"payload": {"a": 1, "b": 2, "list": [1, 2, 3]}, "topic": "t"}],
        [{"payload": {"b": 2, "list": [2, 3]}}],
    ),
    "move": (
        [{"t": "move", "p": "payload", "pt": "msg", "to": "moved.here", "tot": "msg"}],
        [{"payload": {"a": 1}}],
        [{"moved": {"here": {"a": 1}}}],
    ),
    "move a child to its parent": (
        [{"t": "move", "p": "payload.a", "pt": "msg", "to": "payload", "tot": "msg"}],
        [{"payload": {"a": {"a": 1, "b": 2}}}, {"payload": {"a": {"c": 3}}}],
        [{"payload": {"b": 2}}, {"payload": {"c": 3}}],
    ),
    "move into a child": (
        [{"t": "move", "p": "payload", "pt": "msg", "to": "payload.inner", "tot": "msg"}],
        [{"payload": {"a": 1}}, {"payload": 7}],
        [{"payload": {"inner": {"a": 1}}}, {"payload": {"inner": 7}}],
    ),
    "moving what is not there deletes the target": (
        [{"t": "move", "p": "nothere", "pt": "msg", "to": "topic", "tot": "msg"}],
        [{"payload": 1, "topic": "t"}],
        [{"payload": 1}],
    ),
    "rules apply in order": (
        [{"t": "set", "p": "payload", "pt": "msg", "to": "hello world", "tot": "str"},
         {"t": "change", "p": "payload", "pt": "msg", "from": "world", "fromt": "str", "to": "there", "tot": "str"},
         {"t": "move", "p": "payload", "pt": "msg", "to": "greeting", "tot": "msg"}],
        [{"payload": 0}],
        [{"greeting": "hello there"}],
    ),
    "a value that cannot be read leaves its rule undone": (
        [{"t": "set", "p": "payload", "pt": "msg", "to": "a.b.c", "tot": "msg"},
         {"t": "change", "p": "topic", "pt": "msg", "from": "t", "fromt": "str", "to": "nothere.x", "tot": "msg"},
         {"t": "set", "p": "done", "pt": "msg", "to": "true", "tot": "bool"}],
        [{"payload": 1, "topic": "t"}],
        [{"payload": 1, "topic": "t", "done": True}],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CHANGE_CASES)
async def test_change_as_node_red(case: str) -> None:
    rules, inputs, outputs = CHANGE_CASES[case]
    outcome = await run_node(change_node(rules), inputs)
    assert outcome.port() == outputs
    assert outcome.errors == []


async def test_change_reports_an_unusable_search_value_and_goes_on() -> None:
    rules = [{"t": "change", "p": "payload", "pt": "msg", "from": "find", "fromt": "msg", "to": "X", "tot": "str"},
             {"t": "set", "p": "topic", "pt": "msg", "to": "after", "tot": "str"}]  # fmt: skip
    outcome = await run_node(change_node(rules), [{"payload": "abc", "find": {"o": 1}}, {"payload": "b", "find": None}])
    assert outcome.error_texts() == [
        "Invalid 'from' property: unsupported type: object",
        "Invalid 'from' property: unsupported type: object",
    ]
    # As Node-RED: the message still goes on, through the rest of the rules.
    assert outcome.port() == [{"payload": "abc", "topic": "after", "find": {"o": 1}},
                              {"payload": "b", "topic": "after", "find": None}]  # fmt: skip
    assert outcome.errors[0].payload == "abc"


async def test_change_warns_where_a_value_cannot_be_set(caplog: pytest.LogCaptureFixture) -> None:
    rules = [{"t": "set", "p": "payload.x", "pt": "msg", "to": "1", "tot": "num"}]
    with caplog.at_level(logging.WARNING):
        outcome = await run_node(change_node(rules), [{"payload": 5}])
    assert outcome.port() == [{"payload": 5}]
    assert "Cannot set property of non-object type: payload.x" in caplog.text


async def test_change_flow_and_global_context() -> None:
    rules = [
        {"t": "set", "p": "fromflow", "pt": "msg", "to": "obj.k", "tot": "flow"},
        {"t": "set", "p": "fromglobal", "pt": "msg", "to": "g", "tot": "global"},
        {"t": "change", "p": "name", "pt": "flow", "from": "-", "fromt": "str", "to": "+", "tot": "str"},
        {"t": "change", "p": "count", "pt": "flow", "from": "5", "fromt": "num", "to": "6", "tot": "num"},
        {"t": "set", "p": "obj.new", "pt": "flow", "to": "payload", "tot": "msg"},
        {"t": "move", "p": "payload", "pt": "msg", "to": "moved", "tot": "flow"},
        {"t": "delete", "p": "#:(memory)::gone", "pt": "flow"},
        {"t": "move", "p": "count", "pt": "flow", "to": "count", "tot": "msg"},
        {"t": "set", "p": "seen", "pt": "global", "to": "true", "tot": "bool"},
    ]
    async with run_flow([TAB, change_node(rules)], node_types=TYPES) as flow:
        context = flow.engine.contexts.flow("A")
        for key, value in {"count": 5, "name": "a-b", "obj": {"k": 1}, "gone": 1}.items():
            context.set(key, value)
        flow.engine.contexts.global_store.set("g", "x")
        await flow.inject("n", "P")
        out = await flow.expect("n")
    assert as_node_red(out) == {"fromflow": 1, "fromglobal": "x", "count": 6}
    assert {key: context.get(key) for key in sorted(context.keys())} == {
        "moved": "P", "name": "a+b", "obj": {"k": 1, "new": "P"},
    }  # fmt: skip
    assert flow.engine.contexts.global_store.get("seen") is True


async def test_change_on_context_without_a_match_passes_the_message_on() -> None:
    # Node-RED loses the message here (its callback is never called); evflow passes it on.
    rules = [{"t": "change", "p": "count", "pt": "flow", "from": "6", "fromt": "num", "to": "7", "tot": "num"}]
    outcome = await run_node(change_node(rules), [{"payload": 1}], flow_context={"count": 5})
    assert outcome.port() == [{"payload": 1}]
    assert outcome.flow.engine.contexts.flow("A").get("count") == 5


async def test_change_deep_copy() -> None:
    rules = [
        {"t": "set", "p": "a", "pt": "msg", "to": '{"x":1}', "tot": "json"},
        {"t": "set", "p": "shared", "pt": "msg", "to": "a", "tot": "msg"},
        {"t": "set", "p": "copied", "pt": "msg", "to": "a", "tot": "msg", "dc": True},
        {"t": "set", "p": "a.x", "pt": "msg", "to": "2", "tot": "num"},
    ]
    outcome = await run_node(change_node(rules), [{"payload": 0}])
    [out] = outcome.port()
    assert (out["a"], out["shared"], out["copied"]) == ({"x": 2}, {"x": 2}, {"x": 1})


async def test_change_json_values_are_each_messages_own() -> None:
    rules = [
        {"t": "set", "p": "payload", "pt": "msg", "to": '{"n":[]}', "tot": "json"},
        {"t": "change", "p": "payload.n", "pt": "msg", "from": "", "fromt": "str", "to": "", "tot": "str"},
    ]
    second = change_node([{"t": "set", "p": "payload.n[0]", "pt": "msg", "to": "1", "tot": "num"}], "second")
    async with run_flow([TAB, change_node(rules, wires=[["second"]]), second], node_types=TYPES) as flow:
        await flow.inject("n", 0)
        await flow.inject("n", 0)
        outs = [(await flow.expect("second")).payload for _ in range(2)]
    assert outs == [{"n": [1]}, {"n": [1]}]


async def test_change_env_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVFLOW_TEST_SITE", "depot-7")
    rules = [
        {"t": "set", "p": "site", "pt": "msg", "to": "EVFLOW_TEST_SITE", "tot": "env"},
        {"t": "set", "p": "id", "pt": "msg", "to": "${NR_NODE_ID}/x", "tot": "env"},
    ]
    outcome = await run_node(change_node(rules), [{"payload": 0}])
    assert outcome.port() == [{"payload": 0, "site": "depot-7", "id": "n/x"}]


@pytest.mark.parametrize(
    ("legacy", "inputs", "outputs"),
    [
        ({"action": "replace", "property": "payload", "to": "msg.topic"}, [{"payload": "P", "topic": "T"}],
         [{"payload": "T", "topic": "T"}]),
        ({"action": "change", "property": "payload", "from": "a+", "to": "<$&>", "reg": True},
         [{"payload": "caaab a"}], [{"payload": "c<aaa>b <a>"}]),
        ({"action": "change", "property": "payload", "from": "a+", "to": "<$&>", "reg": None},
         [{"payload": "caaab a"}], [{"payload": "c<aaa>b <a>"}]),
        ({"action": "change", "property": "payload", "from": "a+", "to": "<$&>"},
         [{"payload": "caaab a+"}], [{"payload": "caaab <a+>"}]),
        ({"action": "delete", "property": "topic"}, [{"payload": 1, "topic": "x"}], [{"payload": 1}]),
        ({"action": "move", "property": "payload", "to": "kept"}, [{"payload": 1}], [{"kept": 1}]),
    ],
)  # fmt: skip
async def test_change_node_red_0x_single_rule(legacy: dict[str, Any], inputs: list[Any], outputs: list[Any]) -> None:
    outcome = await run_node(change_node(None, **legacy), inputs)
    assert outcome.port() == outputs


async def test_change_set_rule_migrations() -> None:
    # A set rule without `tot` whose value starts with "msg." copies that property; `re` marks a regex.
    rules = [
        {"t": "set", "p": "payload", "to": "msg.topic"},
        {"t": "change", "p": "topic", "from": "^T", "to": "U", "re": True},
    ]
    outcome = await run_node(change_node(rules), [{"payload": "P", "topic": "TT"}])
    assert outcome.port() == [{"payload": "TT", "topic": "UT"}]


async def test_change_without_rules_passes_messages_on() -> None:
    outcome = await run_node(change_node([]), [{"payload": 1}])
    assert outcome.port() == [{"payload": 1}]


@pytest.mark.parametrize(
    ("node", "path", "text"),
    [
        (change_node([{"t": "set", "p": "payload", "pt": "msg", "to": "$.x", "tot": "jsonata"}]),
         "$[1].rules[0].to", "JSONata"),
        (change_node([{"t": "change", "p": "payload", "pt": "msg", "from": "(", "fromt": "re", "to": "", "tot": "str"}]),
         "$[1].rules[0].from", "invalid regular expression"),
        (change_node([{"t": "set", "p": "payload..x", "pt": "msg", "to": "", "tot": "str"}]),
         "$[1].rules[0].p", "invalid property expression"),
        (change_node([{"t": "set", "p": "#:(file)::x", "pt": "flow", "to": "", "tot": "str"}]),
         "$[1].rules[0].p", "only the memory store"),
        (change_node([{"t": "set", "p": "payload", "pt": "msg", "to": "{", "tot": "json"}]),
         "$[1].rules[0].to", "invalid JSON"),
        (change_node([{"t": "move", "p": "payload", "pt": "msg", "to": "x", "tot": "str"}]),
         "$[1].rules[0].tot", "a move goes to a msg, flow or global property"),
        (change_node([{"t": "swap", "p": "payload", "pt": "msg"}]), "$[1].rules[0].t", "expected one of"),
        (change_node([{"t": "set", "p": "payload", "pt": "str"}]), "$[1].rules[0].pt", "expected one of"),
        (change_node([{"t": "set", "p": "payload", "pt": "msg", "form": "x"}]), "$[1].rules[0].form", "unknown key"),
        (change_node(None), "$[1].action", "needs `rules`"),
        (change_node([{"t": "change", "p": "payload", "pt": "msg", "from": "a[", "fromt": "msg", "to": "",
                       "tot": "str"}]), "$[1].rules[0].from", "invalid property expression"),
    ],
)  # fmt: skip
def test_change_bad_config(tmp_path: Path, node: dict[str, Any], path: str, text: str) -> None:
    [(where, what)] = load_problems(tmp_path, [node])
    assert where.endswith(path)
    assert text in what


# ---- switch --------------------------------------------------------------------------------------

# A table of payloads through one switch of many rules, and the outputs Node-RED 4.1 sent each to.
SWITCH_RULES_1 = [
    {"t": "eq", "v": "5", "vt": "str"}, {"t": "eq", "v": "5", "vt": "num"}, {"t": "neq", "v": "5", "vt": "num"},
    {"t": "lt", "v": "10", "vt": "num"}, {"t": "lte", "v": "b", "vt": "str"}, {"t": "gt", "v": "10", "vt": "num"},
    {"t": "gte", "v": "5", "vt": "num"}, {"t": "btwn", "v": "10", "vt": "num", "v2": "1", "v2t": "num"},
    {"t": "cont", "v": "1", "vt": "str"}, {"t": "regex", "v": "^a", "vt": "str", "case": True}, {"t": "true"},
    {"t": "false"}, {"t": "null"}, {"t": "nnull"}, {"t": "istype", "v": "number", "vt": "number"},
    {"t": "istype", "v": "json", "vt": "json"}, {"t": "istype", "v": "object", "vt": "object"}, {"t": "empty"},
    {"t": "nempty"}, {"t": "hask", "v": "a", "vt": "str"}, {"t": "hask", "v": "0", "vt": "str"}, {"t": "else"},
]  # fmt: skip
SWITCH_TABLE_1: list[tuple[Any, list[int]]] = [
    (5, [0, 1, 3, 6, 7, 13, 14, 15]), ("5", [0, 1, 3, 4, 6, 7, 13, 15, 18, 20]), ("05", [1, 3, 4, 6, 7, 13, 18, 20]),
    (" 5 ", [1, 3, 4, 6, 7, 13, 15, 18, 20]), (10, [2, 6, 7, 8, 13, 14, 15]), ("10", [2, 4, 6, 7, 8, 13, 15, 18, 20]),
    (1.5, [2, 3, 7, 8, 13, 14, 15]), ("abc", [2, 4, 9, 13, 18, 20]), ("ABC", [2, 4, 9, 13, 18, 20]),
    ("b", [2, 4, 13, 18, 20]), (True, [2, 3, 7, 10, 13, 15]), (False, [2, 3, 11, 13, 15]), (None, [2, 3, 12, 15]),
    (UNDEFINED, [2, 12]), ([], [2, 3, 4, 13, 17]), ([5], [0, 1, 3, 4, 6, 7, 13, 15, 18, 20]),
    (["x"], [2, 13, 18, 20]), ({}, [2, 4, 13, 16, 17]), ({"a": 1}, [2, 4, 13, 16, 18, 19]), ("", [2, 3, 4, 13, 17]),
    (b"A1", [2, 4, 8, 9, 13, 18, 20]), (b"", [2, 3, 4, 13, 17]), ('{"a":1}', [2, 8, 13, 15, 18, 20]),
]  # fmt: skip

SWITCH_RULES_2 = [
    {"t": "eq", "v": "true", "vt": "bool"}, {"t": "eq", "v": ""}, {"t": "eq", "v": "abc"},
    {"t": "lt", "v": "abd", "vt": "str"}, {"t": "btwn", "v": "a", "vt": "str", "v2": "c", "v2t": "str"},
    {"t": "cont", "v": "5", "vt": "num"}, {"t": "istype", "v": "string", "vt": "string"},
    {"t": "istype", "v": "boolean", "vt": "boolean"}, {"t": "istype", "v": "array", "vt": "array"},
    {"t": "istype", "v": "buffer", "vt": "buffer"}, {"t": "istype", "v": "undefined", "vt": "undefined"},
    {"t": "istype", "v": "null", "vt": "null"}, {"t": "hask", "v": "length", "vt": "str"},
    {"t": "hask", "v": "1", "vt": "num"}, {"t": "eq", "v": "[5]", "vt": "json"}, {"t": "else"},
    {"t": "gte", "v": "", "vt": "str"}, {"t": "else"}, {"t": "neq"}, {"t": "regex", "v": "\\d+$", "vt": "str"},
]  # fmt: skip
SWITCH_TABLE_2: list[tuple[Any, list[int]]] = [
    (5, [5, 16, 18, 19]), ("5", [3, 5, 6, 12, 16, 18, 19]), ("05", [3, 5, 6, 12, 13, 16, 18, 19]),
    (" 5 ", [3, 5, 6, 12, 13, 16, 18]), (10, [15, 16, 18, 19]), ("10", [3, 6, 12, 13, 16, 18, 19]),
    (1.5, [5, 16, 18, 19]), ("abc", [2, 3, 4, 6, 12, 13, 16, 18]), ("ABC", [3, 6, 12, 13, 16, 18]),
    ("b", [4, 6, 12, 16, 18]), (True, [0, 7, 16, 18]), (False, [1, 7, 16, 18]), (None, [11, 16, 18]),
    (UNDEFINED, [10, 17, 18]), ([], [1, 3, 8, 12, 16, 18]), ([5], [3, 5, 8, 12, 16, 18, 19]),
    (["x", "y"], [8, 12, 13, 16, 18]), ({}, [3, 16, 18]), ({"a": 1}, [3, 16, 18]), ("", [1, 3, 6, 12, 16, 18]),
    (b"A1", [3, 9, 13, 16, 18, 19]), (b"", [1, 3, 9, 16, 18]), ('{"a":1}', [6, 12, 13, 16, 18]),
    ("json", [6, 12, 13, 14, 16, 18]), ("undefined", [6, 12, 13, 16]), (0, [1, 16, 18, 19]),
    ("0", [1, 3, 6, 12, 16, 18, 19]),
]  # fmt: skip


@pytest.mark.parametrize(("rules", "table"), [(SWITCH_RULES_1, SWITCH_TABLE_1), (SWITCH_RULES_2, SWITCH_TABLE_2)])
async def test_switch_rules_as_node_red(rules: list[dict[str, Any]], table: list[tuple[Any, list[int]]]) -> None:
    inputs = [new_message(payload).with_props({"row": row}) for row, (payload, _) in enumerate(table)]
    outcome = await run_node(switch_node(rules), inputs)
    routed: list[list[int]] = [[] for _ in table]
    for port, sent in enumerate(outcome.ports):
        for msg in sent:
            routed[msg.props["row"]].append(port)
    assert routed == [ports for _, ports in table]
    assert outcome.errors == []


async def test_switch_stops_at_the_first_match_and_else() -> None:
    rules = [{"t": "gt", "v": "5", "vt": "num"}, {"t": "else"}, {"t": "lt", "v": "3", "vt": "num"}, {"t": "else"}]
    every = await run_node(switch_node(rules), [{"payload": p} for p in (7, 4, 1)])
    assert [[m["payload"] for m in every.port(i)] for i in range(4)] == [[7], [4, 1], [1], [7]]
    first = await run_node(switch_node(rules, checkall="false"), [{"payload": p} for p in (7, 4, 1)])
    assert [[m["payload"] for m in first.port(i)] for i in range(4)] == [[7], [4, 1], [], []]


async def test_switch_previous_value() -> None:
    rules = [
        {"t": "eq", "v": "", "vt": "prev"},
        {"t": "gt", "v": "", "vt": "prev"},
        {"t": "eq", "v": "x", "vt": "json"},
    ]
    outcome = await run_node(switch_node(rules, checkall="false"), [{"payload": p} for p in (1, 1, 3, "json")])
    # The first message compares with null (1 > null); "json" is what a `json` value reads as.
    assert [[m["payload"] for m in outcome.port(i)] for i in range(3)] == [[1], [1, 3], ["json"]]


async def test_switch_property_and_values_from_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVFLOW_TEST_LIMIT", "10")
    rules = [
        {"t": "gt", "v": "limit", "vt": "msg"},
        {"t": "eq", "v": "mode", "vt": "flow"},
        {"t": "lt", "v": "EVFLOW_TEST_LIMIT", "vt": "env"},
        {"t": "btwn", "v": "low", "vt": "flow", "v2": "payload.high", "v2t": "msg"},
    ]
    node = switch_node(rules, property="level", propertyType="flow")
    outcome = await run_node(node, [{"payload": {"high": 20}, "limit": 7}, {"payload": {}, "limit": 9}],
                             flow_context={"level": 8, "mode": 8, "low": 8})  # fmt: skip
    assert [len(outcome.port(i)) for i in range(4)] == [1, 2, 2, 1]
    assert outcome.port(0)[0]["limit"] == 7


async def test_switch_reads_what_is_not_there_as_undefined() -> None:
    rules = [{"t": "null"}, {"t": "istype", "v": "undefined", "vt": "undefined"}]
    node = switch_node(rules, property="payload.x.y")
    outcome = await run_node(node, [{"payload": "abc"}, {"payload": {"x": {}}}, {"payload": {"x": {"y": 0}}}])
    assert [len(outcome.port(i)) for i in range(2)] == [2, 2]


async def test_switch_regular_expression_from_the_message() -> None:
    rules = [{"t": "regex", "v": "pattern", "vt": "msg", "case": False}]
    outcome = await run_node(switch_node(rules), [{"payload": "abc", "pattern": "^A"}, {"payload": "abc", "pattern": "b"},
                                                  {"payload": "abc", "pattern": "("}])  # fmt: skip
    assert [m["pattern"] for m in outcome.port(0)] == ["b"]
    [error] = outcome.error_texts()
    assert error.startswith("Invalid regular expression: /(/")


async def test_switch_sends_copies_to_each_output() -> None:
    # Output 0 leads to a change node that changes the payload in place: output 1's copy must not see it.
    nodes = [change_node([{"t": "set", "p": "payload.x", "pt": "msg", "to": "1", "tot": "num"}], "changer", [["sink"]]),
             {"id": "sink", "type": "test-sink", "z": "A", "wires": []}]  # fmt: skip
    rules = [{"t": "nnull"}, {"t": "nnull"}]
    outcome = await run_node(switch_node(rules, wires=[["changer"], []]), [{"payload": {"a": 1}}], extra=nodes)
    assert outcome.port(1) == [{"payload": {"a": 1}}]
    assert as_node_red(await outcome.flow.expect("sink")) == {"payload": {"a": 1, "x": 1}}


def parts(sequence: str, index: int, count: int | None = None, **more: Any) -> dict[str, Any]:
    return {"id": sequence, "index": index, **({"count": count} if count is not None else {}), **more}


async def test_switch_sequence_rules() -> None:
    rules = [{"t": "head", "v": "2", "vt": "num"}, {"t": "tail", "v": "2", "vt": "num"},
             {"t": "index", "v": "1", "vt": "num", "v2": "3", "v2t": "num"}]  # fmt: skip
    inputs = [{"payload": "a", "parts": parts("S", 0)}, {"payload": "b", "parts": parts("S", 1)},
              {"payload": "x", "parts": parts("T", 0, 1)}, {"payload": "c", "parts": parts("S", 2)},
              {"payload": "d", "parts": parts("S", 3)}, {"payload": "e", "parts": parts("S", 4, 5)}]  # fmt: skip
    outcome = await run_node(switch_node(rules), inputs)
    # A tail rule holds each sequence until it is complete, then routes it in the order it came.
    assert outcome.port(0) == [{"payload": "x", "parts": parts("T", 0, 1)}, {"payload": "a", "parts": parts("S", 0, 5)},
                               {"payload": "b", "parts": parts("S", 1, 5)}]  # fmt: skip
    assert [m["payload"] for m in outcome.port(1)] == ["x", "d", "e"]
    assert [m["payload"] for m in outcome.port(2)] == ["b", "c", "d"]


async def test_switch_sequence_rules_need_msg_parts() -> None:
    outcome = await run_node(switch_node([{"t": "head", "v": "2", "vt": "num"}]), [{"payload": 1}])
    assert outcome.error_texts() == ["Cannot read properties of undefined (reading 'index')"]
    assert outcome.port(0) == []


async def test_switch_repair_makes_a_sequence_per_output() -> None:
    rules = [{"t": "lt", "v": "3", "vt": "num"}, {"t": "gte", "v": "2", "vt": "num"}]
    inputs = [{"payload": p, "parts": parts("S", i, 4, type="array", len=1)} for i, p in enumerate((1, 4, 2, 5))]
    outcome = await run_node(switch_node(rules, repair=True), [*inputs, {"payload": 9}])
    low, high = outcome.port(0), outcome.port(1)
    assert [(m["payload"], m["parts"]["index"], m["parts"]["count"]) for m in low] == [(1, 0, 2), (2, 1, 2)]
    # The sequence goes out once complete; a message outside any sequence goes through as it came.
    in_sequence, alone = high[:3], high[3:]
    assert [(m["payload"], m["parts"]["index"], m["parts"]["count"]) for m in in_sequence] == [
        (4, 0, 3), (2, 1, 3), (5, 2, 3),
    ]  # fmt: skip
    assert alone == [{"payload": 9}]
    # Each output's sequence has an id of its own, and keeps the other parts properties.
    assert len({m["parts"]["id"] for m in low}) == 1 and len({m["parts"]["id"] for m in in_sequence}) == 1
    assert low[0]["parts"]["id"] not in ("S", in_sequence[0]["parts"]["id"])
    assert low[0]["parts"]["type"] == "array" and low[0]["parts"]["len"] == 1


async def test_switch_outputs_follow_its_rules(tmp_path: Path) -> None:
    rules = [{"t": "eq", "v": "a", "vt": "str"}, {"t": "eq", "v": "b", "vt": "str"}, {"t": "else"}]
    plan = load_plan_of(tmp_path, [switch_node(rules)])
    [node] = [n for n in plan.nodes if n.id == "n"]
    assert Switch.outputs(node.config) == 3


def load_plan_of(tmp_path: Path, nodes: list[dict[str, Any]]) -> Any:
    import json

    path = tmp_path / "flow.json"
    path.write_text(json.dumps([TAB, *nodes]))
    return load_plan([path], registry=Registry.from_entry_points().with_types(*TYPES), env={})


@pytest.mark.parametrize(
    ("node", "path", "text"),
    [
        (switch_node([{"t": "jsonata_exp", "v": "payload > 1", "vt": "jsonata"}]), "$[1].rules[0].t", "JSONata"),
        (switch_node([{"t": "eq", "v": "payload", "vt": "jsonata"}]), "$[1].rules[0].v", "JSONata"),
        (switch_node([{"t": "btwn", "v": "1", "vt": "num", "v2": "x", "v2t": "jsonata"}]), "$[1].rules[0].v2",
         "JSONata"),
        (switch_node([{"t": "regex", "v": "(", "vt": "str"}]), "$[1].rules[0].v", "Invalid regular expression"),
        (switch_node([{"t": "eq", "v": "1", "vt": "number"}]), "$[1].rules[0].v", "unknown value type"),
        (switch_node([{"t": "matches", "v": "1"}]), "$[1].rules[0].t", "expected one of"),
        (switch_node([{"t": "eq", "v": "1"}], checkall="yes"), "$[1].checkall", "expected one of"),
        (switch_node([{"t": "eq", "v": "1"}], propertyType="jsonata"), "$[1].property", "JSONata"),
        (switch_node([{"t": "eq", "v": "1"}], property="payload["), "$[1].property", "invalid property expression"),
    ],
)  # fmt: skip
def test_switch_bad_config(tmp_path: Path, node: dict[str, Any], path: str, text: str) -> None:
    [(where, what)] = load_problems(tmp_path, [node])
    assert where.endswith(path)
    assert text in what
