"""Run a private mosquitto: on a free port, with its own config in its own directory.

Used by the test fixtures and the demo. Readiness is mosquitto's own "running" log line, not a poll;
listeners for TCP, a unix socket and TLS (optionally requiring client certificates), and a password
file, can be asked for.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

__all__ = ["MosquittoError", "MosquittoNotInstalled", "MosquittoBroker", "TlsListener", "find_mosquitto"]

INSTALL_HINT = (
    "mosquitto is not installed (no `mosquitto` on PATH or in /usr/sbin). Install it with "
    "`sudo apt-get install mosquitto` (Debian, Ubuntu), `sudo dnf install mosquitto` (Fedora), "
    "`brew install mosquitto` (macOS), or run `sh scripts/bootstrap test`, which does it where it can."
)


class MosquittoError(RuntimeError):
    pass


class MosquittoNotInstalled(MosquittoError):
    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


def find_mosquitto(name: str = "mosquitto") -> str | None:
    """The path of a mosquitto program; Debian installs the broker in /usr/sbin, not always on PATH."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"])
    return shutil.which(name, path=search)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@attrs.frozen
class TlsListener:
    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


@attrs.define
class MosquittoBroker:
    """A mosquitto process of our own. ``start()`` it, ``stop()`` it; ``restart()`` keeps its ports."""

    workdir: Path
    host: str = "127.0.0.1"
    port: int = 0
    unix_socket: Path | None = None
    tls: TlsListener | None = None
    tls_port: int = 0
    users: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    extra_config: Sequence[str] = ()
    process: subprocess.Popen[bytes] | None = None
    _log_lines: list[str] = attrs.field(factory=list)
    _ready: threading.Event = attrs.field(factory=threading.Event)
    _logged: threading.Condition = attrs.field(factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://localhost:{self.tls_port}"

    @property
    def unix_url(self) -> str:
        assert self.unix_socket is not None
        return f"unix://{self.unix_socket}"

    @property
    def log(self) -> str:
        return "\n".join(self._log_lines)

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port(self.host)
        lines = [
            f"user {getpass.getuser()}",
            "persistence false",
            "log_dest stderr",  # unbuffered: the "running" line arrives when it is written
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "per_listener_settings false",
            f"allow_anonymous {'false' if self.users else 'true'}",
            f"listener {self.port} {self.host}",
        ]
        if self.users:
            password_file = self.workdir / "passwords"
            password_file.write_text("")
            tool = find_mosquitto("mosquitto_passwd")
            if tool is None:
                raise MosquittoError("mosquitto_passwd is missing (it comes with mosquitto)")
            for user, password in self.users.items():
                subprocess.run([tool, "-b", str(password_file), user, password], check=True, capture_output=True)
            password_file.chmod(0o600)
            lines.append(f"password_file {password_file}")
        if self.unix_socket is not None:
            lines.append(f"listener 0 {self.unix_socket}")
        if self.tls is not None:
            if not self.tls_port:
                self.tls_port = free_port(self.host)
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        lines += list(self.extra_config)
        config = self.workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        program = find_mosquitto()
        if program is None:
            raise MosquittoNotInstalled()
        config = self._write_config()
        self._ready.clear()
        self.process = subprocess.Popen(
            [program, "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._pump_log, args=(self.process,), daemon=True).start()
        if not self._ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            raise MosquittoError(f"mosquitto did not start within {timeout:g} s:\n{self.log}")
        return self

    def wait_for_log(self, fragment: str, timeout: float) -> bool:
        """Block until a log line contains ``fragment`` (True), or ``timeout`` passes (False)."""
        with self._logged:
            return self._logged.wait_for(lambda: any(fragment in line for line in self._log_lines), timeout)

    def _pump_log(self, process: subprocess.Popen[bytes]) -> None:
        # Reads until mosquitto exits: the pipe must never fill, or mosquitto would block on it.
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            with self._logged:
                self._log_lines.append(line)
                if len(self._log_lines) > 2000:
                    del self._log_lines[:1000]
                self._logged.notify_all()
            if " running" in line:
                self._ready.set()
        self._ready.set()  # exited: wake start() so it reports the failure at once

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash or power loss would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, timeout: float = 10.0) -> MosquittoBroker:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> MosquittoBroker:
        return self.start() if self.process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
