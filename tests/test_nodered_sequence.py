"""Node-RED's ``split`` and ``join`` (automatic and manual modes), in running flows.

The expected ``msg.parts`` and results are Node-RED 4.1's, as its nodes produce them for the same
input (checked against Node-RED itself while writing these tests). Timeouts run on trio's MockClock
(``autojump_clock``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from evflow.nodes.join import Join
from evflow.nodes.split import Split
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import Message, new_message
from evflow.runtime.nodeapi import UNDEFINED
from evflow.runtime.registry import Registry
from evflow.runtime.testing import FlowUnderTest, Sink, run_flow

TYPES = [Split, Join]
PART_ID = re.compile(r"[0-9a-f]{16}")


def split_node(node_id: str = "split", wires: list[str] | None = None, **props: Any) -> dict[str, Any]:
    """A split node as Node-RED 4's editor writes it (its defaults), with ``props`` changed."""
    return {
        "id": node_id, "type": "split", "z": "A", "name": "", "splt": "\\n", "spltType": "str", "arraySplt": 1,
        "arraySpltType": "len", "stream": False, "addname": "", "property": "payload", "x": 100, "y": 100,
        "wires": [wires if wires is not None else ["out"]], **props,
    }


def join_node(node_id: str = "join", wires: list[str] | None = None, **props: Any) -> dict[str, Any]:
    """A join node as Node-RED 4's editor writes it (its defaults), with ``props`` changed."""
    return {
        "id": node_id, "type": "join", "z": "A", "name": "", "mode": "auto", "build": "object",
        "property": "payload", "propertyType": "msg", "key": "topic", "joiner": "\\n", "joinerType": "str",
        "useparts": False, "accumulate": "false", "timeout": "", "count": "", "reduceRight": False,
        "reduceExp": "", "reduceInit": "", "reduceInitType": "", "reduceFixup": "", "x": 300, "y": 100,
        "wires": [wires if wires is not None else ["out"]], **props,
    }


def sink(node_id: str = "out") -> dict[str, Any]:
    return {"id": node_id, "type": "test-sink", "z": "A", "wires": []}


def catch(node_id: str = "caught") -> dict[str, Any]:
    return {"id": node_id, "type": "catch", "z": "A", "scope": None, "uncaught": False, "wires": [[]]}


TAB = {"id": "A", "type": "tab", "label": "A"}


def message(payload: Any = UNDEFINED, topic: str = "", **props: Any) -> Message:
    return new_message(payload, topic).with_props(props)


async def sent(flow: FlowUnderTest, node_id: str = "out") -> list[Message]:
    """Everything ``node_id`` sent so far, once the flow has settled."""
    await trio.testing.wait_all_tasks_blocked()
    found = []
    while not flow.nothing_sent(node_id):
        found.append(await flow.expect(node_id))
    return found


def parts_of(messages: list[Message]) -> list[dict[str, Any]]:
    """Each message's msg.parts, with the generated id checked and taken out."""
    found = []
    for msg in messages:
        parts = dict(msg.props["parts"])
        assert PART_ID.fullmatch(parts.pop("id"))
        found.append(parts)
    return found


# ---- split -------------------------------------------------------------------------------------


async def test_split_text_by_delimiter_sets_node_reds_parts() -> None:
    async with run_flow([TAB, split_node(), sink()], node_types=TYPES) as flow:
        original = await flow.inject_message("split", message("a\nb\n\nc", "t", extra={"k": 1}))
        out = await sent(flow)
    assert [m.payload for m in out] == ["a", "b", "", "c"]
    assert parts_of(out) == [{"type": "string", "ch": "\n", "index": i, "count": 4} for i in range(4)]
    assert len({m.props["parts"]["id"] for m in out}) == 1
    assert all(m.topic == "t" and m.props["extra"] == {"k": 1} for m in out)
    # each part is a message of its own: its own _msgid, and its own copy of the other properties
    assert len({m.msg_id for m in out} | {original.msg_id}) == 5
    out[0].props["extra"]["k"] = 2
    assert out[1].props["extra"] == {"k": 1}


@pytest.mark.parametrize(
    ("props", "payload", "pieces", "parts"),
    [
        ({"splt": "3", "spltType": "len"}, "abcdefgh", ["abc", "def", "gh"], {"type": "string", "ch": "", "len": 3}),
        ({"splt": "[44]", "spltType": "bin"}, "a,b", ["a", "b"], {"type": "string", "ch": [44]}),
        ({"splt": "\\t"}, "a\tb", ["a", "b"], {"type": "string", "ch": "\t"}),
        ({"splt": ""}, "a\nb", ["a", "b"], {"type": "string", "ch": "\n"}),  # empty is a line break
        ({}, b"a\nb", [b"a", b"b"], {"type": "buffer", "ch": "\n"}),
        ({"splt": "[0,1]", "spltType": "bin"}, b"a\x00\x01b", [b"a", b"b"], {"type": "buffer", "ch": [0, 1]}),
        ({"splt": "2", "spltType": "len"}, b"abcde", [b"ab", b"cd", b"e"], {"type": "buffer", "len": 2}),
    ],
)
async def test_split_text_and_buffers(
    props: dict[str, Any], payload: Any, pieces: list[Any], parts: dict[str, Any]
) -> None:
    async with run_flow([TAB, split_node(**props), sink()], node_types=TYPES) as flow:
        await flow.inject("split", payload)
        out = await sent(flow)
    assert [m.payload for m in out] == pieces
    assert parts_of(out) == [{**parts, "index": i, "count": len(pieces)} for i in range(len(pieces))]


async def test_split_an_empty_string_by_length_sends_one_empty_part() -> None:
    async with run_flow([TAB, split_node(splt="2", spltType="len"), sink()], node_types=TYPES) as flow:
        await flow.inject("split", "")
        out = await sent(flow)
    assert [m.payload for m in out] == [""]
    assert parts_of(out) == [{"type": "string", "ch": "", "len": 2, "index": 0, "count": 0}]


async def test_split_a_buffer_ending_with_its_delimiter_counts_a_part_it_never_sends() -> None:
    # Node-RED's own behaviour (kept: a join downstream waits for the same count).
    async with run_flow([TAB, split_node(), sink()], node_types=TYPES) as flow:
        await flow.inject("split", b"a\nb\n")
        out = await sent(flow)
    assert [m.payload for m in out] == [b"a", b"b"]
    assert [p["count"] for p in parts_of(out)] == [3, 3]


async def test_split_arrays_in_groups() -> None:
    async with run_flow([TAB, split_node(arraySplt="2"), sink()], node_types=TYPES) as flow:
        await flow.inject("split", [1, 2, 3, 4, 5])
        await flow.inject("split", [])
        out = await sent(flow)
    assert [m.payload for m in out] == [[1, 2], [3, 4], [5]]
    assert parts_of(out) == [{"type": "array", "count": 3, "len": 2, "index": i} for i in range(3)]


async def test_split_array_items_one_by_one() -> None:
    async with run_flow([TAB, split_node(), sink()], node_types=TYPES) as flow:
        await flow.inject("split", [{"a": 1}, [2], None])
        out = await sent(flow)
    assert [m.payload for m in out] == [{"a": 1}, [2], None]
    assert parts_of(out)[2] == {"type": "array", "count": 3, "len": 1, "index": 2}


async def test_split_objects_by_key_in_javascripts_order_with_addname() -> None:
    async with run_flow([TAB, split_node(addname="topic"), sink()], node_types=TYPES) as flow:
        await flow.inject("split", {"b": 1, "2": "two", "a": [3], "1": None})
        out = await sent(flow)
    assert [(m.topic, m.payload) for m in out] == [("1", None), ("2", "two"), ("b", 1), ("a", [3])]
    assert parts_of(out) == [
        {"type": "object", "key": key, "index": i, "count": 4} for i, key in enumerate(["1", "2", "b", "a"])
    ]


async def test_split_another_property_and_keep_existing_parts() -> None:
    outer = {"id": "outer", "index": 1, "count": 2, "type": "array"}
    async with run_flow([TAB, split_node(property="data.items"), sink()], node_types=TYPES) as flow:
        await flow.inject_message("split", message(5, data={"items": ["x", "y"], "k": 1}, parts=outer))
        out = await sent(flow)
    assert [m.props["data"] for m in out] == [{"items": "x", "k": 1}, {"items": "y", "k": 1}]
    assert all(m.payload == 5 for m in out)
    assert parts_of(out) == [
        {"parts": outer, "property": "data.items", "type": "array", "count": 2, "len": 1, "index": i} for i in range(2)
    ]


async def test_split_drops_values_it_cannot_split() -> None:
    async with run_flow([TAB, split_node(), sink()], node_types=TYPES) as flow:
        for payload in (5, True, None, UNDEFINED):
            await flow.inject("split", payload)
        assert await sent(flow) == []


async def test_split_a_text_stream_carries_the_rest_over() -> None:
    async with run_flow([TAB, split_node(stream=True), sink()], node_types=TYPES) as flow:
        for chunk in ("a\nb", "c\nd\ne", "f\n"):
            await flow.inject("split", chunk)
        out = await sent(flow)
    assert [m.payload for m in out] == ["a", "bc", "d", "ef"]
    # indexes go on counting across messages; a stream has no count
    assert [p["index"] for p in parts_of(out)] == [0, 1, 2, 3]
    assert all("count" not in m.props["parts"] for m in out)


async def test_split_a_byte_stream_by_length() -> None:
    async with run_flow([TAB, split_node(stream=True, splt="2", spltType="len"), sink()], node_types=TYPES) as flow:
        for chunk in (b"abc", b"de", b"f"):
            await flow.inject("split", chunk)
        out = await sent(flow)
    assert [m.payload for m in out] == [b"ab", b"cd", b"ef"]
    assert [p["index"] for p in parts_of(out)] == [0, 1, 2]


# ---- join: automatic mode ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("split_props", "payload"),
    [
        ({}, "a\nb\n\nc"),
        ({"splt": "3", "spltType": "len"}, "abcdefgh"),
        ({}, b"one\ntwo"),
        ({"splt": "[0]", "spltType": "bin"}, b"x\x00y"),
        ({"splt": "2", "spltType": "len"}, b"abcde"),
        ({"arraySplt": 2}, [1, 2, 3, 4, 5]),
        ({}, [{"a": 1}, None, "x"]),
        ({}, {"b": 1, "a": {"c": [2]}}),
    ],
)
async def test_automatic_join_puts_back_what_split_took_apart(split_props: dict[str, Any], payload: Any) -> None:
    nodes = [TAB, split_node(wires=["join"], **split_props), join_node(), sink()]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject_message("split", message(payload, "topic", extra=1))
        joined = await flow.expect("out")
    assert joined.payload == payload
    assert joined.topic == "topic"
    assert joined.props == {"extra": 1}  # msg.parts removed


async def test_automatic_join_of_a_string_split_by_bytes_joins_with_the_byte_values_as_text() -> None:
    # Node-RED's quirk: parts.ch is the byte array, and String([44]) is "44".
    nodes = [TAB, split_node(wires=["join"], splt="[44]", spltType="bin"), join_node(), sink()]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("split", "a,b")
        assert (await flow.expect("out")).payload == "a44b"


async def test_nested_split_and_join_restore_the_outer_parts() -> None:
    nodes = [
        TAB, split_node("outer", wires=["inner"]), split_node("inner", wires=["join-inner"]),
        join_node("join-inner", wires=["join-outer"]), join_node("join-outer"), sink(),
    ]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("outer", [[1, 2], [3], "ab"])
        assert (await flow.expect("out")).payload == [[1, 2], [3], "ab"]


async def test_automatic_join_places_parts_by_index_in_any_order() -> None:
    def part(payload: str, index: int) -> Message:
        return message(payload, parts={"id": "seq", "index": index, "count": 3, "type": "array"})

    async with run_flow([TAB, join_node(), sink()], node_types=TYPES) as flow:
        for payload, index in (("c", 2), ("a", 0), ("a2", 0), ("b", 1)):
            await flow.inject_message("join", part(payload, index))
        assert (await flow.expect("out")).payload == ["a2", "b", "c"]
        assert flow.nothing_sent("out")


async def test_automatic_join_without_parts_warns_and_a_reset_clears_every_sequence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def part(index: int) -> Message:
        return message(index, parts={"id": "seq", "index": index, "count": 2, "type": "array"})

    async with run_flow([TAB, join_node(), sink()], node_types=TYPES) as flow:
        await flow.inject("join", "no parts")
        await flow.inject_message("join", part(0))
        await flow.inject_message("join", message(reset=True))
        await flow.inject_message("join", part(1))
        assert await sent(flow) == []
        await flow.inject_message("join", part(0))
        assert (await flow.expect("out")).payload == [0, 1]
    assert "Message missing msg.parts property - cannot join in 'auto' mode" in caplog.text


# ---- join: manual mode ---------------------------------------------------------------------------


async def join_all(node: dict[str, Any], messages: list[Message]) -> list[Message]:
    """What a join (with a catch node on its tab) sends for ``messages``."""
    async with run_flow([TAB, node, sink(), catch()], node_types=TYPES) as flow:
        for msg in messages:
            await flow.inject_message("join", msg)
        return await sent(flow)


async def test_manual_join_of_a_count_into_an_array() -> None:
    node = join_node(mode="custom", build="array", count="3")
    out = await join_all(node, [message(p) for p in (1, "two", {"t": 3}, 4)])
    assert [m.payload for m in out] == [[1, "two", {"t": 3}]]


async def test_manual_join_into_a_string_converts_as_javascript_does() -> None:
    node = join_node(mode="custom", build="string", joiner=", ", count="6")
    out = await join_all(node, [message(p) for p in ("a", 1, None, [1, 2], {"x": 1}, True)])
    assert [m.payload for m in out] == ["a, 1, , 1,2, [object Object], true"]


async def test_manual_join_into_a_buffer_with_a_byte_joiner() -> None:
    node = join_node(mode="custom", build="buffer", joiner="[0]", joinerType="bin", count="3")
    out = await join_all(node, [message(b"ab"), message("cd"), message([65, 300])])
    assert [m.payload for m in out] == [b"ab\x00cd\x00A,"]


async def test_manual_join_into_an_object_by_key_warns_about_parts_without_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = join_node(mode="custom", build="object", count="2")
    out = await join_all(node, [message(1, "a"), message(2), message(3, "b", extra=1)])
    assert [(m.payload, m.topic, m.props) for m in out] == [({"a": 1, "b": 3}, "b", {"extra": 1})]
    assert "Message missing key property 'msg.topic' - cannot add to object" in caplog.text


async def test_manual_join_merges_objects() -> None:
    node = join_node(mode="custom", build="merged", count="3")
    out = await join_all(node, [message({"a": 1}), message({"b": 2, "_msgid": "x"}), message({"a": 3, "c": 4})])
    assert [m.payload for m in out] == [{"a": 3, "b": 2, "c": 4}]


async def test_manual_join_of_whole_messages() -> None:
    node = join_node(mode="custom", build="object", propertyType="full", count="2")
    out = await join_all(node, [message(1, "a", k=1), message(2, "b")])
    assert set(out[0].payload) == {"a", "b"}
    assert {k: v for k, v in out[0].payload["a"].items() if k != "_msgid"} == {"payload": 1, "topic": "a", "k": 1}
    assert out[0].props == {"k": 1} and out[0].topic == "b"


async def test_manual_join_sends_on_msg_complete_and_drops_on_msg_reset() -> None:
    node = join_node(mode="custom", build="array", count="")
    messages = [
        message(1), message(reset=True), message(2), message(3, complete=True), message(4), message(complete=True),
    ]
    out = await join_all(node, messages)
    assert [(m.payload, "complete" in m.props) for m in out] == [([2, 3], False), ([4], False)]


async def test_manual_join_with_an_empty_count_takes_msg_parts_count_when_told_to() -> None:
    def part(payload: int, sequence: str, index: int) -> Message:
        return message(payload, parts={"id": sequence, "count": 2, "index": index})

    node = join_node(mode="custom", build="array", count="", useparts=True)
    out = await join_all(node, [part(1, "p1", 0), part(2, "p2", 0), part(3, "p1", 1)])
    assert [m.payload for m in out] == [[1, 3]]
    assert "parts" not in out[0].props


async def test_manual_join_accumulates_and_sends_on_every_later_message() -> None:
    node = join_node(mode="custom", build="object", count="2", accumulate=True)
    messages = [message(1, "a"), message(2, "b"), message(3, "a"), message(4, "c", complete=True), message(5, "d")]
    out = await join_all(node, messages)
    assert [m.payload for m in out] == [{"a": 1, "b": 2}, {"a": 3, "b": 2}, {"a": 3, "b": 2, "c": 4}]
    out[0].payload["z"] = 0  # what was sent is the receiver's own
    assert "z" not in out[1].payload


async def test_manual_join_sends_what_arrived_when_its_timeout_passes(autojump_clock: trio.testing.MockClock) -> None:
    node = join_node(mode="custom", build="array", count="10", timeout="2")
    async with run_flow([TAB, node, sink()], node_types=TYPES) as flow:
        start = trio.current_time()
        await flow.inject("join", 1)
        await trio.sleep(1.5)
        await flow.inject_message("join", message(2, restartTimeout=True))  # the timeout starts again
        joined = await flow.expect("out")
        assert joined.payload == [1, 2]
        assert trio.current_time() - start == pytest.approx(3.5)
        await flow.inject("join", 3)
        assert (await flow.expect("out")).payload == [3]


async def test_a_join_holds_at_most_max_held_values() -> None:
    node = join_node(mode="custom", build="array", count="", max_held=3)
    async with run_flow([TAB, node, sink(), catch()], node_types=TYPES) as flow:
        for payload in range(4):
            await flow.inject("join", payload)
        failed = await flow.expect("caught")
        assert failed.payload == 3
        assert failed.error is not None and failed.error.message == "too many pending messages in join node"
        await flow.inject_message("join", message(9, complete=True))  # the held values were dropped
        assert (await flow.expect("out")).payload == [9]
        assert flow.stats()["join"] == {"overflows": 1}


async def test_a_buffer_join_fails_a_part_it_cannot_join() -> None:
    node = join_node(mode="custom", build="buffer", count="2")
    async with run_flow([TAB, node, sink(), catch()], node_types=TYPES) as flow:
        await flow.inject("join", 5)
        failed = await flow.expect("caught")
        assert failed.error is not None and failed.error.message == "Cannot join number to buffer"


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "path", "words"),
    [
        (join_node(mode="reduce", reduceExp="$A+payload"), "$[1].mode", "reduce mode"),
        (join_node(mode="custom", build="list"), "$[1].build", "build must be one of"),
        (join_node(mode="custom", build="string", joinerType="bin", joiner="[1,"), "$[1].joiner", "JSON array"),
        (join_node(mode="custom", count="three"), "$[1].count", "must be a number"),
        (join_node(mode="custom", property="payload..a"), "$[1].property", "invalid property expression"),
        (split_node(spltType="bin", splt="[]"), "$[1].splt", "must not be empty"),
        (split_node(spltType="bin", splt="[256]"), "$[1].splt", "JSON array of bytes"),
        (split_node(spltType="len", splt="0"), "$[1].splt", "from 1"),
        (split_node(arraySplt=0), "$[1].arraySplt", "from 1"),
        (split_node(extra=1), "$[1].extra", "unknown key"),
    ],
)
def test_bad_config_is_a_validation_error(tmp_path: Path, node: dict[str, Any], path: str, words: str) -> None:
    file = tmp_path / "flow.json"
    file.write_text(json.dumps([TAB, node, sink()]))
    with pytest.raises(FlowInvalid) as failure:
        load_plan([file], registry=Registry.from_entry_points().with_types(Sink, *TYPES))
    problems = [(p.path, p.message) for p in failure.value.problems if p.severity == "error"]
    assert len(problems) == 1
    assert problems[0][0] == path
    assert words in problems[0][1]
