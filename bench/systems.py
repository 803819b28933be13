"""The three systems under test, each started as a fresh process for one measurement.

A system is started for a *kind* of flow:

* ``forward``: receive the heartbeat topic → keep payload >= 1000 → publish to ``bench/forwarded``;
  evflow has it twice, with ``mqtt in`` (``forward``) and with its ``heartbeat`` node (``forward-heartbeat``);
* ``idle``: the same with a keepalive (evflow's ``keepalive`` node, a 2 s inject in Node-RED);
* ``request``: trigger → ``is_ca_certificate_installed`` → result.

The process started is the one that does the work (python or node itself, no shell in between),
so its /proc entries are the system's.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import BENCH_DIR, CACHE_DIR, FORWARD_TOPIC, HEARTBEAT_TOPIC, MODULE_ID

NODE_RED_CACHE = CACHE_DIR / "node-red"
NODE_RED_SPEC = "node-red@4"


def user_environment(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: this machine sets PYTHONDONTWRITEBYTECODE, a user's does not,
    and without .pyc files every start would compile evflow again."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


class Running:
    """One started system: its process, its log file, and a clean stop."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.stopped = False  # by stop(), not by itself

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn(argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Running:
    log_path = workdir / "system.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=env if env is not None else user_environment(), cwd=workdir)
    return Running(process, log_path)


def _set_qos(nodes: list[dict[str, Any]], qos: int, as_text: bool = False) -> None:
    for node in nodes:
        if node.get("type") in ("mqtt in", "mqtt out", "heartbeat") and "qos" in node:
            node["qos"] = str(qos) if as_text else qos


class Evflow:
    name = "evflow"
    label = "evflow"
    flows = {"forward": "forward-mqtt-in.json", "forward-heartbeat": "forward-heartbeat.json",
             "idle": "idle.json", "request": "request.json"}

    def __init__(self, python_options: list[str] | None = None) -> None:
        # Options of `evflow run` (after the flow file), for legs that measure one.
        self.run_options: list[str] = []
        # The command a user runs: the `evflow` script of this venv (python -m as a fallback);
        # with interpreter options (-X importtime), the same script run by this venv's python.
        script = Path(sys.executable).with_name("evflow")
        if python_options is None and script.exists():
            self.command = [str(script)]
        elif script.exists():
            self.command = [sys.executable, *python_options, str(script)]
        else:
            self.command = [sys.executable, *(python_options or []), "-m", "evflow.runtime.cli"]

    def supports(self, kind: str) -> bool:
        return kind in self.flows

    def start(self, kind: str, qos: int, port: int, workdir: Path) -> Running:
        nodes = json.loads((BENCH_DIR / "flows" / self.flows[kind]).read_text())
        _set_qos(nodes, qos)
        flow = workdir / "flow.json"
        flow.write_text(json.dumps(nodes, indent=1))
        env = user_environment(BENCH_BROKER=f"mqtt://127.0.0.1:{port}")
        return _spawn([*self.command, "run", str(flow), *self.run_options], workdir, env)


class PahoFloor:
    name = "paho"
    label = "paho floor"

    def supports(self, kind: str) -> bool:
        return kind in ("forward", "idle", "request")

    def start(self, kind: str, qos: int, port: int, workdir: Path) -> Running:
        if kind == "request":
            argv = [sys.executable, str(BENCH_DIR / "paho_requester.py"), "--port", str(port), "--module-id", MODULE_ID]
        else:
            argv = [sys.executable, str(BENCH_DIR / "paho_forwarder.py"), "--port", str(port), "--qos", str(qos),
                    "--in-topic", HEARTBEAT_TOPIC, "--out-topic", FORWARD_TOPIC]
        return _spawn(argv, workdir)


class NodeRed:
    """Node-RED 4 on flows from bench/nodered/. Their nodes carry editor coordinates (x, y): Node-RED
    takes a node without them for a config node, and refuses the flow."""

    name = "node-red"
    label = "Node-RED"
    flows = {"forward": "forward.json", "idle": "idle.json", "request": "request.json"}

    def __init__(self) -> None:
        self.node = shutil.which("node")
        self.red_js = NODE_RED_CACHE / "node_modules" / "node-red" / "red.js"

    def supports(self, kind: str) -> bool:
        return kind in self.flows

    @property
    def version(self) -> str:
        package = self.red_js.parent / "package.json"
        return json.loads(package.read_text())["version"] if package.exists() else "?"

    def install(self) -> None:
        """Node-RED 4 from npm into the bench's cache (outside the repository), once."""
        if self.node is None or shutil.which("npm") is None:
            raise RuntimeError("Node-RED needs node and npm (e.g. `apt-get install nodejs npm`), or leave it "
                               "out with --systems evflow,paho")
        if self.red_js.exists() and self.version.startswith("4."):
            return
        NODE_RED_CACHE.mkdir(parents=True, exist_ok=True)
        print(f"installing {NODE_RED_SPEC} into {NODE_RED_CACHE} ...", file=sys.stderr, flush=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_RED_CACHE), NODE_RED_SPEC],
                       check=True, stdout=subprocess.DEVNULL)

    def start(self, kind: str, qos: int, port: int, workdir: Path) -> Running:
        nodes = json.loads((BENCH_DIR / "nodered" / self.flows[kind]).read_text())
        _set_qos(nodes, qos, as_text=True)
        for node in nodes:
            if node.get("type") == "mqtt-broker":
                node["port"] = str(port)
        (workdir / "flows.json").write_text(json.dumps(nodes, indent=1))
        shutil.copy(BENCH_DIR / "nodered" / "settings.js", workdir / "settings.js")
        assert self.node is not None
        return _spawn([self.node, str(self.red_js), "--settings", str(workdir / "settings.js"),
                       "--userDir", str(workdir), "flows.json"], workdir)


SYSTEMS = {"evflow": Evflow, "paho": PahoFloor, "node-red": NodeRed}
