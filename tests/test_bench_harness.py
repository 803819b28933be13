"""The bench harness still runs: a few hundred messages through evflow and the paho floor.

A benchmark is not a test: nothing here asserts a timing, only that every leg ran and the table has
its rows with numbers in them. Node-RED (npm) stays out.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evflow.runtime.mosquitto import find_mosquitto

BENCH = Path(__file__).resolve().parent.parent / "bench" / "run.py"
NUMBER = r"[\d,]+(?:\.\d+)?"


def test_bench_harness_runs_and_prints_its_table(tmp_path: Path) -> None:
    missing = [tool for tool in ("mosquitto_pub", "mosquitto_sub", "stdbuf") if shutil.which(tool) is None]
    if find_mosquitto() is None or missing:
        pytest.skip(f"the bench needs mosquitto and mosquitto-clients (missing: {', '.join(missing) or 'mosquitto'})")
    results = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--systems", "evflow,paho", "--parts", "throughput", "--qos", "0",
         "--n", "300", "--rounds", "1", "--json", str(results)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    for flow, system in (("mqtt in", "evflow"), ("mqtt in", "paho floor"), ("heartbeat", "evflow")):
        # flow, QoS, system, msg/s, CPU µs/msg, idle RSS, peak RSS, start
        row = rf"^\s+{flow}\s+0\s+{system}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+\d+$"
        assert re.search(row, done.stdout, re.MULTILINE), f"no {flow}/{system} row:\n{done.stdout}"
    assert re.search(rf"^\s+mqtt in\s+0\s+{NUMBER}x\s", done.stdout, re.MULTILINE), done.stdout  # the ratios
    assert "Targets (issue 10)" in done.stdout

    summary = json.loads(results.read_text())["summary"]
    assert {(row["system"], row["flow"]) for row in summary["throughput"]} == {
        ("evflow", "forward"), ("paho", "forward"), ("evflow", "forward-heartbeat")}
    for row in summary["throughput"]:
        for figure in ("msg_per_s", "cpu_us_per_msg", "idle_rss_mb", "peak_rss_mb", "start_s"):
            assert math.isfinite(row[figure]) and row[figure] >= 0, (row, figure)
