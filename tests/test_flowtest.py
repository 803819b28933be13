"""`evflow test`: declarative flow tests pass, and a wrong expectation or a broken test file fails clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
CLI = [sys.executable, "-m", "evflow.runtime.cli", "test"]


def run(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_the_example_flow_tests_pass() -> None:
    result = run(HERE / "flowtests" / "certificate-check.test.json", HERE / "flowtests" / "expired-leaf.test.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS expired-leaf.test.json: an expired SECC leaf is reported as not usable" in result.stdout
    assert result.stdout.strip().endswith("4 passed, 0 failed")


def test_a_wrong_expectation_fails_with_what_came_instead(tmp_path: Path) -> None:
    test = tmp_path / "wrong.test.json"
    test.write_text(json.dumps({
        "flow": str((HERE.parent / "flows" / "certificate-check.json").resolve()),
        "everest": {},
        "cases": [{"name": "expects the wrong status", "inject": {"node": "v2g-leaf"},
                   "expect": {"node": "v2g-leaf", "payload": {"status": "Rejected"}}},
                  {"name": "waits for a port nothing comes out of", "inject": {"node": "v2g-leaf"},
                   "expect": {"node": "v2g-leaf", "port": 1, "timeout": 0.5}}],
    }))
    result = run(test)
    assert result.returncode == 1
    assert 'FAIL wrong.test.json: expects the wrong status: \'v2g-leaf\' port 0 sent payload {"status": "Accepted"' in result.stdout
    assert "expected {\"status\": \"Rejected\"}" in result.stdout
    assert "FAIL wrong.test.json: waits for a port nothing comes out of: nothing from 'v2g-leaf' port 1 within 0.5 s" in result.stdout
    assert result.stdout.strip().endswith("0 passed, 2 failed")


def test_a_broken_test_file_is_named(tmp_path: Path) -> None:
    test = tmp_path / "broken.test.json"
    test.write_text(json.dumps({"flow": "x.json", "cases": [{"name": 3}]}))
    result = run(test)
    assert result.returncode == 1
    assert "expected a string, got an integer @ $.cases[0].name" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
