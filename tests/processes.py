"""`evflow` as a child process in tests: its output collected, waited on with deadlines."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

# Text log lines, as a person reads them on a terminal: these tests look for what such a person looks for.
CLI = [sys.executable, "-m", "evflow.runtime.cli", "--log-format", "text"]


@attrs.define
class Child:
    process: trio.Process
    output: bytearray = attrs.field(factory=bytearray)
    _grew: trio.Event = attrs.field(factory=trio.Event)
    _ended: trio.Event = attrs.field(factory=trio.Event)

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def _append(self, chunk: bytes) -> None:
        self.output.extend(chunk)
        self._grew.set()
        self._grew = trio.Event()

    async def exited(self, timeout: float = 20) -> int:
        """The exit code, once the process ended and all its output is read."""
        with trio.fail_after(timeout):
            code = await self.process.wait()
            await self._ended.wait()
        return code

    async def wait_for(self, fragment: str, count: int = 1, timeout: float = 20) -> None:
        """Until ``fragment`` has appeared ``count`` times in the output (or the process ended)."""
        with trio.fail_after(timeout):
            while self.text.count(fragment) < count:
                if self.process.returncode is not None:
                    raise AssertionError(f"evflow exited ({self.process.returncode}) before {fragment!r}:\n{self.text}")
                await self._grew.wait()


@asynccontextmanager
async def evflow(args: Sequence[str], env: dict[str, str] | None = None) -> AsyncIterator[Child]:
    """Run ``evflow ARGS…``; on leaving, kill it if it still runs."""
    process = await trio.lowlevel.open_process(
        [*CLI, *args], env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    child = Child(process)

    async def collect() -> None:
        assert process.stdout is not None
        async for chunk in process.stdout:
            child._append(chunk)
        child._ended.set()
        child._append(b"")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        try:
            yield child
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()
