"""filter, log, debug and catch, in running flows (no broker needed).

Where a node emits nothing the test can wait on (log, debug, a catch that must stay silent), the flow
also wires its source to a ``sink`` node, last (a fan-out sends in wire order): once that saw every
message, leaving ``run_flow`` stops the flow, and stopping drains every message in flight, so
whatever the node was going to do is done when the block ends — no sleeping.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import attrs
import pytest

from evflow.runtime.codec import structure
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.message import Message, new_message
from evflow.runtime.models.evse_security import GetCertificateInfoResult
from evflow.runtime.nodeapi import Node
from evflow.runtime.registry import Registry
from evflow.runtime.testing import FlowUnderTest, run_flow

# ---- test node types ---------------------------------------------------------------------------


@attrs.frozen
class NoConfig:
    pass


@attrs.frozen(kw_only=True)
class EmitConfig:
    payloads: tuple[Any, ...]
    topic: str = ""
    # structure each payload as a GetCertificateInfoResult (a typed reply, as the request nodes send)
    typed: bool = False


class Emit(Node[EmitConfig]):
    """Source: sends its payloads in order, once, as soon as the flow is ready."""

    type = "test-emit"
    Config = EmitConfig
    is_source = True
    has_input = False

    async def run(self) -> None:
        for payload in self.config.payloads:
            if self.config.typed:
                payload = structure(payload, GetCertificateInfoResult)
            await self.send(new_message(payload, self.config.topic))


@attrs.frozen(kw_only=True)
class FailConfig:
    pass


class Fail(Node[FailConfig]):
    """Raises on the payload "bad", passes everything else on."""

    type = "test-fail"
    Config = FailConfig

    async def receive(self, msg: Message) -> None:
        if msg.payload == "bad":
            raise RuntimeError(f"cannot handle {msg.payload!r}")
        await self.send(msg)


TYPES = (Emit, Fail)


def node(
    node_id: str, node_type: str, wires: list[list[str]] | None = None, z: str = "A", **props: Any
) -> dict[str, Any]:
    return {"id": node_id, "type": node_type, "z": z, "wires": wires or [], **props}


def tab(tab_id: str) -> dict[str, Any]:
    return {"id": tab_id, "type": "tab", "label": tab_id}


def emit(node_id: str, payloads: list[Any], targets: list[str], z: str = "A", **props: Any) -> dict[str, Any]:
    return node(node_id, "test-emit", [targets], z, payloads=payloads, **props)


def rule(prop: str, op: str, *value: Any) -> dict[str, Any]:
    return {"property": prop, "op": op, **({"value": value[0]} if value else {})}


async def drained(flow: FlowUnderTest, node_id: str) -> list[Message]:
    """Everything a sink passed on that no ``expect`` took yet (call once the flow stopped: its
    taps keep what it sent, and nothing more can come)."""
    found = []
    while not flow.nothing_sent(node_id):
        found.append(await flow.expect(node_id))
    return found


def write_flow(directory: Path, nodes: list[dict[str, Any]]) -> Path:
    """A flow file for ``load_plan``, where a test wants the load itself."""
    path = directory / "flow.json"
    path.write_text(json.dumps(nodes, indent=1))
    return path


# A typed reply with a secret in it: CertificateInfo.password, the key's passphrase.
SECRET = "s3cret-passphrase"
CERT_INFO: dict[str, Any] = {
    "status": "Accepted",
    "info": {
        "key": "/etc/everest/certs/client/cso/SECC_LEAF.key",
        "certificate_count": 2,
        "certificate_single": "/etc/everest/certs/client/cso/SECC_LEAF.pem",
        "password": SECRET,
        "ocsp": [{
            "hash": {"hash_algorithm": "SHA256", "issuer_name_hash": "aa01", "issuer_key_hash": "bb02",
                     "serial_number": "1f"},
            "ocsp_path": "/etc/everest/certs/ocsp/leaf.der",
        }],
    },
}
NOT_FOUND: dict[str, Any] = {"status": "NotFound"}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# ---- filter ------------------------------------------------------------------------------------

JSON_PAYLOADS: list[Any] = [
    {"status": "Accepted", "count": 3, "flag": True, "tags": ["x", "y"], "info": {"ocsp": [{"path": "/o.der"}]}},
    {"status": "Rejected", "count": 10, "flag": False},
    {"status": "NotFound", "count": "3"},
    {"count": 1.5, "flag": 1},
    "plain text",
    {"status": None, "count": None},
]

# name: (rules, mode, indexes of JSON_PAYLOADS that pass)
JSON_CASES: dict[str, tuple[list[dict[str, Any]], str, list[int]]] = {
    "eq": ([rule("payload.status", "eq", "Accepted")], "all", [0]),
    "eq-number-is-not-a-string": ([rule("payload.count", "eq", 3)], "all", [0]),
    "eq-true-is-not-1": ([rule("payload.flag", "eq", 1)], "all", [3]),
    "eq-list": ([rule("payload.tags", "eq", ["x", "y"])], "all", [0]),
    "eq-whole-payload": ([rule("payload", "eq", "plain text")], "all", [4]),
    "eq-topic": ([rule("topic", "eq", "certs")], "all", [0, 1, 2, 3, 4, 5]),
    "eq-msg-prefix": ([rule("msg.payload.status", "eq", "Rejected")], "all", [1]),
    "ne-present-and-different": ([rule("payload.status", "ne", "Accepted")], "all", [1, 2]),
    "ne-missing-is-false": ([rule("payload.nope", "ne", 1)], "all", []),
    "lt": ([rule("payload.count", "lt", 5)], "all", [0, 3]),
    "lte": ([rule("payload.count", "lte", 3)], "all", [0, 3]),
    "gt": ([rule("payload.count", "gt", 3)], "all", [1]),
    "gte": ([rule("payload.count", "gte", 3)], "all", [0, 1]),
    "gt-strings": ([rule("payload.status", "gt", "N")], "all", [1, 2]),
    "lt-string-vs-number-is-false": ([rule("payload.status", "lt", 5)], "all", []),
    "in": ([rule("payload.status", "in", ["Accepted", "NotFound"])], "all", [0, 2]),
    "in-numbers-not-booleans": ([rule("payload.flag", "in", [1, 2])], "all", [3]),
    "regex": ([rule("payload.status", "regex", "^(Acc|Rej)")], "all", [0, 1]),
    "regex-searches": ([rule("payload.status", "regex", "ound$")], "all", [2]),
    "regex-strings-only": ([rule("payload.count", "regex", "3")], "all", [2]),
    "exists": ([rule("payload.status", "exists")], "all", [0, 1, 2]),
    "exists-list-index": ([rule("payload.info.ocsp.0.path", "exists")], "all", [0]),
    "exists-bracket-index": ([rule("payload.info.ocsp[0].path", "exists")], "all", [0]),
    "exists-index-out-of-range": ([rule("payload.info.ocsp.1", "exists")], "all", []),
    "no-step-into-a-string": ([rule("payload.0", "exists")], "all", []),
    "true": ([rule("payload.flag", "true")], "all", [0]),
    "false": ([rule("payload.flag", "false")], "all", [1]),
    "mode-all": ([rule("payload.status", "exists"), rule("payload.count", "gte", 3)], "all", [0, 1]),
    "mode-any": ([rule("payload.status", "eq", "Rejected"), rule("payload.count", "lt", 2)], "any", [1, 3]),
}

TYPED_PAYLOADS = [CERT_INFO, NOT_FOUND]
TYPED_CASES: dict[str, tuple[list[dict[str, Any]], str, list[int]]] = {
    "eq-enum": ([rule("payload.status", "eq", "Accepted")], "all", [0]),
    "ne-enum": ([rule("payload.status", "ne", "Accepted")], "all", [1]),
    "in-enum": ([rule("payload.status", "in", ["NotFound", "Rejected"])], "all", [1]),
    "regex-enum": ([rule("payload.status", "regex", "^Not")], "all", [1]),
    "gte-field": ([rule("payload.info.certificate_count", "gte", 2)], "all", [0]),
    "deep-field": ([rule("payload.info.ocsp.0.ocsp_path", "eq", "/etc/everest/certs/ocsp/leaf.der")], "all", [0]),
    "deep-enum": ([rule("payload.info.ocsp.0.hash.hash_algorithm", "eq", "SHA256")], "all", [0]),
    "exists-optional-set": ([rule("payload.info", "exists")], "all", [0]),
    "unset-optional-is-missing": ([rule("payload.info.certificate_root", "exists")], "all", []),
    "only-declared-fields": ([rule("payload.info.__class__", "exists")], "any", []),
    "typed-equals-its-json": ([rule("payload.info.ocsp", "eq", CERT_INFO["info"]["ocsp"])], "all", [0]),
}


def filter_flow(payloads: list[Any], cases: dict[str, Any], **emit_options: Any) -> list[dict[str, Any]]:
    # "all" last: when it has a message, every filter has it already.
    flow = [tab("A"), emit("src", payloads, [*(f"f-{name}" for name in cases), "all"], topic="certs", **emit_options),
            node("all", "test-sink")]
    for name, (rules, mode, _) in cases.items():
        flow.append(node(f"f-{name}", "filter", [[f"out-{name}"]], rules=rules, mode=mode))
        flow.append(node(f"out-{name}", "test-sink"))
    return flow


async def run_filter_cases(tmp_path: Path, payloads: list[Any], cases: dict[str, Any], **emit_options: Any) -> None:
    async with run_flow(filter_flow(payloads, cases, **emit_options), node_types=TYPES, workdir=tmp_path) as kit:
        sent = [await kit.expect("all") for _ in payloads]
    passed = {}
    for name in cases:
        out = await drained(kit, f"out-{name}")
        # A filter passes the message it got on unchanged, in order. The fan-out gave each filter
        # a copy of its own (same msg_id, a payload of its own), so it is known by its msg_id, and
        # equal to what the source sent.
        passed[name] = [next(i for i, m in enumerate(sent) if m.msg_id == msg.msg_id) for msg in out]
        assert out == [sent[i] for i in passed[name]], name
    assert passed == {name: expected for name, (_, _, expected) in cases.items()}


async def test_filter_ops_on_json_payloads(tmp_path: Path) -> None:
    await run_filter_cases(tmp_path, JSON_PAYLOADS, JSON_CASES)


async def test_filter_ops_on_typed_payloads(tmp_path: Path) -> None:
    await run_filter_cases(tmp_path, TYPED_PAYLOADS, TYPED_CASES, typed=True)


@pytest.mark.parametrize(("rules", "path", "fragment"), [
    ([rule("payload.x", "lt", {"a": 1})], "$[0].rules[0].value", "compares with a number or a string"),
    ([rule("payload.x", "lt", True)], "$[0].rules[0].value", "compares with a number or a string"),
    ([rule("payload.x", "regex", 5)], "$[0].rules[0].value", "takes a pattern"),
    ([rule("payload.x", "eq", 1), rule("payload.x", "in", None)], "$[0].rules[1].value", "op 'in' needs a value"),
    ([rule("payload.x", "exists"), rule("payload.x", "false", False)], "$[0].rules[1].value", "takes no value"),
    ([], "$[0].rules", "at least one rule"),
])
def test_filter_config_errors_name_the_rule(tmp_path: Path, rules: list[Any], path: str, fragment: str) -> None:
    flow = write_flow(tmp_path, [{"id": "f", "type": "filter", "rules": rules, "wires": []}])
    with pytest.raises(FlowInvalid) as caught:
        load_plan([flow], registry=Registry.from_entry_points(), env={})
    assert [(p.node_id, p.path) for p in caught.value.problems] == [("f", path)]
    assert fragment in caught.value.problems[0].message


# ---- log ---------------------------------------------------------------------------------------


def log_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "evflow.node.log"]


async def test_log_redacts_the_password_of_a_typed_reply(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    flow = [
        tab("A"),
        emit("src", [CERT_INFO], ["lg", "seen"], topic="leaf", typed=True),
        node("lg", "log", name="leaf", level="warning",
             message="leaf {payload.status}, {payload.info.certificate_count} certs,"
                     " key pw {payload.info.password} {{not a path}}",
             fields=["payload.info", "topic", "payload.info.nothing"]),
        node("seen", "test-sink"),
    ]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await kit.expect("seen")
    [record] = log_records(caplog)
    info = {**CERT_INFO["info"], "password": "***"}
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "[leaf] leaf Accepted, 2 certs, key pw *** {not a path}"
        f" payload.info={compact(info)} topic=\"leaf\" payload.info.nothing=<missing>"
    )
    assert SECRET not in caplog.text


async def test_log_redacts_secret_keys_at_any_depth(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    payload = {
        "user": "evflow",
        "auth": {"Password": "hunter2", "tokens": [{"token": "t0k3n"}, {"kind": "bearer"}]},
        "tls": {"KEY_PASSWORD": "kp", "passphrase": None, "secret": {"nested": "deep"}},
    }
    flow = [tab("A"), emit("src", [payload], ["lg", "seen"]), node("lg", "log"), node("seen", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await kit.expect("seen")
    [record] = log_records(caplog)
    assert record.levelno == logging.INFO
    assert record.getMessage() == "[lg] " + compact({
        "user": "evflow",
        "auth": {"Password": "***", "tokens": [{"token": "***"}, {"kind": "bearer"}]},
        "tls": {"KEY_PASSWORD": "***", "passphrase": "***", "secret": "***"},
    })
    for secret in ("hunter2", "t0k3n", "kp", "deep"):
        assert secret not in caplog.text


async def test_log_level_off_logs_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    flow = [tab("A"), emit("src", ["one", "two"], ["quiet", "loud", "seen"]),
            node("quiet", "log", level="debug"), node("loud", "log", level="error", message="got {payload}"),
            node("seen", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await kit.expect("seen")
        await kit.expect("seen")
    assert [(r.levelno, r.getMessage()) for r in log_records(caplog)] == [
        (logging.ERROR, "[loud] got one"), (logging.ERROR, "[loud] got two")]


@pytest.mark.parametrize(("message", "fragment"), [
    ("a lone } here", "a lone '}'"),
    ("{payload.status", "is not closed"),
    ("empty {}", "must not be empty"),
    ("{status}", "must start with one of"),
    ("{payload.a b}", "invalid property path"),
])
def test_log_template_errors(tmp_path: Path, message: str, fragment: str) -> None:
    flow = write_flow(tmp_path, [{"id": "l", "type": "log", "message": message, "wires": []}])
    with pytest.raises(FlowInvalid) as caught:
        load_plan([flow], registry=Registry.from_entry_points(), env={})
    [problem] = caught.value.problems
    assert problem.node_id == "l" and fragment in problem.message


def test_log_has_no_output_port(tmp_path: Path) -> None:
    flow = write_flow(tmp_path, [{"id": "l", "type": "log", "wires": [["d"]]}, {"id": "d", "type": "debug"}])
    with pytest.raises(FlowInvalid) as caught:
        load_plan([flow], registry=Registry.from_entry_points(), env={})
    assert [(p.node_id, p.path) for p in caught.value.problems] == [("l", "$[0].wires")]


# ---- debug -------------------------------------------------------------------------------------


async def test_debug_prints_one_redacted_line_per_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flow = [
        tab("A"),
        emit("typed", [CERT_INFO], ["dbg", "path", "whole", "seen"], topic="leaf", typed=True),
        emit("plain", [{"a": {"Token": "t0k3n", "b": [1, 2.5, None, True]}}], ["anon", "seen"]),
        node("dbg", "debug", name="leaf reply"),
        node("path", "debug", name="ocsp", complete="payload.info.ocsp.0.ocsp_path"),
        node("whole", "debug", name="whole", complete="true"),
        node("anon", "debug", complete="payload"),
        node("seen", "test-sink"),
    ]
    capsys.readouterr()
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        first, second = await kit.expect("seen"), await kit.expect("seen")
    typed_msg = first if first.topic == "leaf" else second
    lines = capsys.readouterr().out.splitlines()
    info = {**CERT_INFO["info"], "password": "***"}
    assert sorted(lines) == sorted([
        f"[debug leaf reply] leaf: {compact({'status': 'Accepted', 'info': info})}",
        '[debug ocsp] leaf: "/etc/everest/certs/ocsp/leaf.der"',
        # The whole message as Node-RED shows it: topic, payload, _msgid (16 hex digits).
        "[debug whole] leaf: " + compact({"topic": "leaf", "payload": {"status": "Accepted", "info": info},
                                          "_msgid": f"{typed_msg.msg_id:016x}"}),
        '[debug anon] {"a":{"Token":"***","b":[1,2.5,null,true]}}',
    ])
    assert SECRET not in "\n".join(lines)


# ---- catch -------------------------------------------------------------------------------------


async def test_catch_takes_the_failures_of_its_own_tab_only(tmp_path: Path) -> None:
    flow = [
        tab("A"), tab("B"),
        emit("src", ["bad"], ["fail", "seen"]), node("fail", "test-fail", name="fragile"), node("seen", "test-sink"),
        node("catch-a", "catch", [["caught-a", "by-kind"]]), node("caught-a", "test-sink"),
        # msg.error is reachable by property paths:
        node("by-kind", "filter", [["runtime-errors"]], rules=[rule("error.kind", "eq", "RuntimeError")]),
        node("runtime-errors", "test-sink"),
        node("catch-b", "catch", [["caught-b"]], z="B"), node("caught-b", "test-sink", z="B"),
    ]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        caught = await kit.expect("caught-a")
        # The same failed message, through the filter (a copy of its own: the catch fans out).
        assert await kit.expect("runtime-errors") == caught
    assert caught.payload == "bad" and caught.error is not None
    assert (caught.error.source_id, caught.error.source_type, caught.error.source_name, caught.error.kind,
            caught.error.message) == ("fail", "test-fail", "fragile", "RuntimeError", "cannot handle 'bad'")
    assert kit.nothing_sent("caught-a") and kit.nothing_sent("caught-b")
    assert kit.engine.errors_logged == 0


async def test_catch_scope_lists_node_ids_on_any_tab(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flow = [
        tab("A"), tab("B"),
        emit("src", ["bad"], ["fail-1", "fail-2", "seen"]), node("seen", "test-sink"),
        node("fail-1", "test-fail"), node("fail-2", "test-fail"),
        node("catch-2", "catch", [["caught"]], z="B", scope=["fail-2"]), node("caught", "test-sink", z="B"),
    ]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        caught = await kit.expect("caught")
    assert caught.error is not None and caught.error.source_id == "fail-2"
    assert kit.nothing_sent("caught")
    # fail-1 is in nobody's scope (and its tab has no catch): logged.
    assert kit.engine.errors_logged == 1
    [record] = [r for r in caplog.records if r.name == "evflow.node.test-fail"]
    assert (record.levelno, record.getMessage()) == (logging.ERROR, "[fail-1] cannot handle 'bad'")


async def test_uncaught_only_takes_what_no_other_catch_took(tmp_path: Path) -> None:
    flow = [
        tab("A"), tab("B"), tab("C"),
        # A: a regular catch and an `uncaught` one: the regular one takes the failure.
        emit("src-a", ["bad"], ["fail-a"]), node("fail-a", "test-fail"),
        node("all-a", "catch", [["got-all-a"]]), node("got-all-a", "test-sink"),
        node("rest-a", "catch", [["got-rest-a"]], uncaught=True), node("got-rest-a", "test-sink"),
        # B: only an `uncaught` catch: it takes the failure.
        emit("src-b", ["bad"], ["fail-b"], z="B"), node("fail-b", "test-fail", z="B"),
        node("rest-b", "catch", [["got-rest-b"]], z="B", uncaught=True), node("got-rest-b", "test-sink", z="B"),
        # C: an `uncaught` catch, but a catch on tab A names fail-c in its scope: that one takes it.
        emit("src-c", ["bad"], ["fail-c"], z="C"), node("fail-c", "test-fail", z="C"),
        node("rest-c", "catch", [["got-rest-c"]], z="C", uncaught=True), node("got-rest-c", "test-sink", z="C"),
        node("scoped-c", "catch", [["got-scoped-c"]], scope=["fail-c"]), node("got-scoped-c", "test-sink"),
    ]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        got = {sink: await kit.expect(sink) for sink in ("got-all-a", "got-rest-b", "got-scoped-c")}
    assert {sink: msg.error.source_id for sink, msg in got.items() if msg.error} == {
        "got-all-a": "fail-a", "got-rest-b": "fail-b", "got-scoped-c": "fail-c"}
    for sink in ("got-all-a", "got-rest-a", "got-rest-b", "got-rest-c", "got-scoped-c"):
        assert kit.nothing_sent(sink), sink
    assert kit.engine.errors_logged == 0


async def test_a_failure_without_catch_is_logged_and_the_flow_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = [tab("A"), emit("src", ["bad", "good", "bad", "fine"], ["fail"]), node("fail", "test-fail", [["out"]]),
            node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        assert [(await kit.expect("out")).payload for _ in range(2)] == ["good", "fine"]
    assert kit.engine.errors_logged == 2  # both counted; logged once per burst
    assert [r.getMessage() for r in caplog.records if r.name == "evflow.node.test-fail"] == [
        "[fail] cannot handle 'bad'"]


async def test_a_message_wired_into_catch_is_dropped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = [tab("A"), emit("src", [1, 2], ["c", "seen"]), node("seen", "test-sink"),
            node("c", "catch", [["out"]]), node("out", "test-sink")]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as kit:
        await kit.expect("seen")
        await kit.expect("seen")
    assert kit.nothing_sent("out")
    assert [r.levelno for r in caplog.records if r.name == "evflow.node.catch"] == [logging.WARNING]


def test_catch_with_an_empty_scope_is_refused(tmp_path: Path) -> None:
    flow = write_flow(tmp_path, [{"id": "c", "type": "catch", "scope": [], "wires": []}])
    with pytest.raises(FlowInvalid) as caught:
        load_plan([flow], registry=Registry.from_entry_points(), env={})
    assert [(p.node_id, p.path) for p in caught.value.problems] == [("c", "$[0].scope")]
