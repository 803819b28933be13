"""A private MQTT broker for the demo: mosquitto when it is on PATH, else amqtt (pure Python,
installed with evflow's ``demo`` extra). Both speak MQTT 3.1.1, which is all EVerest uses."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Protocol

from .brokerprocess import ManagedProcess, ProcessStartError
from .mosquitto import MosquittoBroker, MosquittoError, find_mosquitto, free_port

__all__ = ["AmqttBroker", "LocalBroker", "LocalBrokerError", "start_local_broker"]


class LocalBrokerError(RuntimeError):
    pass


class LocalBroker(Protocol):
    @property
    def url(self) -> str: ...

    def stop(self, timeout: float = 10.0) -> None: ...


def find_amqtt() -> str | None:
    """amqtt's broker script: beside this Python (a virtual environment's bin/) or on PATH."""
    beside = Path(sys.executable).parent / "amqtt"
    return str(beside) if beside.is_file() else shutil.which("amqtt")


class AmqttBroker:
    name = "amqtt"

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.workdir = workdir
        self.host = host
        self.port = free_port(host)
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> AmqttBroker:
        program = find_amqtt()
        if program is None:
            raise LocalBrokerError("amqtt is not installed (pip install 'evflow[demo]')")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "amqtt.yaml"
        config.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {self.host}:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        self._process = ManagedProcess([program, "-c", str(config)], f"bind to {self.host}:{self.port}", "amqtt")
        try:
            self._process.start(timeout)
        except ProcessStartError as exc:
            raise LocalBrokerError(str(exc)) from None
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            self._process.stop(timeout)


def start_local_broker(workdir: Path) -> tuple[LocalBroker, str]:
    """A started broker and its name. mosquitto is taken from PATH only: a user who has it in
    /usr/sbin without that on PATH gets the fallback, which works as well."""
    if find_mosquitto(sbin=False) is not None:
        try:
            return MosquittoBroker(workdir / "mosquitto", search_sbin=False).start(), "mosquitto"
        except MosquittoError as exc:
            raise LocalBrokerError(str(exc)) from None
    if find_amqtt() is None:
        raise LocalBrokerError(
            "no MQTT broker to run: install mosquitto (sudo apt-get install mosquitto) or amqtt "
            "(pip install 'evflow[demo]'); `sh scripts/bootstrap` does both"
        )
    return AmqttBroker(workdir / "amqtt").start(), "amqtt"
