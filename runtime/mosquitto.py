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
from collections.abc import Mapping, Sequence
from pathlib import Path

import attrs

from .brokerprocess import ManagedProcess, ProcessStartError

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


def find_mosquitto(name: str = "mosquitto", *, sbin: bool = True) -> str | None:
    """The path of a mosquitto program. Debian installs the broker in /usr/sbin, which a user's PATH
    often lacks: with ``sbin`` those folders are searched after PATH."""
    search = os.environ.get("PATH", "")
    if sbin:
        search = os.pathsep.join([search, "/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin"])
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
    # Also look in /usr/sbin and friends when mosquitto is not on PATH.
    search_sbin: bool = True
    _process: ManagedProcess | None = None

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
        program = find_mosquitto(sbin=self.search_sbin)
        if program is None:
            raise MosquittoNotInstalled()
        config = self._write_config()
        # mosquitto says "mosquitto version X running" once every listener is open.
        self._process = ManagedProcess([program, "-c", str(config)], " running", "mosquitto")
        try:
            self._process.start(timeout)
        except ProcessStartError as exc:
            raise MosquittoError(str(exc)) from None
        return self

    @property
    def log(self) -> str:
        return self._process.log if self._process is not None else ""

    def wait_for_log(self, fragment: str, timeout: float) -> bool:
        """Block until a log line contains ``fragment`` (True), or ``timeout`` passes (False)."""
        return self._process is not None and self._process.wait_for_log(fragment, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            self.resume()  # a frozen process would not act on SIGTERM
            self._process.stop(timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash or power loss would."""
        if self._process is not None:
            self._process.kill()

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open and nothing is read or sent, as with a broker
        that hangs or a network that stalls."""
        if self._process is not None and self._process.process is not None:
            self._process.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None and self._process.process is not None:
            self._process.process.send_signal(signal.SIGCONT)

    def restart(self, timeout: float = 10.0) -> MosquittoBroker:
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> MosquittoBroker:
        return self.start() if self._process is None or self._process.process is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
