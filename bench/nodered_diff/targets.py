"""The two systems a case runs on, each as a process of its own with the case's flow file: Node-RED 4
(the bench's npm install, headless, with this folder's settings.js) and evflow (`evflow run`).

Both read the private broker from the environment (MQTT_HOST, MQTT_PORT: the case's mqtt-broker
says ``${MQTT_HOST}`` and ``${MQTT_PORT}``), plus the case's own ``env``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from corpus import HERE, Case
from systems import Evflow, NodeRed, Running, _spawn, user_environment

SETTINGS = HERE / "settings.js"

# Lines of Node-RED's log that say the flow is wrong or a node failed: an [error] line, a node's
# [warn] line ("[warn] [switch:name] ..."), or a node type Node-RED does not know.
_NODE_RED_PROBLEM = re.compile(r"\[error\]|\[warn\] \[[^\]]+:|missing types|Unknown type|Error")
# Lines Node-RED writes on every start at level warn, whatever the flow.
_NODE_RED_ROUTINE = ("Projects disabled", "Using unencrypted credentials")


def _environment(case: Case, port: int) -> dict[str, str]:
    return user_environment(MQTT_HOST="127.0.0.1", MQTT_PORT=str(port), **case.env)


class NodeRedTarget:
    name = "node-red"
    # The first start after the install compiles a lot of JavaScript.
    ready_timeout = 60.0

    def __init__(self) -> None:
        self.system = NodeRed()

    @property
    def version(self) -> str:
        return self.system.version

    def install(self) -> None:
        """Node-RED from npm into the bench's cache, once (RuntimeError without node or npm)."""
        if self.system.node is None:
            raise RuntimeError("Node-RED needs node (e.g. `apt-get install nodejs npm`)")
        if not self.system.red_js.exists() and shutil.which("npm") is None:
            raise RuntimeError("installing Node-RED needs npm (e.g. `apt-get install npm`)")
        self.system.install()

    def start(self, case: Case, port: int, workdir: Path) -> Running:
        (workdir / "flows.json").write_text(json.dumps(case.runnable_flow(), indent=1))
        shutil.copy(SETTINGS, workdir / "settings.js")
        assert self.system.node is not None
        argv = [self.system.node, str(self.system.red_js), "--settings", str(workdir / "settings.js"),
                "--userDir", str(workdir), "flows.json"]
        return _spawn(argv, workdir, _environment(case, port))

    @staticmethod
    def problems(case: Case, log: str) -> list[str]:
        """The lines of Node-RED's log that say something went wrong, less those the case expects."""
        return [
            line for line in log.splitlines()
            if _NODE_RED_PROBLEM.search(line)
            and not any(routine in line for routine in _NODE_RED_ROUTINE)
            and not any(allowed in line for allowed in case.log_allowed)
        ]


class EvflowTarget:
    name = "evflow"
    ready_timeout = 30.0

    def __init__(self) -> None:
        self.command = Evflow().command

    def start(self, case: Case, port: int, workdir: Path) -> Running:
        flow = workdir / "flow.json"
        flow.write_text(json.dumps(case.runnable_flow(), indent=1))
        return _spawn([*self.command, "--log-format", "text", "run", str(flow)], workdir, _environment(case, port))
