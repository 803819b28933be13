"""Node-RED's files as they come: unsupported types reported together or skipped with their wires
cut, Node-RED's decrypted credentials file, and catch nodes scoped to a group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from evflow.runtime.flows import CredentialsError, FlowInvalid, load_plan
from evflow.runtime.registry import Registry
from evflow.runtime.testing import Sink, run_flow

from .test_nodes_basic import TYPES

CLI = [sys.executable, "-m", "evflow.runtime.cli"]

# A dashboard in front of a small flow, in Node-RED 4's export shape.
DASHBOARD_FLOW = [
    {"id": "tab1", "type": "tab", "label": "Flow 1", "disabled": False, "info": "", "env": []},
    {"id": "ui-base", "type": "ui_base", "theme": {}, "site": {"name": "Node-RED Dashboard"}},
    {"id": "ui-tab", "type": "ui_tab", "name": "Home", "icon": "dashboard", "disabled": False, "hidden": False},
    {"id": "ui-group", "type": "ui_group", "name": "Default", "tab": "ui-tab", "order": 1, "disp": True,
     "width": "6", "collapse": False},
    {"id": "button", "type": "ui_button", "z": "tab1", "name": "", "group": "ui-group", "order": 0, "width": 0,
     "height": 0, "label": "press", "payload": "on", "payloadType": "str", "topic": "", "x": 100, "y": 80,
     "wires": [["pass"]]},
    {"id": "pass", "type": "test-sink", "z": "tab1", "x": 300, "y": 80, "wires": [["text", "seen"]]},
    {"id": "text", "type": "ui_text", "z": "tab1", "group": "ui-group", "order": 1, "width": 0, "height": 0,
     "name": "", "label": "value", "format": "{{msg.payload}}", "layout": "row-spread", "x": 500, "y": 80,
     "wires": []},
    {"id": "seen", "type": "test-sink", "z": "tab1", "x": 500, "y": 140, "wires": []},
]


def write(tmp_path: Path, flow: list[dict[str, object]], name: str = "flows.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(flow))
    return path


def test_unsupported_types_are_errors_naming_each_node_and_a_way_out(tmp_path: Path) -> None:
    flow = write(tmp_path, [{"id": "x", "type": "ui_buton", "z": "t", "wires": []}])
    with pytest.raises(FlowInvalid) as caught:
        load_plan([flow], env={})
    (problem,) = caught.value.problems
    assert (problem.node_id, problem.path) == ("x", "$[0].type")
    assert "unsupported node type 'ui_buton'" in problem.message and "--skip-unsupported" in problem.message


def test_validate_lists_the_unsupported_nodes_together(tmp_path: Path) -> None:
    flow = write(tmp_path, DASHBOARD_FLOW)
    done = subprocess.run([*CLI, "validate", str(flow), "--format", "json"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    # test-sink is a type of the test harness only: unsupported for the command, like the dashboard's.
    assert report["unsupported"] == {"ui_base": ["ui-base"], "ui_tab": ["ui-tab"], "ui_group": ["ui-group"],
                                     "ui_button": ["button"], "ui_text": ["text"], "test-sink": ["pass", "seen"]}
    text = subprocess.run([*CLI, "validate", str(flow)], capture_output=True, text=True, timeout=60, check=False)
    assert "unsupported: 7 node(s) of 6 type(s): test-sink (2), ui_base (1), ui_button (1)" in text.stderr


def test_skip_unsupported_leaves_them_out_and_reports_each_cut_wire(tmp_path: Path) -> None:
    plan = load_plan([write(tmp_path, DASHBOARD_FLOW)], env={}, skip_unsupported=True,
                     registry=Registry.from_entry_points().with_types(Sink))
    assert {node.id for node in plan.nodes} == {"pass", "seen"}
    warnings = [(w.node_id, w.path, w.message) for w in plan.warnings]
    assert ("pass", "$[5].wires[0][0]", "wire to 'text' (ui_text) cut: unsupported node type") in warnings
    assert ("button", "$[4].type", "unsupported node type 'ui_button': skipped; its wires to 'pass' are cut") in warnings
    assert ("ui-base", "$[1].type", "unsupported node type 'ui_base': skipped") in warnings


async def test_a_flow_with_its_dashboard_skipped_still_carries_messages(tmp_path: Path) -> None:
    async with run_flow(DASHBOARD_FLOW, workdir=tmp_path, skip_unsupported=True) as running:
        await running.inject("pass", "on")
        assert (await running.expect("seen")).payload == "on"


def test_node_red_credentials_file_gives_a_broker_its_login(tmp_path: Path) -> None:
    flow = write(tmp_path, [{"id": "b", "type": "mqtt-broker", "name": "", "broker": "localhost", "port": "1883",
                             "clientid": "", "usetls": False, "protocolVersion": "4", "keepalive": "60",
                             "cleansession": True}])
    credentials = tmp_path / "flows_cred.json"
    credentials.write_text(json.dumps({"b": {"user": "evse", "password": "s3cret-from-node-red"}}))
    plan = load_plan([flow], env={}, node_red_credentials=credentials)
    (broker,) = plan.nodes
    assert (broker.config.credentials.user, broker.config.credentials.password) == ("evse", "s3cret-from-node-red")
    assert "s3cret-from-node-red" not in repr(broker.config)


def test_node_red_credentials_in_the_flow_file_must_be_references(tmp_path: Path) -> None:
    flow = write(tmp_path, [{"id": "b", "type": "mqtt-broker", "broker": "localhost",
                             "credentials": {"user": "evse", "password": "literal"}}])
    with pytest.raises(FlowInvalid) as caught:
        load_plan([flow], env={})
    assert [(p.path, "a secret must come from the environment" in p.message) for p in caught.value.problems] == [
        ("$[0].credentials.password", True)]
    plan = load_plan([write(tmp_path, [{"id": "b", "type": "mqtt-broker", "broker": "localhost",
                                        "credentials": {"user": "evse", "password": "${BROKER_PASSWORD}"}}],
                            "ok.json")], env={"BROKER_PASSWORD": "from-env"})
    assert plan.nodes[0].config.credentials.password == "from-env"


def test_an_encrypted_node_red_credentials_file_is_refused_saying_why(tmp_path: Path) -> None:
    flow = write(tmp_path, [{"id": "b", "type": "mqtt-broker", "broker": "localhost"}])
    credentials = tmp_path / "flows_cred.json"
    credentials.write_text(json.dumps({"$": "4f3a9c0d1e"}))
    with pytest.raises(CredentialsError, match="encrypted .*credentialSecret"):
        load_plan([flow], env={}, node_red_credentials=credentials)


async def test_catch_with_group_scope_takes_only_its_groups_failures(tmp_path: Path) -> None:
    flow = [
        {"id": "t", "type": "tab", "label": "t"},
        {"id": "g1", "type": "group", "z": "t", "name": "one", "nodes": ["fail-1", "catch-1"]},
        {"id": "fail-1", "type": "test-fail", "z": "t", "g": "g1", "wires": []},
        {"id": "fail-2", "type": "test-fail", "z": "t", "wires": []},
        {"id": "catch-1", "type": "catch", "z": "t", "g": "g1", "name": "", "scope": "group", "uncaught": False,
         "x": 1, "y": 1, "wires": [["caught"]]},
        {"id": "caught", "type": "test-sink", "z": "t", "wires": []},
    ]
    async with run_flow(flow, node_types=TYPES, workdir=tmp_path) as running:
        await running.inject("fail-2", "bad", topic="outside the group")
        await running.inject("fail-1", "bad", topic="inside the group")
        caught = await running.expect("caught")
        assert caught.topic == "inside the group" and caught.error is not None
        assert caught.error.source_id == "fail-1"
        await trio.testing.wait_all_tasks_blocked()
        assert running.nothing_sent("caught")


def test_import_nodered_reports_what_runs_what_not_and_the_cut_wires(tmp_path: Path) -> None:
    passing = {"type": "filter", "rules": [{"property": "payload", "op": "exists"}]}
    flow = [{**node, **passing} if node["type"] == "test-sink" else node for node in DASHBOARD_FLOW]
    path = write(tmp_path, flow)
    done = subprocess.run([*CLI, "import-nodered", str(path), "--output", str(tmp_path / "report.md")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "report.md").read_text()
    assert f"Runs without its unsupported nodes: `evflow run --skip-unsupported {path}`." in report
    assert "## Will run: 2 node(s)\n\n- filter: 2\n" in report
    assert "- ui_button (1): button\n" in report and "- ui_group (1): ui-group\n" in report
    assert "## Wires cut by --skip-unsupported: 2" in report
    assert "wire to 'text' (ui_text) cut" in report and "its wires to 'pass' are cut" in report


def test_import_nodered_says_why_a_flow_does_not_run(tmp_path: Path) -> None:
    path = write(tmp_path, [{"id": "b", "type": "mqtt-broker", "broker": "ws://localhost:9001"}])
    done = subprocess.run([*CLI, "import-nodered", str(path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Does not run: fix the errors below." in done.stdout
    assert "node 'b' (mqtt-broker) at $[0].broker: MQTT over WebSockets" in done.stdout
