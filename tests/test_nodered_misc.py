"""Node-RED's ``template``, ``link in``/``link out``/``link call``, ``status``, ``complete`` and
``junction``, in running flows.

Expected texts are Node-RED 4.1's (mustache.js 4.2 for templates), checked against Node-RED itself
while writing these tests. Timeouts run on trio's MockClock (``autojump_clock``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from evflow.nodes.complete import Complete
from evflow.nodes.junction import Junction
from evflow.nodes.link import LinkCall, LinkIn, LinkOut
from evflow.nodes.status import Status
from evflow.nodes.template import Template
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import Message, new_message
from evflow.runtime.nodeapi import UNDEFINED, Node
from evflow.runtime.registry import Registry
from evflow.runtime.testing import FlowUnderTest, Sink, run_flow

# ---- test node types ---------------------------------------------------------------------------


@attrs.frozen
class NoConfig:
    pass


class Show(Node[NoConfig]):
    """Shows each payload as its status (Node-RED's node.status), then passes the message on; fails
    on the payload "bad"."""

    type = "test-show"
    Config = NoConfig

    async def receive(self, msg: Message) -> None:
        if msg.payload == "bad":
            raise RuntimeError("bad payload")
        self.context.status({"fill": "green", "shape": "dot", "text": msg.payload})
        await self.send(msg)


TYPES = [Template, LinkIn, LinkOut, LinkCall, Status, Complete, Junction, Show]
TAB = {"id": "A", "type": "tab", "label": "A"}


def node(node_id: str, node_type: str, wires: list[str] | None = None, z: str = "A", **props: Any) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "z": z, "name": "", "x": 100, "y": 100,
            "wires": [wires] if wires is not None else [], **props}


def sink(node_id: str = "out", z: str = "A") -> dict[str, Any]:
    return {"id": node_id, "type": "test-sink", "z": z, "wires": []}


def catch(node_id: str = "caught", z: str = "A") -> dict[str, Any]:
    return {"id": node_id, "type": "catch", "z": z, "scope": None, "uncaught": False, "wires": [[]]}


def template(node_id: str = "tpl", text: str = "This is the payload: {{payload}} !", wires: list[str] | None = None,
             **props: Any) -> dict[str, Any]:
    """A template node as Node-RED 4's editor writes it, with ``props`` changed."""
    defaults = {"field": "payload", "fieldType": "msg", "format": "handlebars", "syntax": "mustache",
                "output": "str"}
    return node(node_id, "template", wires if wires is not None else ["out"], template=text, **{**defaults, **props})


def message(payload: Any = UNDEFINED, topic: str = "", **props: Any) -> Message:
    return new_message(payload, topic).with_props(props)


async def sent(flow: FlowUnderTest, node_id: str = "out") -> list[Message]:
    await trio.testing.wait_all_tasks_blocked()
    found = []
    while not flow.nothing_sent(node_id):
        found.append(await flow.expect(node_id))
    return found


async def render(text: str, msg: Message, **props: Any) -> Any:
    async with run_flow([TAB, template(text=text, **props), sink()], node_types=TYPES) as flow:
        await flow.inject_message("tpl", msg)
        return (await flow.expect("out")).payload


def problems_of(tmp_path: Path, nodes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    file = tmp_path / "flow.json"
    file.write_text(json.dumps(nodes))
    with pytest.raises(FlowInvalid) as failure:
        load_plan([file], registry=Registry.from_entry_points().with_types(Sink, *TYPES))
    return [(p.path, p.message) for p in failure.value.problems if p.severity == "error"]


# ---- template ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "payload", "expected"),
    [
        ("This is the payload: {{payload}} !", "<a href='x'>&</a>",
         "This is the payload: &lt;a href&#x3D;&#39;x&#39;&gt;&amp;&lt;&#x2F;a&gt; !"),
        ("{{{payload}}} {{&payload}}", "<b>", "<b> <b>"),
        ("{{payload}}|{{payload.a}}", 1.5e-7, "1.5e-7|"),
        ("{{payload}}", [1, None, {"a": 1}, True], "1,,[object Object],true"),
        ("{{payload.a.b}}|{{payload.list.1}}|{{payload.s.length}}|{{nothing}}",
         {"a": {"b": 2.0}, "list": [1, 2], "s": "abcd"}, "2|2|4|"),
        ("{{#payload}}[{{name}}:{{topic}}]{{/payload}}",
         [{"name": "a"}, {"name": "b", "topic": "own"}], "[a:T][b:own]"),
        ("{{^payload}}none{{/payload}}{{#payload}}some{{/payload}}", [], "none"),
        ("{{^payload.zero}}falsy{{/payload.zero}}", {"zero": 0}, "falsy"),
        ("list:\n  {{#payload}}\n  - {{.}}\n  {{/payload}}\nend", ["x", "y"], "list:\n  - x\n  - y\nend"),
        ("{{! a comment }}{{=<% %>=}}<% payload %> {{payload}}", 7, "7 {{payload}}"),
    ],
)
async def test_mustache_renders_as_mustache_js(text: str, payload: Any, expected: str) -> None:
    assert await render(text, message(payload, "T")) == expected


async def test_template_reads_flow_global_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVFLOW_TEMPLATE_TEST", "from env")
    nodes = [
        TAB,
        # the first two store their text in the flow and global context, the third reads them
        template("set-flow", "{{payload}} flow", wires=["set-global"], fieldType="flow", field="greeting.text"),
        template("set-global", "{{payload}} global", wires=["tpl"], fieldType="global", field="#:(memory)::g"),
        template(text="{{flow.greeting.text}}|{{global.g}}|{{global[memory].g}}|{{env.EVFLOW_TEMPLATE_TEST}}|"
                      "{{env.NR_NODE_ID}}|{{flow.unset}}"),
        sink(),
    ]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("set-flow", "hi")
        assert (await flow.expect("out")).payload == "hi flow|hi global|hi global|from env|tpl|"
        assert (await flow.expect("set-flow")).payload == "hi"  # the message goes on unchanged


async def test_template_json_output_escapes_text_outside_sections() -> None:
    text = '{"text": "{{payload}}", "n": {{count}}}'
    # line breaks and backslashes kept by the JSON escaping; quotes HTML-escaped by {{ }}, as mustache.js does
    expected = {"text": 'line1\n&quot;q&quot;\\', "n": 3}
    assert await render(text, message('line1\n"q"\\', count=3), output="json") == expected


async def test_template_output_that_is_not_json_fails_with_v8s_words() -> None:
    nodes = [TAB, template(text='{"a": {{payload}}}', output="json"), sink(), catch()]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("tpl", "nope")
        failed = await flow.expect("caught")
    assert failed.error is not None
    assert failed.error.message == 'Unexpected token \'o\', "{"a": nope}" is not valid JSON'


async def test_template_yaml_output_reads_yaml_as_js_yaml_does() -> None:
    text = "a: yes\nb: 010\nc: 12:30\nd: 2001-12-14\ne: true\nf: 1.5\nlist: {{payload}}"
    assert await render(text, message("[1, 2]"), output="yaml") == {
        "a": "yes", "b": 10, "c": "12:30", "d": "2001-12-14T00:00:00.000Z", "e": True, "f": 1.5, "list": [1, 2],
    }


async def test_template_plain_text_into_another_property() -> None:
    assert await render("{{payload}} as is", message(1), syntax="plain", field="out.text") == 1
    nodes = [TAB, template(text="{{payload}} as is", syntax="plain", field="out.text"), sink()]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("tpl", 1)
        assert (await flow.expect("out")).props["out"] == {"text": "{{payload}} as is"}


async def test_an_empty_template_takes_msg_template() -> None:
    nodes = [TAB, template(text=""), sink(), catch()]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject_message("tpl", message(3, template="got {{payload}}"))
        assert (await flow.expect("out")).payload == "got 3"
        await flow.inject_message("tpl", message(4, template="{{#a}}"))
        failed = await flow.expect("caught")
        assert failed.error is not None and failed.error.message == 'Unclosed section "a" at 6'


@pytest.mark.parametrize("text", ["${EVFLOW_TEMPLATE_VAR}", "Hello ${EVFLOW_TEMPLATE_VAR}: {{payload}}"])
async def test_a_dollar_brace_reference_in_a_template_stays_literal(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setenv("EVFLOW_TEMPLATE_VAR", "substituted")
    assert await render(text, message(1)) == text.replace("{{payload}}", "1")


@pytest.mark.parametrize(
    ("props", "path", "words"),
    [
        ({"text": "{{#a}} open"}, "$[1].template", 'Unclosed section "a"'),
        ({"text": "{{flow[file].x}}"}, "$[1].template", "context store 'file'"),
        ({"syntax": "handlebars"}, "$[1].syntax", "syntax must be"),
        ({"output": "xml"}, "$[1].output", "output must be"),
        ({"fieldType": "msg", "field": "a..b"}, "$[1].field", "invalid property expression"),
        ({"fieldType": "env"}, "$[1].fieldType", "fieldType must be"),
    ],
)
def test_bad_template_config_is_a_validation_error(
    tmp_path: Path, props: dict[str, Any], path: str, words: str
) -> None:
    problems = problems_of(tmp_path, [TAB, template(**props), sink()])
    assert len(problems) == 1 and problems[0][0] == path and words in problems[0][1], problems


# ---- link in / link out / link call ------------------------------------------------------------


def link_in(node_id: str, name: str = "", wires: list[str] | None = None, z: str = "A") -> dict[str, Any]:
    return {**node(node_id, "link in", wires or ["out"], z, links=[]), "name": name}


def link_out(node_id: str, links: list[str], mode: str = "link", z: str = "A") -> dict[str, Any]:
    return node(node_id, "link out", None, z, mode=mode, links=links)


def link_call(node_id: str, links: list[str], link_type: str = "static", timeout: str = "30",
              wires: list[str] | None = None, z: str = "A") -> dict[str, Any]:
    return node(node_id, "link call", wires or ["out"], z, links=links, linkType=link_type, timeout=timeout)


# A subroutine on tab B: "sub" prefixes the payload and returns it to its caller.
SUBROUTINE = [
    {"id": "B", "type": "tab", "label": "B"},
    link_in("sub", "subroutine", wires=["sub-tpl"], z="B"),
    template("sub-tpl", "sub({{payload}})", wires=["sub-return"], z="B"),
    link_out("sub-return", [], mode="return", z="B"),
]


async def test_link_out_sends_to_link_in_nodes_on_other_tabs() -> None:
    nodes = [TAB, {"id": "B", "type": "tab", "label": "B"}, link_out("lo", ["li"]), link_in("li", z="B"),
             sink()]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("lo", 1)
        msg = await flow.expect("out")
    assert msg.payload == 1 and msg.props == {"_event": "node:lo"}


async def test_link_call_calls_a_link_in_and_sends_on_what_returns() -> None:
    nodes = [TAB, *SUBROUTINE, link_call("call", ["sub"]), sink()]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject_message("call", message(2, "t", keep=1))
        returned = await flow.expect("out")
        called = await flow.expect("sub")
    assert returned.payload == "sub(2)" and returned.topic == "t"
    assert "_linkSource" not in returned.props and returned.props["keep"] == 1
    assert called.props["_linkSource"] == [{"id": called.props["_linkSource"][0]["id"], "node": "call"}]
    assert len(called.props["_linkSource"][0]["id"]) == 28


async def test_link_calls_nest() -> None:
    nodes = [
        TAB, *SUBROUTINE,
        # "outer" calls "sub" itself, then returns: the call stack has two entries meanwhile
        link_in("outer", wires=["inner-call"]), link_call("inner-call", ["sub"], wires=["outer-return"]),
        link_out("outer-return", [], mode="return"),
        link_call("call", ["outer"]), sink(),
    ]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("call", 1)
        assert (await flow.expect("out")).payload == "sub(1)"
        assert [entry["node"] for entry in (await flow.expect("sub")).props["_linkSource"]] == ["call", "inner-call"]


async def test_dynamic_link_call_finds_a_link_in_by_id_or_by_name() -> None:
    nodes = [
        TAB, *SUBROUTINE, link_call("call", [], "dynamic"), sink(), catch(),
        # two link in nodes of the same name elsewhere: ambiguous; one on this tab would win
        link_in("twin-1", "twin", z="B"), link_in("twin-2", "twin", z="B"),
    ]
    async with run_flow(nodes, node_types=TYPES) as flow:
        for target in ("subroutine", "sub"):
            await flow.inject_message("call", message(target, target=target))
            assert (await flow.expect("out")).payload == f"sub({target})"
        for target, error in [("nothing", "target link-in node 'nothing' not found"),
                              ("twin", "Multiple link-in nodes named 'twin' found"),
                              (UNDEFINED, "target link-in node '' not found"),
                              ("sub-tpl", "target link-in node 'sub-tpl' not found")]:
            await flow.inject_message("call", message(1, target=target))
            failed = await flow.expect("caught")
            assert failed.error is not None and failed.error.message == error


async def test_a_call_without_return_fails_after_its_timeout(autojump_clock: trio.testing.MockClock) -> None:
    nodes = [
        # the subroutine never returns: "hold" keeps what it gets
        TAB, link_in("slow", wires=["hold"]), sink("hold"), link_out("slow-return", [], mode="return"),
        link_call("call", ["slow"], timeout="1.5"), sink(), catch(),
    ]
    async with run_flow(nodes, node_types=TYPES) as flow:
        start = trio.current_time()
        await flow.inject_message("call", message(1, tag="x"))
        failed = await flow.expect("caught")
        assert trio.current_time() - start == pytest.approx(1.5)
        assert failed.error is not None and failed.error.message == "timeout"
        assert failed.payload == 1 and failed.props == {"tag": "x", "_linkSource": []}
        # a return after the timeout still comes out of the link call, as in Node-RED
        late = await flow.expect("hold")
        await flow.inject_message("slow-return", late)
        assert (await flow.expect("out")).payload == 1


async def test_a_return_without_a_caller_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    nodes = [TAB, link_out("ret", [], mode="return"), sink()]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("ret", 1)
        await trio.testing.wait_all_tasks_blocked()
    assert "Missing return node information" in caplog.text


def test_link_validation(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, [
        TAB, link_call("static-without-target", []), link_out("lo", ["missing"]), link_in("li"), sink(),
        node("bad-mode", "link out", None, mode="back", links=[]),
        link_call("bad-timeout", ["li"], timeout="soon"),
    ])
    assert sorted(problems) == sorted([
        ("$[1].links", "a static link call needs the id of the link in node to call"),
        ("$[2].links[0][0]", "wire to 'missing', which is not a node of this flow (dangling wire)"),
        ("$[5].mode", "mode must be 'link' or 'return', got 'back'"),
        ("$[6].timeout", "timeout must be a number of seconds, got 'soon'"),
    ])


# ---- status, complete, junction ------------------------------------------------------------------


async def test_status_nodes_receive_the_status_of_the_nodes_in_their_scope() -> None:
    nodes = [
        TAB, node("show", "test-show", []), node("other", "test-show", []),
        node("all", "status", ["out"], scope=None),
        node("only-other", "status", ["only-other-out"], scope=["other"]),
        sink(), sink("only-other-out"),
    ]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("show", 5)
        status = await flow.expect("out")
        assert status.props["status"] == {
            "fill": "green", "shape": "dot", "text": "5", "source": {"id": "show", "type": "test-show", "name": ""},
        }
        await flow.inject("other", "hello")
        assert (await flow.expect("out")).props["status"]["text"] == "hello"
        assert (await flow.expect("only-other-out")).props["status"]["source"]["id"] == "other"
        assert await sent(flow, "only-other-out") == []


async def test_status_scope_group() -> None:
    nodes = [
        TAB, {"id": "G", "type": "group", "z": "A", "nodes": []},
        {**node("in-group", "test-show", []), "g": "G"}, node("outside", "test-show", []),
        {**node("watch", "status", ["out"], scope="group"), "g": "G"}, sink(),
    ]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("outside", 1)
        await flow.inject("in-group", 2)
        assert [m.props["status"]["source"]["id"] for m in await sent(flow)] == ["in-group"]


async def test_complete_nodes_receive_what_the_nodes_in_scope_finished() -> None:
    nodes = [
        TAB, node("show", "test-show", ["next"]), sink("next"),
        node("done", "complete", ["out"], scope=["show"], uncaught=False), sink(), catch(),
    ]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("show", "ok", topic="t")
        finished = await flow.expect("out")
        assert (finished.payload, finished.topic) == ("ok", "t")
        await flow.inject("show", "bad")  # a failure is not a completion
        await flow.expect("caught")
        assert await sent(flow) == []


def test_status_and_complete_scopes_are_checked(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, [
        TAB, node("s", "status", [], scope="all"), node("c", "complete", [], scope="group"),
    ])
    assert [path for path, _ in problems] == ["$[1].scope", "$[2].scope"]


async def test_junction_passes_messages_to_every_wire() -> None:
    nodes = [TAB, node("j", "junction", ["out", "out2"]), sink(), sink("out2")]
    async with run_flow(nodes, node_types=TYPES) as flow:
        await flow.inject("j", {"a": 1})
        first, second = await flow.expect("out"), await flow.expect("out2")
    assert first.payload == second.payload == {"a": 1}
    first.payload["a"] = 2
    assert second.payload == {"a": 1}
