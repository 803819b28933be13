"""Node-RED's json node, and JavaScript's JSON.parse / JSON.stringify it rests on.

The expected values are facts from Node.js 20 (``node -e``) and from Node-RED 4.1's json node run in
node-red-node-test-helper with the same messages.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflow.nodes import _jsvalues as js
from evflow.nodes.change import Change
from evflow.nodes.json_parser import Json
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import Message, new_message
from evflow.runtime.properties import UNDEFINED
from evflow.runtime.registry import Registry
from evflow.runtime.testing import FlowUnderTest, run_flow

TYPES = [Json, Change]

# ---- JSON.parse ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("abc", "Unexpected token 'a', \"abc\" is not valid JSON"),
        ("", "Unexpected end of JSON input"),
        ("  ", "Unexpected end of JSON input"),
        ("{", "Expected property name or '}' in JSON at position 1"),
        ('{"a":1,}', "Expected double-quoted property name in JSON at position 7"),
        ("[1,2", "Expected ',' or ']' after array element in JSON at position 4"),
        ('"abc', "Unterminated string in JSON at position 4"),
        ("nul", "Unexpected end of JSON input"),
        ("01", "Unexpected number in JSON at position 1"),
        ("1 2", "Unexpected non-whitespace character after JSON at position 2"),
        ('{"a" 1}', "Expected ':' after property name in JSON at position 5"),
        ('{"a":1,"b" 2}', "Unexpected number in JSON at position 11"),
        ('{"a":1,"b"', "Unexpected end of JSON input"),
        ('{"a":1,"b" "c"}', "Unexpected string in JSON at position 11"),
        ("{a:1}", "Expected property name or '}' in JSON at position 1"),
        ("[1,]", "Unexpected token ']', \"[1,]\" is not valid JSON"),
        ("-", "No number after minus sign in JSON at position 1"),
        ("1.", "Unterminated fractional number in JSON at position 2"),
        ("1e+", "Exponent part is missing a number in JSON at position 3"),
        ('"\\q"', "Bad escaped character in JSON at position 2"),
        ('"\\\u0100"', 'Unexpected token \'\u0100\', ""\\\u0100"" is not valid JSON'),
        ('"a\\u12G4"', "Bad Unicode escape in JSON at position 6"),
        ('"a\nb"', "Bad control character in string literal in JSON at position 2"),
        ('"a\\', "Unexpected end of JSON input"),
        ("NaN", '"NaN" is not valid JSON'),
        ("Infinity", '"Infinity" is not valid JSON'),
        ("undefined", '"undefined" is not valid JSON'),
        ("[object Object]", '"[object Object]" is not valid JSON'),
        ("NaN ", "Unexpected token 'N', \"NaN \" is not valid JSON"),
        ("-Infinity", "No number after minus sign in JSON at position 1"),
        ("\ufeff1", "Unexpected token '\ufeff', \"\ufeff1\" is not valid JSON"),
        ("1\u00a0", "Unexpected non-whitespace character after JSON at position 1"),
        ("trux", "Unexpected token 'x', \"trux\" is not valid JSON"),
        ("[nul]", "Unexpected token ']', \"[nul]\" is not valid JSON"),
        ("n-ull", "Unexpected number in JSON at position 1"),
        ("abcdefghijklmnopqrstuvwxyz", "Unexpected token 'a', \"abcdefghij\"... is not valid JSON"),
        ('{"key": value_here_long_text}', 'Unexpected token \'v\', "{"key": value_here"... is not valid JSON'),
        ("[1,2,3,4,5,6,7,8,9,10,11,12,x]", "Unexpected token 'x', ...\",10,11,12,x]\" is not valid JSON"),
        (
            '{"aaaaaaaaaaaaaaaaaaaaaaaaaa": x, "b": 2}',
            'Unexpected token \'x\', ..."aaaaaaa": x, "b": 2}" is not valid JSON',
        ),
        ('"\U0001f600\U0001f600" x', "Unexpected non-whitespace character after JSON at position 7"),
        # V8 names half a surrogate pair; evflow shows it as U+FFFD, as Node.js prints it
        ("\U0001f600", "Unexpected token '\ufffd', \"\U0001f600\" is not valid JSON"),
    ],
)
def test_json_parse_errors_are_v8s(text: str, error: str) -> None:
    with pytest.raises(js.JSONSyntaxError) as failure:
        js.json_parse(text)
    assert str(failure.value) == error
    assert not js.is_json(text)


def test_json_parse_values() -> None:
    assert js.json_parse(' {"a": [1, 2.5, -3e2, {"b": "x\\n\\u00e9"}], "c": true, "d": null} ') == {
        "a": [1, 2.5, -300, {"b": "x\né"}], "c": True, "d": None,
    }  # fmt: skip
    # Numbers as JavaScript has them: an integral value is an int wherever it was written with a point.
    for text, value in (("1.0", 1), ("-0", 0), ("1e2", 100), ("1.5", 1.5), ("1e400", math.inf)):
        parsed = js.json_parse(text)
        assert parsed == value and type(parsed) is type(value)
    assert js.json_parse(b'{"x":[1]}') == {"x": [1]}  # a Buffer is read as UTF-8
    assert js.json_parse(5) == 5 and js.json_parse(None) is None and js.json_parse([1]) == 1  # through their text
    assert js.is_json("null") and js.is_json(True) and not js.is_json({}) and not js.is_json(UNDEFINED)


# ---- JSON.stringify ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "indent", "text"),
    [
        ({"b": 1, "2": 2, "1": 1, "01": 3, "a": UNDEFINED, "c": [UNDEFINED, math.nan, math.inf, -0.0, 1e21, 1e-7]}, 0,
         '{"1":1,"2":2,"b":1,"01":3,"c":[null,null,null,0,1e+21,1e-7]}'),
        (b"\x01\x02", 0, '{"type":"Buffer","data":[1,2]}'),
        ({"a": [], "b": {}, "c": [1, {"d": 2}]}, 4, '{\n    "a": [],\n    "b": {},\n    "c": [\n        1,\n'
         '        {\n            "d": 2\n        }\n    ]\n}'),
        ("\x01\x1f\"\\/\u2028\ud800\x7f", 0, '"\\u0001\\u001f\\"\\\\/\u2028\\ud800\x7f"'),
        ([], 0, "[]"),
        ({"4294967295": 1, "4294967294": 2, "-1": 3}, 0, '{"4294967294":2,"4294967295":1,"-1":3}'),
        ({"a": [1, 2]}, "\t", '{\n\t"a": [\n\t\t1,\n\t\t2\n\t]\n}'),
        ({"x": {"y": UNDEFINED}}, 2, '{\n  "x": {}\n}'),
        (12.0, 0, "12"), (None, 0, "null"), (True, 0, "true"), ("é", 0, '"é"'),
    ],
)  # fmt: skip
def test_json_stringify_as_javascript(value: Any, indent: int | str, text: str) -> None:
    assert js.json_stringify(value, indent) == text


def test_json_stringify_undefined_and_circular() -> None:
    assert js.json_stringify(UNDEFINED) is UNDEFINED
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    with pytest.raises(TypeError, match="circular"):
        js.json_stringify(loop)
    shared = [1]
    assert js.json_stringify({"a": shared, "b": shared}) == '{"a":[1],"b":[1]}'  # shared, not circular


# ---- the json node -------------------------------------------------------------------------------

TAB = {"id": "A", "type": "tab", "label": "Flow 1", "disabled": False, "info": "", "env": []}
CATCH = {"id": "catch", "type": "catch", "z": "A", "name": "", "scope": None, "uncaught": False,
         "x": 100, "y": 300, "wires": [[]]}  # fmt: skip


def json_node(action: str = "", pretty: Any = False, prop: str = "payload", wires: Any = None) -> dict[str, Any]:
    """A json node as Node-RED 4's editor exports it."""
    return {"id": "n", "type": "json", "z": "A", "name": "", "property": prop, "action": action, "pretty": pretty,
            "x": 300, "y": 100, "wires": wires if wires is not None else [[]]}  # fmt: skip


async def taken(flow: FlowUnderTest, node_id: str) -> list[Message]:
    found = []
    while not flow.nothing_sent(node_id):
        found.append(await flow.expect(node_id))
    return found


async def converted(node: dict[str, Any], messages: list[Message], extra: list[dict[str, Any]] = (),
                    into: str = "n") -> tuple[list[Message], list[str]]:  # fmt: skip
    """What the json node sent for ``messages``, and the errors the catch node got."""
    async with run_flow([TAB, node, CATCH, *extra], node_types=TYPES) as flow:
        for msg in messages:
            await flow.inject_message(into, msg)
    errors = [msg.error.message for msg in await taken(flow, "catch") if msg.error is not None]
    return await taken(flow, "n"), errors


def payloads(*values: Any) -> list[Message]:
    return [new_message(value) for value in values]


async def test_json_converts_both_ways() -> None:
    sent, errors = await converted(json_node(), payloads(
        '{"a":1.0,"2":[1e21]}', {"b": 1, "1": [1.5e-7, None]}, b"[1,2]", None, True, 5, "5", UNDEFINED,
    ))  # fmt: skip
    assert [msg.payload for msg in sent] == [
        {"a": 1, "2": [1e21]}, '{"1":[1.5e-7,null],"b":1}', [1, 2], "null", "true", "5", 5, UNDEFINED,
    ]  # fmt: skip
    assert errors == []


async def test_json_always_to_text() -> None:
    sent, _ = await converted(json_node("str", pretty=True), payloads('{"a":1}', {"a": [1, {}]}, b"[1,2]"))
    assert [msg.payload for msg in sent] == ['{"a":1}', '{\n    "a": [\n        1,\n        {}\n    ]\n}', b"[1,2]"]


async def test_json_always_to_a_value() -> None:
    sent, _ = await converted(json_node("obj", pretty="true"), payloads('{"a":1}', {"a": [1, {}]}, b"[1,2]", 7))
    assert [msg.payload for msg in sent] == [{"a": 1}, {"a": [1, {}]}, [1, 2], 7]


async def test_json_text_that_is_not_json_fails_the_message() -> None:
    sent, errors = await converted(json_node(), payloads("bad", '{"a":}', '{"ok":true}'))
    assert [msg.payload for msg in sent] == [{"ok": True}]
    assert errors == ["Unexpected token 'b', \"bad\" is not valid JSON",
                      "Unexpected token '}', \"{\"a\":}\" is not valid JSON"]  # fmt: skip


async def test_json_another_property() -> None:
    node = json_node(prop="payload.raw")
    sent, errors = await converted(node, [new_message({"raw": '{"n":1}', "keep": 1}), new_message({}),
                                          new_message("text")])  # fmt: skip
    assert [msg.payload for msg in sent] == [{"raw": {"n": 1}, "keep": 1}, {}, "text"]
    assert errors == []
    sent, errors = await converted(json_node(prop="payload.x.y"), [new_message({})])
    assert sent == [] and errors[0].startswith("Cannot read properties of undefined (reading 'y')")


async def test_json_keeps_the_other_message_properties() -> None:
    msg = new_message('{"a":1}', "topic-1").with_props({"parts": {"id": "s", "index": 0}})
    [sent], _ = await converted(json_node(), [msg])
    assert (sent.payload, sent.topic, sent.props, sent.msg_id) == ({"a": 1}, "topic-1", msg.props, msg.msg_id)


async def test_json_value_without_a_json_form_fails() -> None:
    # Node-RED's "Failed to convert payload" (there: a circular object; here also a Python value JSON has no form for)
    sent, errors = await converted(json_node(), payloads({"a": {1, 2}}, {"ok": 1}))
    assert [msg.payload for msg in sent] == ['{"ok":1}']
    assert errors == ["Failed to convert payload"]


async def test_json_schema_is_not_supported() -> None:
    msg = new_message('{"a":1}').with_props({"schema": {"type": "object"}})
    sent, errors = await converted(json_node(), [msg])
    assert sent == [] and errors == ["JSON Schema validation (msg.schema) is not supported by evflow"]


@pytest.mark.parametrize(
    ("node", "path", "text"),
    [
        (json_node(action="toggle"), "$[1].action", "expected one of"),
        (json_node(prop="payload..x"), "$[1].property", "invalid property expression"),
        ({**json_node(), "schema": {}}, "$[1].schema", "unknown key"),
    ],
)
def test_json_bad_config(tmp_path: Path, node: dict[str, Any], path: str, text: str) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps([TAB, node]))
    with pytest.raises(FlowInvalid) as failure:
        load_plan([flow], registry=Registry.from_entry_points().with_types(*TYPES), env={})
    [problem] = [p for p in failure.value.problems if p.severity == "error"]
    assert problem.path.endswith(path) and text in problem.message


def test_json_empty_property_means_payload(tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps([TAB, json_node(prop="")]))
    plan = load_plan([flow], registry=Registry.from_entry_points().with_types(*TYPES), env={})
    assert [n.id for n in plan.nodes if n.id == "n"] == ["n"]


# ---- json_bytes: the C encoder where its text is JavaScript's, json_stringify elsewhere ----------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.floats() | st.text()
    | st.binary(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4) | st.sampled_from(["1", "01", "0"]),
                                                                 inner, max_size=4),
    max_leaves=12,
)


@given(_JSON_VALUES)
def test_json_bytes_is_json_stringify(value: Any) -> None:
    assert js.json_bytes(value) == js.json_stringify(value).encode()


def test_json_bytes_takes_the_fast_path_only_where_the_text_cannot_differ() -> None:
    # what Python's encoder writes differently: each goes through json_stringify
    assert js.json_bytes({"v": 2.0, "w": 1e-7, "n": math.nan}) == b'{"v":2,"w":1e-7,"n":null}'
    assert js.json_bytes({"b": 1, "1": 2}) == b'{"1":2,"b":1}'
    assert js.json_bytes({"d": b"\x01"}) == b'{"d":{"type":"Buffer","data":[1]}}'
    assert js.json_bytes(["\ud800"]) == b'["\\ud800"]'
