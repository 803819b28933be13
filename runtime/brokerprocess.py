"""A broker (or any server) run as a child process, ready when it logs a given line."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Sequence

__all__ = ["ManagedProcess", "ProcessStartError"]


class ProcessStartError(RuntimeError):
    pass


class ManagedProcess:
    """Starts ``argv``, reads its output (so the pipe never fills) and keeps the recent lines;
    ``start`` returns when a line contains ``ready_marker``."""

    def __init__(self, argv: Sequence[str], ready_marker: str, name: str) -> None:
        self.argv = list(argv)
        self.ready_marker = ready_marker
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._logged = threading.Condition()

    @property
    def log(self) -> str:
        with self._logged:
            return "\n".join(self._lines)

    def start(self, timeout: float = 10.0) -> None:
        self._ready.clear()
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        threading.Thread(target=self._pump, args=(self.process,), daemon=True, name=f"{self.name}-log").start()
        if not self._ready.wait(timeout) or self.process.poll() is not None:
            self.stop()
            raise ProcessStartError(f"{self.name} did not start within {timeout:g} s:\n{self.log}")

    def _pump(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            with self._logged:
                self._lines.append(line)
                if len(self._lines) > 2000:
                    del self._lines[:1000]
                self._logged.notify_all()
            if self.ready_marker in line:
                self._ready.set()
        self._ready.set()  # exited: wake start() so it reports the failure at once

    def wait_for_log(self, fragment: str, timeout: float) -> bool:
        """Block until a log line contains ``fragment`` (True), or ``timeout`` passes (False)."""
        with self._logged:
            return self._logged.wait_for(lambda: any(fragment in line for line in self._lines), timeout)

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
