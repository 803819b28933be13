"""The ``function`` node: Node-RED's JavaScript in a QuickJS sandbox, in running flows.

Each test's flow is written as Node-RED exports it. Every node is tapped, so ``expect(node_id)`` is
what that node sent; leaving ``run_flow`` drains every message in flight, so logs and context writes
are complete when the block ends. Timers run on trio's MockClock (``autojump_clock``): the clock
jumps to the next deadline whenever every task waits, so times are exact and take no real time (the
time limit of a call counts CPU time, which the mock clock does not touch).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from evflow.nodes import _sandbox
from evflow.nodes.catch import Catch
from evflow.nodes.function import Function
from evflow.runtime.codec import structure
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import Message, new_message
from evflow.runtime.models.evse_security import GetCertificateInfoResult
from evflow.runtime.nodeapi import Node, Scope
from evflow.runtime.properties import UNDEFINED, msg_id_text
from evflow.runtime.registry import Registry
from evflow.runtime.testing import FlowUnderTest, run_flow

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("quickjs") is None, reason="the extra evflow[function] is not installed"
)


# ---- flows as Node-RED writes them --------------------------------------------------------------


def function(node_id: str, func: str, wires: list[list[str]] | None = None, **props: Any) -> dict[str, Any]:
    wires = wires if wires is not None else [[]]
    return {"id": node_id, "type": "function", "z": "A", "name": "", "func": func, "outputs": len(wires),
            "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": [], "x": 300, "y": 100,
            "wires": wires, **props}  # fmt: skip


def catch(node_id: str = "catch", target: str = "caught") -> list[dict[str, Any]]:
    return [{"id": node_id, "type": "catch", "z": "A", "name": "", "scope": None, "uncaught": False,
             "x": 100, "y": 200, "wires": [[target]]},
            {"id": target, "type": "test-sink", "z": "A", "wires": []}]  # fmt: skip


TAB = {"id": "A", "type": "tab", "label": "Flow 1"}


@attrs.frozen
class WatchConfig:
    pass


class StatusWatch(Node[WatchConfig]):
    """Passes on the status changes of the nodes of its tab (Node-RED's status node, for tests)."""

    type = "test-status-watch"
    Config = WatchConfig

    @classmethod
    def status_scope(cls, config: WatchConfig) -> Scope:
        return Scope()

    async def receive(self, msg: Message) -> None:
        await self.send(msg)


TYPES = (Function, Catch, StatusWatch)


def running(flow: list[dict[str, Any]], tmp_path: Path) -> Any:
    return run_flow([TAB, *flow], node_types=TYPES, workdir=tmp_path)


async def failure_of(kit: FlowUnderTest, caught: str = "caught") -> tuple[str, Message]:
    msg = await kit.expect(caught)
    assert msg.error is not None and msg.error.source_type == "function"
    return msg.error.message, msg


def load(tmp_path: Path, nodes: list[dict[str, Any]]) -> Any:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps([TAB, *nodes]))
    return load_plan([path], registry=Registry.from_entry_points().with_types(*TYPES), env={})


def problems(tmp_path: Path, nodes: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    with pytest.raises(FlowInvalid) as invalid:
        load(tmp_path, nodes)
    return [(p.path, p.message) for p in invalid.value.problems]


# ---- messages in and out ------------------------------------------------------------------------


async def test_the_returned_message_goes_on_with_its_id_and_properties(tmp_path: Path) -> None:
    code = "msg.payload = msg.payload + 1; msg.seen = msg._msgid; msg.topic = 't/' + msg.topic; return msg;"
    async with running([function("f", code)], tmp_path) as kit:
        sent = await kit.inject_message("f", new_message(41, "a").with_props({"parts": {"index": 0}}))
        out = await kit.expect("f")
    assert out.payload == 42 and type(out.payload) is int
    assert out.topic == "t/a" and out.msg_id == sent.msg_id
    assert dict(out.props) == {"parts": {"index": 0}, "seen": msg_id_text(sent)}  # no _msgid among them


async def test_json_numbers_and_missing_properties(tmp_path: Path) -> None:
    code = "delete msg.topic; msg.payload = {whole: 6 / 2, half: 1 / 2, big: 2 ** 53, list: [1.0, 2.5]}; return msg;"
    async with running([function("f", code)], tmp_path) as kit:
        await kit.inject("f", None, "gone")
        out = await kit.expect("f")
    assert out.payload == {"whole": 3, "half": 0.5, "big": 2**53, "list": [1, 2.5]}
    assert [type(v) for v in out.payload["list"]] == [int, float]
    assert out.topic is UNDEFINED


async def test_typed_payloads_cross_in_their_json_form_and_bytes_as_a_buffer(tmp_path: Path) -> None:
    code = ("msg.payload = {status: msg.payload.status, kind: typeof msg.payload, raw: msg.raw, "
            "buffer: Buffer.isBuffer(msg.raw), length: msg.raw.length}; return msg;")  # fmt: skip
    typed = structure({"status": "NotFound"}, GetCertificateInfoResult)
    async with running([function("f", code)], tmp_path) as kit:
        await kit.inject_message("f", new_message(typed).with_props({"raw": b"\x00\xff"}))
        out = await kit.expect("f")
    assert out.payload == {"status": "NotFound", "kind": "object", "raw": b"\x00\xff", "buffer": True, "length": 2}


async def test_a_payload_set_to_undefined_is_no_payload(tmp_path: Path) -> None:
    # evflow's message has no payload that is there but undefined: as JSON.stringify, and the nodes
    # after a function in EVerest's flows, see it (a change node's {payload: msg.payload} leaves it out).
    code = "if (msg.payload === 'set') { msg.payload = undefined; } else { delete msg.payload; } return msg;"
    async with running([function("f", code)], tmp_path) as kit:
        for payload in ("set", "deleted"):
            await kit.inject("f", payload)
        assert [(await kit.expect("f")).payload for _ in range(2)] == [UNDEFINED, UNDEFINED]


async def test_several_outputs_and_null_entries(tmp_path: Path) -> None:
    code = """
        var a = RED.util.cloneMessage(msg); a.payload = "a";
        var b = RED.util.cloneMessage(msg); b.payload = "b";
        msg.payload = "first";
        return [msg, [a, b], null];
    """
    async with running([function("f", code, [[], [], []])], tmp_path) as kit:
        await kit.inject("f", 0)
        assert (await kit.expect("f", 0)).payload == "first"
        assert [(await kit.expect("f", 1)).payload for _ in range(2)] == ["a", "b"]
        await trio.testing.wait_all_tasks_blocked()
        assert kit.nothing_sent("f", 2)


async def test_null_or_nothing_returned_sends_nothing(tmp_path: Path) -> None:
    flow = [function("f", "if (msg.payload === 'skip') { return null; } if (msg.payload === 'none') { return; } "
                          "return msg;")]  # fmt: skip
    async with running(flow, tmp_path) as kit:
        for payload in ("skip", "none", "last"):
            await kit.inject("f", payload)
        assert (await kit.expect("f")).payload == "last"
    assert kit.nothing_sent("f")


async def test_node_send_keeps_order_and_what_the_message_was(tmp_path: Path) -> None:
    code = """
        node.send({payload: "new"});
        node.send(msg);
        msg.payload = "changed after the send";
        node.send([null, {payload: "to port 1"}]);
        return msg;
    """
    async with running([function("f", code, [[], []])], tmp_path) as kit:
        sent = await kit.inject("f", "original")
        got = [await kit.expect("f", 0) for _ in range(3)]
        other = await kit.expect("f", 1)
    assert [m.payload for m in got] == ["new", "original", "changed after the send"]
    assert other.payload == "to port 1"
    assert {m.msg_id for m in [*got, other]} == {sent.msg_id}  # Node-RED gives them the input's _msgid


async def test_a_message_from_a_catch_keeps_its_error(tmp_path: Path) -> None:
    flow = [function("fail", "throw new Error('first');"),
            {"id": "catch", "type": "catch", "z": "A", "scope": None, "uncaught": False, "wires": [["g"]]},
            function("g", "msg.note = msg.error.message + ' from ' + msg.error.source.type; return msg;")]
    async with running(flow, tmp_path) as kit:
        await kit.inject("fail", 1)
        out = await kit.expect("g")
    assert out.props["note"] == "Error: first from function"
    assert out.error is not None and out.error.message == "Error: first"


# ---- node.*, context, env -----------------------------------------------------------------------


async def test_context_flow_and_global(tmp_path: Path) -> None:
    count = """
        var n = (context.get("n") || 0) + 1;
        context.set("n", n);
        flow.set("last", msg.payload);
        global.set(["a", "b"], [n, {deep: [n]}]);
        msg.payload = {n: n, keys: context.keys().concat(global.keys())};
        return msg;
    """
    read = """
        var list = flow.get("list");
        if (!list) { flow.set("list", [msg.payload]); } else { list.push(msg.payload); }  // kept without a set
        flow.get("last", function (err, last) { msg.last = last; });
        msg.payload = [flow.get("list").length, global.get("b.deep[0]"), context.flow.get("missing")];
        return msg;
    """
    async with running([function("count", count), function("read", read)], tmp_path) as kit:
        for payload in ("x", "y"):
            await kit.inject("count", payload)
            assert (await kit.expect("count")).payload["keys"] == ["n", "a", "b"]
            await kit.inject("read", payload)
        assert [(await kit.expect("read")).payload for _ in range(2)] == [[1, 1, None], [2, 2, None]]
    stores = kit.engine.contexts
    assert stores.flow("A").get("list") == ["x", "y"] and stores.flow("A").get("last") == "y"
    assert stores.global_store.get("a") == 2 and stores.global_store.get("b") == {"deep": [2]}


async def test_context_set_undefined_deletes(tmp_path: Path) -> None:
    code = "flow.set('gone', undefined); flow.set('obj.inner', undefined); return msg;"
    async with running([function("f", code)], tmp_path) as kit:
        store = kit.engine.contexts.flow("A")
        store.set("gone", 1)
        store.set("obj", {"inner": 1, "kept": 2})
        await kit.inject("f", None)
        await kit.expect("f")
    assert store.get("gone") is UNDEFINED and store.get("obj") == {"kept": 2}


async def test_env_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNCTION_TEST_SETTING", "on")
    code = "msg.payload = [env.get('FUNCTION_TEST_SETTING'), env.get('NR_NODE_ID'), env.get('NR_FLOW_ID'), " \
           "env.get('NOT_SET_ANYWHERE')]; return msg;"  # fmt: skip
    async with running([function("f", code)], tmp_path) as kit:
        await kit.inject("f", None)
        assert (await kit.expect("f")).payload == ["on", "f", "A", None]


async def test_env_get_names_the_flow_and_the_group(tmp_path: Path) -> None:
    code = "msg.payload = ['NR_FLOW_NAME', 'NR_GROUP_ID', 'NR_GROUP_NAME', 'NR_NODE_NAME'].map(env.get); return msg;"
    flow = [{"id": "G", "type": "group", "z": "A", "name": "Chargers", "nodes": ["grouped"], "x": 0, "y": 0},
            {**function("grouped", code, name="in a group"), "g": "G"},
            function("alone", code)]  # fmt: skip
    async with running(flow, tmp_path) as kit:
        for node_id in ("grouped", "alone"):
            await kit.inject(node_id, None)
        assert (await kit.expect("grouped")).payload == ["Flow 1", "G", "Chargers", "in a group"]
        assert (await kit.expect("alone")).payload == ["Flow 1", "", None, ""]  # as Node-RED: no group, no name


async def test_node_status_reaches_status_watchers(tmp_path: Path) -> None:
    code = "node.status({fill: 'green', shape: 'dot', text: 'n=' + msg.payload}); node.status('plain'); return null;"
    flow = [function("f", code), {"id": "w", "type": "test-status-watch", "z": "A", "wires": []}]
    async with running(flow, tmp_path) as kit:
        await kit.inject("f", 7)
        first, second = (await kit.expect("w")).props["status"], (await kit.expect("w")).props["status"]
    assert first == {"fill": "green", "shape": "dot", "text": "n=7", "source": {"id": "f", "type": "function",
                                                                                "name": ""}}  # fmt: skip
    assert second["text"] == "plain"


async def test_node_warn_log_and_error_go_to_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    code = ("node.warn('careful: ' + msg.payload); node.log({seen: msg.payload}); node.error('no message'); "
            "console.log('console'); return [1];")  # fmt: skip
    async with running([function("f", code, name="calc")], tmp_path) as kit:
        await kit.inject("f", 3)
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "evflow.node.function"]
    assert lines == [
        (logging.WARNING, "[calc] careful: 3"),
        (logging.INFO, '[calc] {"seen":3}'),
        (logging.ERROR, "[calc] no message"),
        (logging.INFO, "[calc] console"),
        (logging.ERROR, "[calc] Function tried to send a message of type number"),
    ]
    assert kit.nothing_sent("f")


async def test_initialize_and_finalize(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = [function("f", "msg.payload = offset + context.get('base'); return msg;",
                     initialize="globalThis.offset = 10; context.set('base', 5); node.send({payload: 'early'});",
                     finalize="global.set('stopped', node.id); node.send({payload: 'late'});")]
    async with running(flow, tmp_path) as kit:
        await kit.inject("f", None)
        assert (await kit.expect("f")).payload == 15
    assert kit.engine.contexts.global_store.get("stopped") == "f"
    assert kit.nothing_sent("f")
    errors = [r.getMessage() for r in caplog.records if r.name == "evflow.node.function"]
    assert errors == ["[f] Cannot send from the setup code: evflow starts the flow after it ran",
                      "[f] Cannot send from close function"]  # fmt: skip


async def test_code_keeps_its_own_things_on_context_but_cannot_replace_its_api(tmp_path: Path) -> None:
    # EVerest's flows keep state as `context.data = {}` in initialize and read it in each call.
    flow = [function("f", """
        context.data.count += 1;
        context.get = function () { return "replaced"; };  // ignored (sloppy mode, as Node-RED runs code)
        msg.payload = [context.data.count, context.get("missing") === undefined];
        return msg;
    """, initialize="context.data = {count: 0};")]
    async with running(flow, tmp_path) as kit:
        for count in (1, 2):
            await kit.inject("f", None)
            got = await kit.expect("f")
            assert got.payload == [count, True]


async def test_a_failing_setup_fails_each_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = [function("f", "return msg;", initialize="throw new RangeError('no setup');"), *catch()]
    async with running(flow, tmp_path) as kit:
        await kit.inject("f", 1)
        text, _ = await failure_of(kit)
    assert text == "not run: the setup code (initialize) failed: RangeError: no setup"
    assert "the setup code (initialize) failed: RangeError: no setup" in caplog.text


# ---- failures -----------------------------------------------------------------------------------


async def test_a_thrown_error_goes_to_catch_and_the_flow_goes_on(tmp_path: Path) -> None:
    code = """
        if (msg.payload === "null") { return null.x; }
        if (msg.payload === "throw") { throw new TypeError("not a " + msg.topic); }
        if (msg.payload === "string") { throw "just text"; }
        if (msg.payload === "undefined") {
            return missingFunction();
        }
        return msg;
    """
    async with running([function("f", code), *catch()], tmp_path) as kit:
        texts = []
        for payload in ("null", "throw", "string", "undefined"):
            await kit.inject("f", payload, "number")
            text, failed = await failure_of(kit)
            assert failed.payload == payload and failed.error is not None and failed.error.source_id == "f"
            texts.append(text)
        await kit.inject("f", "fine")
        assert (await kit.expect("f")).payload == "fine"
    assert texts == ["TypeError: cannot read property 'x' of null", "TypeError: not a number", "just text",
                     # Node-RED's own text: the name twice, the column of `return` (V8's)
                     "ReferenceError: ReferenceError: missingFunction is not defined (line 6, col 13)"]  # fmt: skip


async def test_node_error_with_a_message_is_caught_and_the_code_goes_on(tmp_path: Path) -> None:
    code = "msg.payload = 'reported'; node.error('went wrong', msg); msg.payload = 'sent'; return msg;"
    async with running([function("f", code), *catch()], tmp_path) as kit:
        sent = await kit.inject("f", 0)
        text, failed = await failure_of(kit)
        assert (await kit.expect("f")).payload == "sent"
    assert text == "went wrong" and failed.payload == "reported" and failed.msg_id == sent.msg_id


async def test_node_done_with_an_error_fails_the_message(tmp_path: Path) -> None:
    # As in Node-RED, what the code sends and returns still goes out.
    code = "node.send({payload: 'before'}); node.done(new Error('done with it')); return msg;"
    async with running([function("f", code), *catch()], tmp_path) as kit:
        await kit.inject("f", "returned")
        text, _ = await failure_of(kit)
        assert [(await kit.expect("f")).payload for _ in range(2)] == ["before", "returned"]
    assert text == "Error: done with it"


async def test_an_endless_loop_is_stopped_by_the_time_limit(tmp_path: Path) -> None:
    code = "if (msg.payload === 'loop') { while (true) {} } return msg;"
    async with running([function("f", code, timeout="0.1"), *catch()], tmp_path) as kit:
        await kit.inject("f", "loop")
        text, _ = await failure_of(kit)
        await kit.inject("f", "next")
        assert (await kit.expect("f")).payload == "next"
    assert text == "Error: Script execution timed out after 100ms"
    assert kit.stats()["f"]["timed_out"] == 1


async def test_the_default_time_limit_comes_from_the_environment(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVFLOW_FUNCTION_TIMEOUT", "0.05")
    code = "while (true) { try { for (;;) {} } catch (e) { /* cannot catch the interruption */ } }"
    async with running([function("f", code), *catch()], tmp_path) as kit:
        await kit.inject("f", None)
        text, _ = await failure_of(kit)
    assert text == "Error: Script execution timed out after 50ms"


async def test_a_memory_bomb_is_stopped_by_the_memory_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVFLOW_FUNCTION_MEMORY_MB", "8")
    code = """
        if (msg.payload === "bomb") {
            var hoard = [];
            while (true) { hoard.push("x".repeat(1000) + hoard.length); }
        }
        if (msg.payload === "caught") {
            try { var kept = []; while (true) { kept.push(new Array(1000).fill(0)); } } catch (e) { throw e; }
        }
        msg.payload = new Array(1000).fill(1).length;
        return msg;
    """
    async with running([function("f", code), *catch()], tmp_path) as kit:
        texts = []
        for payload in ("bomb", "caught"):
            await kit.inject("f", payload)
            texts.append((await failure_of(kit))[0])
            await kit.inject("f", "next")
            assert (await kit.expect("f")).payload == 1000
    assert texts == ["InternalError: out of memory (the limit of a function node is 8 MiB)"] * 2
    assert kit.stats()["f"]["out_of_memory"] == 2


async def test_a_leak_in_globals_starts_the_javascript_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkeypatch.setenv("EVFLOW_FUNCTION_MEMORY_MB", "8")
    code = """
        if (msg.payload === "timer") {
            setTimeout(function () { node.send({payload: "set before the fresh start"}); }, 1000);
            return null;
        }
        if (msg.payload === "leak") {
            globalThis.kept = [];
            while (true) { kept.push("x".repeat(1000)); }
        }
        msg.payload = [typeof kept, context.get("starts")];
        return msg;
    """
    flow = [function("f", code, initialize="context.set('starts', (context.get('starts') || 0) + 1);"), *catch()]
    async with running(flow, tmp_path) as kit:
        await kit.inject("f", "timer")
        await kit.inject("f", "leak")
        text, _ = await failure_of(kit)
        assert len(kit.engine.node("f").timers) == 0  # its callback was in the JavaScript left behind
        await kit.inject("f", "next")
        assert (await kit.expect("f")).payload == ["undefined", 2]
        await trio.sleep(2)
        assert kit.nothing_sent("f")
    assert text.startswith("InternalError: out of memory")
    assert "after running out of memory: its JavaScript starts afresh" in caplog.text


async def test_what_json_cannot_carry_fails_the_message(tmp_path: Path) -> None:
    code = "if (msg.payload === 'cycle') { msg.self = msg; } else { msg.payload = 10n; } return msg;"
    async with running([function("f", code), *catch()], tmp_path) as kit:
        texts = []
        for payload in ("cycle", "bigint"):
            await kit.inject("f", payload)
            texts.append((await failure_of(kit))[0])
    assert texts == ["TypeError: circular reference", "TypeError: BigInt are forbidden in JSON.stringify"]


async def test_nan_and_infinity_cross_both_ways(tmp_path: Path) -> None:
    # JSON has no form for them: they cross as marked strings, which a longer text never is taken for.
    code = """
        msg.payload = [Number.isNaN(msg.payload), msg.limits[0] === Infinity, msg.limits[1] === -Infinity];
        msg.out = [NaN, 1 / 0, -1 / 0, null, msg.text];
        node.send({payload: NaN});
        return msg;
    """
    sent = new_message(float("nan")).with_props({"limits": [math.inf, -math.inf], "text": '\uffffnumber:NaN", x'})
    async with running([function("f", code)], tmp_path) as kit:
        await kit.inject_message("f", sent)
        alone, out = await kit.expect("f"), await kit.expect("f")
    assert math.isnan(alone.payload)
    assert out.payload == [True, True, True]
    assert math.isnan(out.props["out"][0]) and out.props["out"][1:] == [math.inf, -math.inf, None, '\uffffnumber:NaN", x']


async def test_no_require_process_or_modules_but_timers_and_buffer(tmp_path: Path) -> None:
    code = """
        if (msg.payload === "require") { return require("fs"); }
        if (msg.payload === "process") { return process.env; }
        if (msg.payload === "import") { return await import("fs"); }
        if (msg.payload === "never") { await new Promise(function () {}); }
        msg.payload = await Promise.resolve([typeof setTimeout, typeof setInterval, typeof clearTimeout,
                                             typeof clearInterval, typeof Buffer, typeof setImmediate]);
        return msg;
    """
    async with running([function("f", code), *catch()], tmp_path) as kit:
        texts = []
        for payload in ("require", "process", "import", "never"):
            await kit.inject("f", payload)
            texts.append((await failure_of(kit))[0])
        await kit.inject("f", "fine")
        assert (await kit.expect("f")).payload == ["function"] * 5 + ["undefined"]  # as in Node-RED's sandbox
    assert texts[0].startswith("ReferenceError: ReferenceError: require is not defined (line 2")
    assert texts[1].startswith("ReferenceError: ReferenceError: process is not defined (line 3")
    assert texts[2] == "ReferenceError: ReferenceError: could not load module 'fs'"
    assert texts[3].startswith("Error: the function's promise never settled, and no timer is set")


# ---- timers -------------------------------------------------------------------------------------


async def test_set_timeout_sends_later_with_its_arguments(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    code = """
        setTimeout(function (word, number) {
            node.send({payload: [msg.payload, word, number, this === node]});
        }, 100, "later", 2);
        setTimeout(function () { node.send({payload: "after 1 ms"}); }, "not a number");  // as Node.js: 1 ms
        return null;
    """
    async with running([function("f", code)], tmp_path) as kit:
        start = trio.current_time()
        sent = await kit.inject("f", "one")
        soon = await kit.expect("f")
        assert (soon.payload, trio.current_time() - start) == ("after 1 ms", pytest.approx(0.001))
        later = await kit.expect("f")
        assert (later.payload, trio.current_time() - start) == (["one", "later", 2, True], pytest.approx(0.1))
    assert later.msg_id == sent.msg_id  # as Node-RED: node.send in a callback keeps the message's _msgid


async def test_clear_timeout_prevents_it_and_ids_keep_in_context(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    code = """
        if (msg.payload === "arm") {
            context.set("timer", setTimeout(function () { node.send({payload: "not cleared"}); }, 500));
            return null;
        }
        clearTimeout(context.get("timer"));
        clearTimeout(undefined);  // nothing to clear: nothing happens
        setTimeout(function () { node.send({payload: "after the clear"}); }, 1000);
        return null;
    """
    async with running([function("f", code)], tmp_path) as kit:
        start = trio.current_time()
        await kit.inject("f", "arm")
        await kit.inject("f", "disarm")
        out = await kit.expect("f")  # the cleared one was due first
        assert (out.payload, trio.current_time() - start) == ("after the clear", pytest.approx(1.0))
        await trio.sleep(1)
        assert kit.nothing_sent("f")


async def test_set_interval_repeats_until_clear_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    code = """
        if (msg.payload === "start") {
            var count = 0;
            context.set("ticker", setInterval(function (step) { count += step; node.send({payload: count}); }, 200, 1));
        } else {
            clearInterval(context.get("ticker"));
        }
        return null;
    """
    async with running([function("f", code)], tmp_path) as kit:
        start = trio.current_time()
        await kit.inject("f", "start")
        ticks = []
        for _ in range(3):
            ticks.append(((await kit.expect("f")).payload, trio.current_time() - start))
        assert ticks == [(1, pytest.approx(0.2)), (2, pytest.approx(0.4)), (3, pytest.approx(0.6))]
        await kit.inject("f", "stop")
        await trio.sleep(1)
        assert kit.nothing_sent("f")


async def test_a_timer_of_the_setup_code_sends_once_the_flow_runs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    flow = [function("f", "return msg;", initialize="setInterval(function () { node.send({payload: 'beat'}); }, 1000);")]
    async with running(flow, tmp_path) as kit:
        first, second = await kit.expect("f"), await kit.expect("f")
    assert (first.payload, second.payload) == ("beat", "beat")
    assert first.msg_id != second.msg_id  # new messages, as Node-RED's setup code sends


async def test_timers_are_cleared_when_the_node_closes(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    code = """
        setInterval(function () { node.send({payload: "tick"}); }, 100);
        setTimeout(function () { node.send({payload: "late"}); }, 10000);
        return null;
    """
    flow = [function("f", code, finalize="setTimeout(function () { node.send({payload: 'from finalize'}); }, 1);")]
    async with running(flow, tmp_path) as kit:
        node = kit.engine.node("f")
        await kit.inject("f", None)
        assert (await kit.expect("f")).payload == "tick"
        assert len(node.timers) == 2
    assert len(node.timers) == 0  # the finalize code's own too, as Node-RED clears them after it
    await trio.sleep(20)
    assert kit.nothing_sent("f")


async def test_a_throwing_callback_is_a_node_error_and_the_flow_goes_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    code = """
        if (msg.payload === "throw") { setTimeout(function () { throw new RangeError("too late"); }, 10); }
        if (msg.payload === "done") { setTimeout(function () { node.done(new Error("done later")); }, 10); }
        return msg;
    """
    async with running([function("f", code), *catch()], tmp_path) as kit:
        await kit.inject("f", "throw")
        await kit.expect("f")
        thrown, with_no_message = await failure_of(kit)
        sent = await kit.inject("f", "done")
        await kit.expect("f")
        done, failed = await failure_of(kit)
        await kit.inject("f", "fine")
        assert (await kit.expect("f")).payload == "fine"
    # Node-RED reports a callback's throw as node.error(err, {}): a failure of no message
    assert (thrown, with_no_message.payload) == ("RangeError: too late", None)
    # node.done(err) is that of the message whose call set the timer
    assert (done, failed.payload, failed.msg_id) == ("Error: done later", "done", sent.msg_id)


async def test_an_endless_loop_in_a_callback_is_stopped_by_the_time_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    code = "if (msg.payload === 'loop') { setTimeout(function () { while (true) {} }, 10); return null; } return msg;"
    async with running([function("f", code, timeout="0.1"), *catch()], tmp_path) as kit:
        await kit.inject("f", "loop")
        text, failed = await failure_of(kit)
        await kit.inject("f", "next")
        assert (await kit.expect("f")).payload == "next"
    assert (text, failed.payload) == ("Error: Script execution timed out after 100ms", None)
    assert kit.stats()["f"]["timed_out"] == 1


async def test_a_call_stopped_by_a_limit_sets_no_timer(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    code = """
        if (msg.payload === "never") { await new Promise(function () {}); }  // fails only when no timer is set
        setTimeout(function () { node.send({payload: "set by a stopped call"}); }, 10);
        while (true) {}
    """
    async with running([function("f", code, timeout="0.1"), *catch()], tmp_path) as kit:
        await kit.inject("f", "loop")
        stopped, _ = await failure_of(kit)
        await kit.inject("f", "never")
        never, _ = await failure_of(kit)
        await trio.sleep(1)
        assert kit.nothing_sent("f")
    assert stopped == "Error: Script execution timed out after 100ms"
    assert never.startswith("Error: the function's promise never settled, and no timer is set")


async def test_the_timers_set_at_once_are_bounded(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    code = """
        var count = 0;
        try {
            for (;;) { setTimeout(function () {}, 60000); count++; }
        } catch (error) {
            msg.payload = [count, String(error)];
        }
        return msg;
    """
    async with running([function("f", code)], tmp_path) as kit:
        await kit.inject("f", None)
        out = await kit.expect("f")
        assert len(kit.engine.node("f").timers) == 10_000
    assert out.payload == [10_000, "Error: too many timers: a function node may have 10000 set at once (clear "
                                   "those it no longer needs with clearTimeout or clearInterval)"]  # fmt: skip


async def test_code_that_awaits_a_timer_goes_on_when_it_fires(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    code = """
        node.send({payload: "before the wait"});
        await new Promise(function (resolve) { setTimeout(resolve, 50); });
        if (msg.payload === "fail") { throw new Error("failed after the wait"); }
        msg.payload = "after the wait: " + msg.payload;
        return msg;
    """
    async with running([function("f", code), *catch()], tmp_path) as kit:
        start = trio.current_time()
        sent = await kit.inject("f", "one")
        assert (await kit.expect("f")).payload == "before the wait"
        out = await kit.expect("f")
        assert (out.payload, trio.current_time() - start) == ("after the wait: one", pytest.approx(0.05))
        await kit.inject("f", "fail")
        text, failed = await failure_of(kit)
    assert out.msg_id == sent.msg_id
    assert (text, failed.payload) == ("Error: failed after the wait", "fail")


# ---- Buffer -------------------------------------------------------------------------------------


async def test_buffer_from_and_to_string_in_each_encoding(tmp_path: Path) -> None:
    # what Node.js 20 gives for each
    code = """
        msg.payload = {
            utf8: Buffer.from("héllo €").toString("hex"),
            fromHex: Buffer.from("68c3a96c6c6f20e282ac", "hex").toString("utf8"),
            base64: Buffer.from("héllo €").toString("base64"),
            fromBase64: Buffer.from("aMOpbGxvIOKCrA==", "base64").toString("utf-8"),
            latin1: Buffer.from("héllo", "latin1").toString("hex"),
            binary: Buffer.from([0x68, 0xe9]).toString("binary"),
            ascii: Buffer.from([0x68, 0xe9]).toString("ascii"),
            fromAscii: Buffer.from("hé", "ascii").toString("hex"),
            invalidUtf8: Buffer.from([0x61, 0xff, 0x62]).toString(),
            part: Buffer.from("hello").toString("utf8", 1, 3),
            alloc: Buffer.alloc(5, "ab").toString(),
            concat: Buffer.concat([Buffer.from("con"), Buffer.from("cat")]).toString(),
            byteLength: Buffer.byteLength("héllo €"),
            sliceIsBuffer: Buffer.isBuffer(Buffer.from("hello").slice(1)),
            equals: [Buffer.from("a").equals(Buffer.from("a")), Buffer.from("a").equals(Buffer.from("b"))],
            json: JSON.stringify(Buffer.from("hi")),
            numbers: (function () {
                var bytes = Buffer.alloc(6);
                bytes.writeUInt16BE(0x1234, 0);
                bytes.writeInt32LE(-2, 2);
                return [bytes.toString("hex"), bytes.readUInt16BE(0), bytes.readInt32LE(2)];
            })()
        };
        try { Buffer.from("x", "klingon"); } catch (error) { msg.payload.unknown = String(error); }
        return msg;
    """
    async with running([function("f", code)], tmp_path) as kit:
        await kit.inject("f", None)
        out = await kit.expect("f")
    assert out.payload == {
        "utf8": "68c3a96c6c6f20e282ac", "fromHex": "héllo €", "base64": "aMOpbGxvIOKCrA==", "fromBase64": "héllo €",
        "latin1": "68e96c6c6f", "binary": "hé", "ascii": "hi", "fromAscii": "68e9", "invalidUtf8": "a\ufffdb",
        "part": "el", "alloc": "ababa", "concat": "concat", "byteLength": 10, "sliceIsBuffer": True,
        "equals": [True, False], "json": '{"type":"Buffer","data":[104,105]}',
        "numbers": ["1234feffffff", 0x1234, -2],
        "unknown": "TypeError [ERR_UNKNOWN_ENCODING]: Unknown encoding: klingon",
    }  # fmt: skip


async def test_bytes_in_are_a_buffer_and_a_buffer_out_is_bytes(tmp_path: Path) -> None:
    code = """
        var incoming = msg.payload;
        msg.seen = [Buffer.isBuffer(incoming), incoming.length, incoming.toString("hex")];
        msg.payload = Buffer.concat([incoming, Buffer.from("!")]);
        msg.nested = {part: incoming.subarray(2), json: incoming.toJSON()};  // its JSON form comes out as bytes too
        flow.set("kept", incoming);
        node.send({payload: Buffer.from([1, 2])});
        return msg;
    """
    async with running([function("f", code)], tmp_path) as kit:
        await kit.inject("f", b"\x00\x01hi")
        alone, out = await kit.expect("f"), await kit.expect("f")
    assert alone.payload == b"\x01\x02"
    assert out.payload == b"\x00\x01hi!"
    assert out.props["seen"] == [True, 4, "00016869"]
    assert out.props["nested"] == {"part": b"hi", "json": b"\x00\x01hi"}
    assert kit.engine.contexts.flow("A").get("kept") == b"\x00\x01hi"


# ---- validation ---------------------------------------------------------------------------------


def test_a_syntax_error_fails_validation_with_its_line(tmp_path: Path) -> None:
    found = problems(tmp_path, [function("f", "var ok = 1;\nvar = 2;"), function("g", "return msg;", finalize="if (")])
    assert found == [("$[1].func", "SyntaxError: variable name expected (line 2, col 5)"),
                     # (found past the code's end, where it is put into a function: no position)
                     ("$[2].finalize", "SyntaxError: unexpected token in expression: '}'")]  # fmt: skip


def test_libs_are_refused_naming_the_modules(tmp_path: Path) -> None:
    libs = [{"var": "moment", "module": "moment"}, {"var": "_", "module": "lodash"}]
    assert problems(tmp_path, [function("f", "return msg;", libs=libs)]) == [
        ("$[1].libs", "evflow's function node loads no modules: 'moment', 'lodash' cannot be used")]


def test_bad_timeout_and_outputs(tmp_path: Path) -> None:
    assert problems(tmp_path, [function("f", "return msg;", timeout="soon"),
                               {**function("g", "return msg;"), "outputs": -1}]) == [
        ("$[1].timeout", "timeout must be a number of seconds, got 'soon'"),
        ("$[2].outputs", "outputs must be 0 or more, got -1")]  # fmt: skip


def test_node_red_editor_problems_are_a_warning(tmp_path: Path) -> None:
    plan = load(tmp_path, [function("f", "return msg;", noerr=2, timeout="")])
    assert [(w.path, w.message) for w in plan.warnings] == [
        ("$[1].noerr", "Node-RED's editor saw 2 problem(s) in this node's code")]


def test_without_the_engine_validation_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "quickjs", None)  # `import quickjs` now fails as if not installed
    assert problems(tmp_path, [function("f", "return msg;")]) == [
        ("$[1]", "the function node needs a JavaScript engine, which is not installed: pip install "
                 "'evflow[function]'")]  # fmt: skip


def test_the_archived_quickjs_package_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sandbox, "_is_quickjs_ng", lambda: False)  # its module is `quickjs` too
    assert problems(tmp_path, [function("f", "return msg;")]) == [
        ("$[1]", "the module quickjs is not quickjs-ng's: pip uninstall quickjs, then pip install "
                 "'evflow[function]'")]  # fmt: skip
