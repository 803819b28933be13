"""The plugin host: the example plugin installed from its own directory, the registry's rules, and
the flow-testing fixtures (evflow_everest, evflow_flow) that plugin authors get."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evflow.runtime.registry import NodeTypeSource, Registry, RegistryError

ROOT = Path(__file__).parent.parent
CLI = [sys.executable, "-m", "evflow.runtime.cli"]


def test_example_plugin_is_installed_and_listed_with_its_distribution() -> None:
    registry = Registry.from_entry_points()
    assert [s.distribution for s in registry.sources["certificate-expiry"]] == ["evflow-certificate-expiry"]
    listed = json.loads(subprocess.run([*CLI, "nodes", "--format", "json"], capture_output=True, text=True,
                                       check=True, timeout=60).stdout)
    by_type = {entry["type"]: entry for entry in listed}
    assert by_type["certificate-expiry"]["provided_by"] == "evflow-certificate-expiry"
    assert by_type["filter"]["provided_by"] == "evflow"
    assert {p["name"] for p in by_type["certificate-expiry"]["properties"]} == {"warn_days", "file"}


async def test_the_plugin_flow_runs_against_the_simulator(evflow_everest: Any, evflow_flow: Any) -> None:
    async with evflow_flow([ROOT / "flows" / "certificate-expiry.json"], env=evflow_everest.env) as flow:
        first = await flow.expect("days-left", port=0, timeout=10)
        second = await flow.expect("days-left", port=0, timeout=10)
    subjects = {first.payload["subject"], second.payload["subject"]}
    assert any("DE*EVF*E1234567*1" in s for s in subjects)  # the SECC leaf's CN is the EVSE id
    assert {first.payload["days"], second.payload["days"]} == {364}
    assert first.payload["path"].endswith(("SECC_LEAF.pem", "CSMS_LEAF.pem"))


async def test_the_warning_port_below_the_threshold(tmp_path: Path, evflow_everest: Any, evflow_flow: Any) -> None:
    flow_file = tmp_path / "flow.json"
    flow_file.write_text(json.dumps([
        {"id": "b", "type": "mqtt-broker", "broker": "${EVFLOW_BROKER}"},
        {"id": "api", "type": "everest-api", "broker": "b", "module_id": "${EVEREST_MODULE_ID}"},
        {"id": "leaf", "type": "get-leaf-certificate-info", "api": "api", "certificate_type": "V2G",
         "encoding": "PEM", "include_ocsp": False, "wires": [["expiry"]]},
        {"id": "expiry", "type": "certificate-expiry", "warn_days": 400, "file": "certificate"},
    ]))
    async with evflow_flow([flow_file], env=evflow_everest.env) as flow:
        await flow.inject("leaf")
        warning = await flow.expect("expiry", port=1, timeout=10)
        also = await flow.expect("expiry", port=0, timeout=10)
    assert warning == also and warning.payload["days"] == 364  # the chain file's first certificate


def test_registry_refuses_and_explains() -> None:
    registry = Registry({
        "from-the-future": (NodeTypeSource("from-the-future", "tests.plugin_samples:FromTheFuture", "future-nodes"),),
        "renamed": (NodeTypeSource("renamed", "tests.plugin_samples:NamedWrongly", "odd-nodes"),),
        "missing": (NodeTypeSource("missing", "tests.no_such_module:Node", "gone-nodes"),),
        "twice": (NodeTypeSource("twice", "a:A", "first-dist"), NodeTypeSource("twice", "b:B", "second-dist")),
    })
    expected = {
        "from-the-future": "is written for node API version 2; this evflow provides version 1",
        "renamed": "declares type 'something-else', not 'renamed'",
        "missing": "failed to load: ModuleNotFoundError",
        "twice": "registered twice: by first-dist (a:A) and second-dist (b:B)",
        "nowhere": "unknown node type 'nowhere': no installed package provides it",
    }
    for name, message in expected.items():
        with pytest.raises(RegistryError, match=message.replace("(", r"\(").replace(")", r"\)")):
            registry.load(name)
    classes, errors = registry.load_all()
    assert classes == {} and set(errors) == set(registry.names())  # each failure recorded, none fatal


def test_two_packages_registering_one_type_is_an_error_naming_both(tmp_path: Path) -> None:
    # A second installed distribution that also claims "filter".
    dist = tmp_path / "rival_nodes-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rival-nodes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[evflow.nodes]\nfilter = rival_nodes:Filter\n")
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps([{"id": "f", "type": "filter", "rules": [{"property": "payload", "op": "exists"}]}]))
    result = subprocess.run([*CLI, "validate", str(flow)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1
    assert "node type 'filter' is registered twice: by evflow (evflow.nodes.filter:Filter) and rival-nodes" in result.stderr
    assert "Traceback" not in result.stderr


def test_listing_types_imports_no_node_module() -> None:
    probe = ("import sys; from evflow.runtime.registry import Registry; r = Registry.from_entry_points(); "
             "names = r.names(); assert 'certificate-expiry' in names; "
             "print(sorted(m for m in sys.modules if m.startswith(('evflow.nodes.', 'evflow_certificate'))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
