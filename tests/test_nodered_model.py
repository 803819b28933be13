"""Node-RED's message and value model in evflow: property expressions (runtime/properties.py), context
stores (runtime/context.py), typed inputs (runtime/typedinput.py) and ``${VAR}`` in flow files
(runtime/flowfile.py).

Where a test says "Node-RED 4.1.9's answer", the expected value was not reasoned out but taken from
Node-RED itself: ``normalisePropertyExpression``, ``getMessageProperty`` and ``setMessageProperty``
of @node-red/util 4.1.9 (util/lib/util.js) and JavaScript's ``Number()``/``JSON.parse``, run under
node 20. A test marked ``xfail(strict=True, reason="bug: …")`` records such an answer that evflow
does not give yet.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflow.runtime.context import Contexts, ContextStore
from evflow.runtime.flowfile import FlowProblem, is_env_reference, load_flow_files, substitute
from evflow.runtime.message import Message, new_message
from evflow.runtime.properties import (
    UNDEFINED,
    PropertyError,
    delete_property,
    get_property,
    parse_property,
    set_property,
)
from evflow.runtime.typedinput import TypedValue, TypedValueError, env_text, js_number, js_regex

# ---- helpers -----------------------------------------------------------------------------------


def message(fields: Mapping[str, Any]) -> Message:
    """A message from Node-RED's message object (a deep copy: a message owns its containers)."""
    fields = copy.deepcopy(dict(fields))
    payload = fields.pop("payload", UNDEFINED)
    topic = fields.pop("topic", UNDEFINED)
    return new_message(payload, topic).with_props(fields)


def as_object(msg: Message) -> dict[str, Any]:
    """The message as Node-RED's message object (without ``_msgid``)."""
    fields = dict(msg.props)
    if msg.payload is not UNDEFINED:
        fields["payload"] = msg.payload
    if msg.topic is not UNDEFINED:
        fields["topic"] = msg.topic
    return fields


def get(msg: Message, expression: str) -> Any:
    return get_property(msg, parse_property(expression))


class Values:
    """What evaluating a typed value needs from its node: env, flow and global context."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._env = dict(env or {})
        self.flow = ContextStore()
        self.global_context = ContextStore()

    def env(self, name: str) -> str | None:
        return self._env.get(name)


# ---- parse_property ----------------------------------------------------------------------------

# Node-RED 4.1.9's answers: normalisePropertyExpression(expr) after getMessageProperty's strip of a
# leading "msg.". A trailing all-digit name stays text ("a.1" -> "1"); inside, it becomes a number.
PARSED: dict[str, tuple[str | int, ...]] = {
    "payload": ("payload",),
    "msg.payload": ("payload",),
    "payload.a.b.c": ("payload", "a", "b", "c"),
    "payload[0]": ("payload", 0),
    "payload[12].x": ("payload", 12, "x"),
    "payload.0": ("payload", "0"),
    "payload.0.x": ("payload", 0, "x"),
    "a.01.b": ("a", 1, "b"),
    "a[01]": ("a", 1),
    "payload['a b']": ("payload", "a b"),
    'payload["a.b"]': ("payload", "a.b"),
    'payload["a"]["b"]': ("payload", "a", "b"),
    'payload["a"].b': ("payload", "a", "b"),
    'payload["a"]x': ("payload", "a", "x"),
    'a["x]y"]': ("a", "x]y"),
    "a['x\"y']": ("a", 'x"y'),
    "'a'.b": ("a", "b"),
    "$x.y": ("$x", "y"),
    "_a.$b": ("_a", "$b"),
    "payload[1.5]": ("payload", 1, 5),
    "payload.a.0[1]": ("payload", "a", "0", 1),
    "payload[0].1": ("payload", 0, "1"),
    "a[0]b": ("a", 0, "b"),
    "a.b-c": ("a", "b-c"),
    "a.9z": ("a", "9z"),
    "msg.msg.payload": ("msg", "payload"),
    "msg": ("msg",),
    "MSG.payload": ("MSG", "payload"),
    "payload.length": ("payload", "length"),
    "é": ("é",),
}

# Node-RED 4.1.9's answers: each throws "Invalid property expression: <this>".
UNPARSABLE: dict[str, str] = {
    "": "zero-length",
    "msg.": "zero-length",
    "payload.": "unterminated expression",
    ".payload": "unexpected . at position 0",
    "[0]": "unexpected [ at position 0",
    "msg.[0]": "unexpected [ at position 0",
    "payload[": "unterminated expression",
    "payload[0": "unterminated expression",
    "a[0].": "unterminated expression",
    "payload[]": "unexpected ] at position 8",
    "payload]": "unexpected ] at position 7",
    "payload[a]": "unexpected a at position 8",
    "payload[-1]": "unexpected - at position 8",
    'payload["a"': "unexpected array expression at position 9",
    "payload['']": "zero-length string at position 9",
    "payload a": "unexpected ' ' at position 7",
    "a.b c": "unexpected ' ' at position 3",
    "payload..a": "unexpected . at position 8",
    "payload.-a": "unexpected - at position 8",
    "a.é": "unexpected é at position 2",
    '"a"x': "unexpected x",
}


@pytest.mark.parametrize(("expression", "parts"), PARSED.items())
def test_parse_property_splits_as_node_red_does(expression: str, parts: tuple[str | int, ...]) -> None:
    assert parse_property(expression) == parts


@pytest.mark.parametrize(("expression", "why"), UNPARSABLE.items())
def test_parse_property_refuses_what_node_red_refuses(expression: str, why: str) -> None:
    with pytest.raises(PropertyError, match=re.escape(why)):
        parse_property(expression)


def test_nested_msg_references_are_refused_as_unsupported() -> None:
    # Node-RED evaluates payload[msg.topic] against the message; evflow says it does not.
    for expression in ("payload[msg.topic]", "payload[msg['x']]"):
        with pytest.raises(PropertyError, match="nested msg reference .* not supported by evflow"):
            parse_property(expression)


@pytest.mark.parametrize("expression", ["a[1\u0663]", "a[1\uff11]", "payload.\u212a"])
def test_parse_property_takes_only_ascii_digits_and_letters(expression: str) -> None:
    # Node-RED 4.1.9: "a[1٣]" throws "unexpected array expression at position 2";
    # "payload.K" (KELVIN SIGN) throws "unexpected K at position 8".
    with pytest.raises(PropertyError):
        parse_property(expression)


# ---- get_property / set_property / delete_property ---------------------------------------------

MSG: dict[str, Any] = {
    "payload": {"a": {"b": [10, {"c": "x"}], "n": None, "s": "str", "z": 0}, "list": [1, 2, 3]},
    "topic": "t",
    "extra": {"k": [5]},
}

# Node-RED 4.1.9's answers: getMessageProperty(MSG, expression).
GOT: dict[str, Any] = {
    "payload.a.b[1].c": "x",
    "payload.a.b.1.c": "x",
    "payload.list.length": 3,
    "payload.a.s.length": 3,
    "payload.a.s[1]": "t",
    "payload.missing": UNDEFINED,
    "payload.a.n": None,
    "payload.a.z.x": UNDEFINED,  # a number has no properties: undefined, no error
    "payload.a.b[5]": UNDEFINED,
    "payload.list.01": UNDEFINED,  # "01" is not an array index
    "extra.k[0]": 5,
    "nope": UNDEFINED,
    "topic.length": 1,
    "topic[0]": "t",
    "msg.payload.a.s": "str",
}

# Node-RED 4.1.9's answers: getMessageProperty(MSG, expression) throws "Cannot read properties of …".
GET_THROWS: dict[str, str] = {
    "payload.missing.x": "Cannot read properties of undefined (reading 'x')",
    "payload.a.n.x": "Cannot read properties of null (reading 'x')",
    "payload.a.b[5].c": "Cannot read properties of undefined (reading 'c')",
    "nope.x": "Cannot read properties of undefined (reading 'x')",
    "payload.a.s.x.y": "Cannot read properties of undefined (reading 'y')",
    "payload.a.z.x.y": "Cannot read properties of undefined (reading 'y')",
}


@pytest.mark.parametrize(("expression", "value"), GOT.items())
def test_get_property_reads_as_node_red_does(expression: str, value: Any) -> None:
    got = get(message(MSG), expression)
    assert got is value if value is UNDEFINED or value is None else got == value


@pytest.mark.parametrize(("expression", "error"), GET_THROWS.items())
def test_get_property_steps_into_undefined_or_null_fail(expression: str, error: str) -> None:
    with pytest.raises(PropertyError, match=re.escape(error)):
        get(message(MSG), expression)


@pytest.mark.parametrize(("expression", "value"), [
    # Node-RED 4.1.9's answers (JavaScript's obj["1"] is obj[1]).
    ("payload.a.b.1", {"c": "x"}),
    ('payload.a.b["1"]', {"c": "x"}),
    ("payload.a.s.1", "t"),
])
def test_get_property_digit_names_index_arrays_and_strings(expression: str, value: Any) -> None:
    assert get(message(MSG), expression) == value


def _with(changes: Mapping[str, Any]) -> dict[str, Any]:
    """MSG's payload with ``changes`` applied at its top level."""
    expected = copy.deepcopy(MSG)
    expected["payload"].update(changes)
    return expected


def _a_with(changes: Mapping[str, Any]) -> dict[str, Any]:
    expected = copy.deepcopy(MSG)
    expected["payload"]["a"].update(changes)
    return expected


# Node-RED 4.1.9's answers: the message after setMessageProperty(MSG, expression, value, createMissing).
SET: list[tuple[str, Any, bool, dict[str, Any]]] = [
    ("payload.new.deep", 1, True, _with({"new": {"deep": 1}})),
    ("payload.new[2]", 1, True, _with({"new": [None, None, 1]})),  # JavaScript's holes show as null
    ("payload.new[0].x", 1, True, _with({"new": [{"x": 1}]})),
    ("payload.list[5]", 9, True, _with({"list": [1, 2, 3, None, None, 9]})),
    ("payload.a.b", 1, False, _a_with({"b": 1})),
    ("newprop.x", 1, True, {**copy.deepcopy(MSG), "newprop": {"x": 1}}),
    # nothing is created beneath a string, a number or null, and nothing is created without createMissing
    ("payload.a.s.x", 1, True, MSG),
    ("payload.a.z.x", 1, True, MSG),
    ("payload.a.n.x", 1, True, MSG),
    ("topic.x", 1, True, MSG),
    ("payload.new.deep", 1, False, MSG),
]


@pytest.mark.parametrize(("expression", "value", "create", "expected"), SET)
def test_set_property_changes_the_message_as_node_red_does(
    expression: str, value: Any, create: bool, expected: dict[str, Any]
) -> None:
    changed = set_property(message(MSG), parse_property(expression), value, create)
    assert as_object(changed) == expected


@pytest.mark.parametrize("expression", ["payload.list.1", 'payload.list["1"]'])
def test_set_property_digit_names_index_arrays(expression: str) -> None:
    # Node-RED 4.1.9's answer: list becomes [1, 9, 3].
    changed = set_property(message(MSG), parse_property(expression), 9)
    assert as_object(changed) == _with({"list": [1, 9, 3]})


# Node-RED 4.1.9's answers: setMessageProperty(MSG, expression, undefined): a numeric index is
# spliced out of an array; a missing parent changes nothing.
DELETED: dict[str, dict[str, Any]] = {
    "payload.list[1]": _with({"list": [1, 3]}),
    "payload.list[7]": MSG,
    "payload.missing.x": MSG,
    "payload.a.n.x": MSG,
    "extra": {key: value for key, value in MSG.items() if key != "extra"},
    "payload.a.b": {**MSG, "payload": {**MSG["payload"], "a": {k: v for k, v in MSG["payload"]["a"].items() if k != "b"}}},
}


@pytest.mark.parametrize(("expression", "expected"), DELETED.items())
def test_delete_property_as_node_red_does(expression: str, expected: dict[str, Any]) -> None:
    assert as_object(delete_property(message(MSG), parse_property(expression))) == expected


def test_delete_payload_and_topic_leave_them_undefined() -> None:
    msg = delete_property(delete_property(message(MSG), ("payload",)), ("topic",))
    assert msg.payload is UNDEFINED and msg.topic is UNDEFINED
    assert get(msg, "payload") is UNDEFINED
    with pytest.raises(PropertyError, match="Cannot read properties of undefined"):
        get(msg, "payload.a")


def test_set_property_creates_the_root_and_replaces_a_typed_path_only() -> None:
    msg = set_property(new_message(UNDEFINED), parse_property("payload.reading.value"), 21.5)
    assert msg.payload == {"reading": {"value": 21.5}}
    msg = set_property(new_message(UNDEFINED), parse_property("payload[1]"), "x")
    assert msg.payload == [None, "x"]
    # msg._msgid is the engine's: setting it changes nothing
    assert set_property(msg, ("_msgid",), "abc").msg_id == msg.msg_id


def test_set_topic_to_null() -> None:
    # Node-RED: setMessageProperty(msg, "topic", null) makes msg.topic null (not "unchanged").
    msg = set_property(new_message(1, "old"), ("topic",), None)
    assert msg.topic is None and msg.payload == 1


def test_the_same_message_can_be_read_after_a_fan_out_copy_is_changed() -> None:
    original = message(MSG)
    copied = original.copy()
    set_property(copied, parse_property("payload.a.b[0]"), 99)
    assert get(original, "payload.a.b[0]") == 10


# Expressions for what set_property writes: names (as .name or ["quoted"]) and indexes.
_names = st.text(alphabet=st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="'\"\\"),
                 min_size=1, max_size=6)
_identifiers = st.from_regex(r"[A-Za-z_$][A-Za-z0-9_$]{0,5}", fullmatch=True)
_steps = st.lists(st.one_of(_identifiers, _names, st.integers(0, 4)), min_size=0, max_size=4)


def _expression(root: str, steps: list[str | int], prefix: bool) -> str:
    text = ("msg." if prefix else "") + root
    for step in steps:
        if isinstance(step, int):
            text += f"[{step}]"
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", step):
            text += f".{step}"
        else:
            text += f'["{step}"]'
    return text


@given(root=st.sampled_from(["payload", "reading", "parts"]), steps=_steps, prefix=st.booleans(),
       value=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3)))
def test_set_then_get_round_trips(root: str, steps: list[str | int], prefix: bool, value: Any) -> None:
    expression = _expression(root, steps, prefix)
    parts = parse_property(expression)
    assert parts == (root, *steps)
    msg = set_property(new_message(UNDEFINED, "topic"), parts, value)
    assert get_property(msg, parts) == value
    # Nothing else changed, and the message can be read back from its Node-RED object.
    assert msg.topic == "topic"
    assert set(as_object(msg)) == {root, "topic"}
    # Deleting it leaves the property undefined.
    assert get_property(delete_property(msg, parts), parts) is UNDEFINED


# ---- context -----------------------------------------------------------------------------------


def test_context_store_reads_and_writes_property_expressions() -> None:
    store = ContextStore()
    assert store.get("count") is UNDEFINED and store.keys() == [] and "count" not in store
    store.set("count", 0)
    store.set("readings.meter[2]", 5.5)
    assert store.get("count") == 0 and "count" in store  # a falsy value is there
    assert store.get("readings") == {"meter": [None, None, 5.5]}
    assert store.get("readings.meter[2]") == 5.5
    assert sorted(store.keys()) == ["count", "readings"]
    # A missing parent reads as undefined (Node-RED's memory store swallows the TypeError).
    assert store.get("nothing.here.at.all") is UNDEFINED
    store.set("off", None)
    assert store.get("off") is None and store.get("off.x") is UNDEFINED
    # Nothing is created beneath a value that is not an object or an array.
    store.set("count.x", 1)
    assert store.get("count") == 0
    # Setting undefined deletes; an array element is spliced out.
    store.set("readings.meter[0]", UNDEFINED)
    assert store.get("readings.meter") == [None, 5.5]
    store.set("count", UNDEFINED)
    assert "count" not in store and store.keys() == ["readings", "off"]


def test_context_store_refuses_a_bad_key() -> None:
    with pytest.raises(PropertyError, match="unterminated"):
        ContextStore().get("a[")
    with pytest.raises(PropertyError, match="unexpected"):
        ContextStore().set("a..b", 1)


def test_context_store_shares_values_by_reference_as_node_reds_memory_store() -> None:
    store = ContextStore()
    value = {"n": 1}
    store.set("shared", value)
    value["n"] = 2
    assert store.get("shared.n") == 2


def test_contexts_scopes() -> None:
    contexts = Contexts()
    contexts.flow("tab-1").set("x", 1)
    contexts.node("n1").set("x", 2)
    contexts.global_store.set("x", 3)
    assert contexts.flow("tab-1") is contexts.flow("tab-1")
    assert contexts.flow("tab-1").get("x") == 1 and contexts.flow("tab-2").get("x") is UNDEFINED
    assert contexts.node("n1").get("x") == 2 and contexts.node("n2").get("x") is UNDEFINED
    assert contexts.global_store.get("x") == 3


# ---- typed values ------------------------------------------------------------------------------

# JavaScript's Number(text), as node 20 answers ("NaN" for NaN).
JS_NUMBER: dict[str, float | str] = {
    "": 0, " ": 0, "12": 12, " 12 ": 12, "\n12\t": 12, "\u00a012": 12, "\u2028 12": 12, "00012": 12,
    "1.5": 1.5, "-1.5": -1.5, "+1.5": 1.5, ".5": 0.5, "5.": 5, "0.1": 0.1,
    "1e3": 1000, "1E3": 1000, "1e+3": 1000, "1e-3": 0.001, "1e-400": 0,
    "0x1F": 31, "0X1f": 31, "0o17": 15, "0O17": 15, "0b101": 5,
    "Infinity": math.inf, "+Infinity": math.inf, "-Infinity": -math.inf, "1e1000": math.inf, "-1e1000": -math.inf,
    "9007199254740993": 9007199254740992.0,
    ".": "NaN", "1e": "NaN", "e3": "NaN", "-0x1F": "NaN", "+0x1F": "NaN", "-0b1": "NaN", "0b2": "NaN", "0x": "NaN",
    "0x1.8": "NaN", "infinity": "NaN", "inf": "NaN", "NaN": "NaN", "1_000": "NaN", "1,5": "NaN", "12abc": "NaN",
    "abc": "NaN", "\u200b12": "NaN", "  -  1": "NaN",
}


@pytest.mark.parametrize(("text", "number"), JS_NUMBER.items())
def test_js_number_is_javascripts_number(text: str, number: float | str) -> None:
    result = js_number(text)
    if number == "NaN":
        assert math.isnan(result)
    else:
        assert result == number
        # An integral value is an int, so that it prints as JavaScript prints it ("12", not "12.0").
        if isinstance(number, int):
            assert type(result) is int


def test_js_number_of_non_text_values() -> None:
    # Number(null) is 0, Number(true) is 1, Number(2.0) prints as 2.
    assert (js_number(None), js_number(True), js_number(False), js_number(7), js_number(2.0)) == (0, 1, 0, 7, 2)
    assert type(js_number(2.0)) is int and js_number(2.5) == 2.5


@pytest.mark.parametrize(("text", "number"), [
    # node 20's answers: Number("١٢") and Number("１２") are NaN (JavaScript's digits are ASCII);
    # "\ufeff" is JavaScript whitespace, "\x1c" and "\x85" are not (Python's str.strip removes them).
    ("\u0661\u0662", "NaN"), ("\uff11\uff12", "NaN"), ("\ufeff12", 12), ("\x1c12", "NaN"), ("\x8512", "NaN"),
])
def test_js_number_digits_and_whitespace_are_javascripts(text: str, number: float | str) -> None:
    result = js_number(text)
    assert math.isnan(result) if number == "NaN" else result == number


def evaluate(value: Any, value_type: str | None, msg: Message | None = None, values: Values | None = None) -> Any:
    return TypedValue.of(value, value_type).evaluate(msg, values or Values())


def test_typed_constants() -> None:
    assert evaluate("text", "str") == "text"
    assert evaluate(5, "str") == "5"
    assert evaluate("5", "num") == 5 and type(evaluate("5", "num")) is int
    assert evaluate("2.50", "num") == 2.5
    assert math.isnan(evaluate("five", "num"))
    # bool is /^true$/i
    assert [evaluate(v, "bool") for v in ("true", "TRUE", "True", "false", "yes", "", "true ")] == [
        True, True, True, False, False, False, False]
    assert evaluate(True, "bool") is True and evaluate(False, "bool") is False
    assert evaluate('{"a":[1,2]}', "json") == {"a": [1, 2]}
    assert evaluate("3", "json") == 3 and evaluate('"x"', "json") == "x" and evaluate("null", "json") is None
    assert evaluate("[1,2,255]", "bin") == b"\x01\x02\xff"
    assert evaluate('"hé"', "bin") == "hé".encode()
    assert evaluate("^a.c$", "re").search("abc")
    # no type: the value as it is
    assert evaluate({"k": 1}, None) == {"k": 1} and evaluate("x", "") == "x"
    assert TypedValue.of("1", "num").is_constant and not TypedValue.of("x", "msg").is_constant


def test_typed_json_gives_each_message_a_value_of_its_own() -> None:
    typed = TypedValue.of('{"list":[1]}', "json")
    first = typed.evaluate(None, Values())
    first["list"].append(2)
    assert typed.evaluate(None, Values()) == {"list": [1]}


@pytest.mark.parametrize(("value", "value_type", "why"), [
    ("{bad", "json", "invalid JSON"),
    ("[1,", "json", "invalid JSON"),
    ("5", "bin", "a bin value is a JSON array of bytes or a string"),
    ("[1,", "bin", "invalid bin value"),
    ("(", "re", "invalid regular expression"),
    ("payload[", "msg", "unterminated expression"),
    ("a b", "flow", "unexpected ' '"),
    ("#:(file)::count", "global", "context store 'file' is not available"),
    ("$.x", "jsonata", "JSONata expressions are not supported"),
    ("YYYY-MM-DD", "date", "date format 'YYYY-MM-DD' is not supported"),
    ("x", "nonsense", "unknown value type 'nonsense'"),
])
def test_unusable_typed_values_are_refused_when_prepared(value: str, value_type: str, why: str) -> None:
    with pytest.raises(TypedValueError, match=re.escape(why)):
        TypedValue.of(value, value_type)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", '{"a": NaN}'])
def test_typed_json_is_strict_json(text: str) -> None:
    # JSON.parse("NaN") throws in node 20 ("\"NaN\" is not valid JSON").
    with pytest.raises(TypedValueError):
        TypedValue.of(text, "json")


def test_typed_values_read_from_the_message_and_the_contexts() -> None:
    values = Values()
    values.flow.set("limits", {"max": 32})
    values.global_context.set("site", "depot")
    msg = new_message({"reading": [4, 5]}, "meter")
    assert evaluate("payload.reading[1]", "msg", msg) == 5
    assert evaluate("msg.topic", "msg", msg) == "meter"
    assert evaluate("payload.nothing", "msg", msg) is UNDEFINED
    assert evaluate("payload", "msg", None) is UNDEFINED  # no message (an inject building one)
    with pytest.raises(PropertyError, match="Cannot read properties of undefined"):
        evaluate("payload.nothing.deeper", "msg", msg)
    assert evaluate("limits.max", "flow", msg, values) == 32
    assert evaluate("#:(memory)::limits.max", "flow", msg, values) == 32
    assert evaluate("site", "global", msg, values) == "depot"
    assert evaluate("missing", "global", msg, values) is UNDEFINED


def test_typed_dates() -> None:
    before = int(time.time() * 1000)
    millis = evaluate("", "date")
    assert type(millis) is int and before <= millis <= int(time.time() * 1000)
    iso = evaluate("iso", "date")
    # JavaScript's toISOString(): milliseconds and a Z
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", iso)
    moment = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
    assert abs(moment.timestamp() * 1000 - millis) < 5000
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", evaluate("object", "date"))


def test_env_text_as_node_reds_evaluate_env_property() -> None:
    values = Values({"UNIT": "kWh", "SITE": "depot", "EMPTY": ""})
    assert env_text("UNIT", values) == "kWh"  # a plain name
    assert env_text("${UNIT}", values) == "kWh"  # a whole reference
    assert env_text("meter ${UNIT} at ${SITE}", values) == "meter kWh at depot"  # references inside text
    assert env_text("${MISSING}", values) == "" and env_text("MISSING", values) == ""
    assert env_text("x${MISSING}y", values) == "xy"
    assert env_text("EMPTY", values) == ""
    # "${A B}" is a whole reference (to a variable that cannot exist); "x ${A B}" is read as a name.
    assert env_text("${A B}", values) == "" and env_text("x ${A B}", values) == ""
    assert evaluate("${UNIT}", "env", values=values) == "kWh"


def test_js_regex_translates_named_groups() -> None:
    match = js_regex(r"(?<unit>[a-z]+)(\d+)").search("kwh42")
    assert match is not None and match.group("unit") == "kwh"
    assert js_regex("ABC", ignore_case=True).search("xabcx")


# ---- ${VAR} in flow files ----------------------------------------------------------------------


def substituted(value: Any, env: Mapping[str, str]) -> tuple[Any, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    return substitute(value, env, "$[0].prop", problems), problems


def test_a_whole_value_reference_is_substituted() -> None:
    env = {"HOST": "broker.local", "PORT": "1884"}
    assert substituted("${HOST}", env) == ("broker.local", [])
    assert substituted("$(HOST)", env) == ("broker.local", [])  # Node-RED's older form
    assert substituted("${PORT}", env) == ("1884", [])  # always text, as in Node-RED
    assert substituted("${NOT_SET:-fallback}", env) == ("fallback", [])
    assert substituted("${NOT_SET:-}", env) == ("", [])
    assert substituted("${HOST:-fallback}", env) == ("broker.local", [])
    # at any depth, in arrays and objects
    assert substituted({"a": ["${HOST}", {"b": "$(PORT)"}], "n": 5, "t": True, "z": None}, env) == (
        {"a": ["broker.local", {"b": "1884"}], "n": 5, "t": True, "z": None}, [])


def test_a_reference_inside_text_is_left_as_written() -> None:
    env = {"HOST": "broker.local"}
    for text in ("mqtt://${HOST}:1883", "${HOST}/x", "x${HOST}", "$HOST", "${ HOST }", "${}", "$", "$(HOST"):
        assert substituted(text, env) == (text, []), text


def test_two_references_in_one_value_are_text_with_references_inside() -> None:
    # Node-RED's /^\${(\S+)}$/ matches too, looks up "HOST}${HOST", finds nothing and keeps the text
    # (evflow once refused the flow: "environment variable HOST}${HOST is not set").
    assert substituted("${HOST}${HOST}", {"HOST": "broker.local"}) == ("${HOST}${HOST}", [])


def test_an_unset_variable_is_an_error_at_its_path() -> None:
    value, problems = substituted({"list": ["ok", "${NOT_SET}"], "odd key": "$(ALSO_NOT_SET)"}, {})
    assert problems == [
        ("$[0].prop.list[1]", "environment variable NOT_SET is not set (and ${NOT_SET} has no default)"),
        ('$[0].prop["odd key"]', "environment variable ALSO_NOT_SET is not set (and $(ALSO_NOT_SET) has no default)"),
    ]


def test_is_env_reference_is_exactly_one_reference_without_default() -> None:
    assert is_env_reference("${MQTT_PASSWORD}")
    for value in ("${A:-b}", "$(A)", "x${A}", "${A}${B}", "${1A}", None, 5):
        assert not is_env_reference(value)


def test_flow_files_substitute_whole_values_but_never_code_or_templates(tmp_path: Path) -> None:
    nodes = [
        {"id": "f1", "type": "function", "z": "t", "name": "${NAME}", "func": "${NAME}",
         "initialize": "return `${NAME}`;", "finalize": "$(NAME)", "outputs": 1, "wires": [[]]},
        {"id": "tpl", "type": "template", "z": "t", "template": "${NAME}", "field": "${FIELD}", "wires": [[]]},
        {"id": "i1", "type": "inject", "z": "t", "props": [{"p": "payload", "v": "${NAME}", "vt": "str"},
                                                            {"p": "label", "v": "name: ${NAME}", "vt": "str"}],
         "wires": [[]]},
    ]
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(nodes))
    records, problems = load_flow_files([path], {"NAME": "pump", "FIELD": "payload"})
    assert problems == []
    function, template, inject = (record.data for record in records)
    assert function["name"] == "pump"
    assert (function["func"], function["initialize"], function["finalize"]) == ("${NAME}", "return `${NAME}`;", "$(NAME)")
    assert (template["template"], template["field"]) == ("${NAME}", "payload")
    assert inject["props"] == [{"p": "payload", "v": "pump", "vt": "str"}, {"p": "label", "v": "name: ${NAME}", "vt": "str"}]
    # raw keeps what was written
    assert records[2].raw["props"][0]["v"] == "${NAME}"


def test_flow_files_report_each_unset_variable_with_file_node_and_path(tmp_path: Path) -> None:
    nodes = [
        {"id": "b1", "type": "mqtt-broker", "broker": "${MQTT_HOST}", "port": "${MQTT_PORT:-1883}"},
        {"id": "i1", "type": "inject", "z": "t", "props": [{"p": "payload", "v": "${READING}", "vt": "num"}], "wires": [[]]},
        {"id": "fn", "type": "function", "z": "t", "func": "${NOT_CHECKED}", "wires": [[]]},
    ]
    path = tmp_path / "flows.json"
    path.write_text(json.dumps(nodes))
    records, problems = load_flow_files([path], {})
    assert [record.id for record in records] == ["fn"]
    assert problems == [
        FlowProblem(str(path), "environment variable MQTT_HOST is not set (and ${MQTT_HOST} has no default)",
                    "b1", "mqtt-broker", "$[0].broker"),
        FlowProblem(str(path), "environment variable READING is not set (and ${READING} has no default)",
                    "i1", "inject", "$[1].props[0].v"),
    ]
