"""Soak test of evflow: steady load, two broker outages and a hung consumer, for minutes on end.

    .venv/bin/python bench/soak.py --minutes 10 [--json OUT.json]

Not part of the pytest suite. It prints a report (a small table) and exits 0 when every check holds,
1 otherwise.

What runs:

* a private mosquitto with its defaults (``sys_interval 1`` only, so that its ``$SYS`` counters are
  fresh): its ``$SYS/broker/publish/messages/dropped`` counter tells what mosquitto itself dropped;
* EVerest's side: ``evflow simulate`` on a fresh test PKI, answering ``evse_security_consumer``
  requests and beating every 100 ms;
* evflow under test in a child process (``bench/soak_runner.py``, which runs the flow as
  ``evflow run`` does), so that its memory is its own;
* the load driver, in this process: trio and evflow's own MQTT client. For the whole run it
  publishes a QoS 0 leg (300 msg/s), a QoS 1 leg (100 msg/s), a request every 50 ms (each on a
  topic of its own, ``soak/req/<id>``) and 100 msg/s of 100-byte payloads into a consumer that has
  hung; it counts what comes back.

The flow (one broker connection, one EVerest API client):

    soak/q0/in  --mqtt in q0-->  mqtt out soak/q0/out (q0)
    soak/q1/in  --mqtt in q1-->  mqtt out soak/q1/out (q1)
    soak/req/+  --mqtt in q1-->  is-ca-certificate-installed --0--> soak-tag soak/done/ok     --> mqtt out soak/done/# (q1)
                                                              --1--> soak-tag soak/done/failed --^
    heartbeat  --0-->  mqtt out soak/hb/out (q0);  --1--> mqtt out soak/hb/events (q1)
    keepalive (every second)
    soak/stall  --mqtt in q0, queue 64, block-->  soak-stall (queue 1; never finishes a message)

The broker node's ``max_held`` (20,000) and ``max_held_bytes`` (4 MiB) bound the hung consumer's
backlog: beyond them its messages are dropped, counted.

The broker is frozen (SIGSTOP) twice for 20 s, at 30 % and 65 % of the run. evflow's resident size
is sampled every second. At the end the driver stops, stragglers get 10 s, evflow gets SIGTERM and
logs every node's counters, which the checks compare with what the driver counted:

* memory: the peak stays within 15 MB of the resident size once everything is imported;
* no request left hanging: every request that reached evflow is answered exactly once, on
  ``soak/done/ok/<id>`` or ``soak/done/failed/<id>`` (failures are expected while the broker is
  frozen);
* every loss is counted: what evflow received and did not pass on, by evflow's own drop counters;
  what never reached evflow or never came back from it, by mosquitto's ``$SYS`` dropped counter
  (with its defaults, mosquitto queues at most 1000 messages per client, and a frozen broker that
  resumes with a backlog overflows that queue); the hung consumer's backlog all accounted for, and
  bounded;
* liveness: a "lost" and a "restored" heartbeat event around each outage, nothing else;
* evflow exits 0 on SIGTERM within its stop timeout, with no traceback and no ERROR line (a node
  that could not close in time is one).

Synchronisation is by events with deadlines (a line a process prints, a message that arrives, a
broker log line); sleeps only pace the load and time the outages.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio
from soak_checks import Observed, evaluate, print_report, write_docs_section
from soak_flow import (
    ACK_TIMEOUT,
    BARRIER_TIMEOUT,
    EVFLOW_CLIENT_ID,
    EVFLOW_EXIT_TIMEOUT,
    HEARTBEAT_INTERVAL_MS,
    MODULE_ID,
    PAUSE_AT,
    PAUSE_SECONDS,
    RUNNER,
    START_TIMEOUT,
    STATS_LINE,
    STRAGGLER_SECONDS,
    SoakError,
    build_flow,
)
from soak_load import LoadDriver

from evflow.runtime.mosquitto import MosquittoBroker


class Child:
    """A child process whose stdout and stderr are copied, as they come, to files and to lists of
    lines, so that the soak can wait (with a deadline) for a line it prints."""

    def __init__(self, name: str, argv: list[str], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.paths = {"stdout": log_dir / f"{name}.stdout", "stderr": log_dir / f"{name}.stderr"}
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.arrivals: dict[str, list[float]] = {"stdout": [], "stderr": []}  # trio time each line came
        self.ended = {"stdout": trio.Event(), "stderr": trio.Event()}
        self._changed = trio.Event()
        self.process: trio.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process is not None else None

    async def start(self, nursery: trio.Nursery) -> None:
        self.process = await trio.lowlevel.open_process(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for stream_name in ("stdout", "stderr"):
            nursery.start_soon(self._copy, stream_name, getattr(self.process, stream_name))

    async def _copy(self, stream_name: str, stream: trio.abc.ReceiveStream) -> None:
        lines, arrivals, partial = self.lines[stream_name], self.arrivals[stream_name], b""
        with self.paths[stream_name].open("wb") as file:
            try:
                while chunk := await stream.receive_some(65536):
                    file.write(chunk)
                    file.flush()
                    *complete, partial = (partial + chunk).split(b"\n")
                    lines.extend(line.decode(errors="replace") for line in complete)
                    arrivals.extend([trio.current_time()] * len(complete))
                    self._notify()
            except trio.ClosedResourceError:
                pass
            if partial:
                lines.append(partial.decode(errors="replace"))
                arrivals.append(trio.current_time())
            self.ended[stream_name].set()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_line(self, stream_name: str, fragment: str, timeout: float) -> str:
        """The first line containing ``fragment``; SoakError when the stream ends or ``timeout``
        passes first."""
        seen = 0
        with trio.move_on_after(timeout):
            while True:
                lines = self.lines[stream_name]
                for line in lines[seen:]:
                    if fragment in line:
                        return line
                seen = len(lines)
                if self.ended[stream_name].is_set():
                    raise SoakError(f"{self.name} ended its {stream_name} without a line containing {fragment!r} "
                                    f"(see {self.paths['stderr']})")
                await self._changed.wait()
        raise SoakError(f"{self.name}: no line containing {fragment!r} within {timeout:g} s (see {self.paths['stderr']})")

    async def stop(self, timeout: float) -> int:
        """SIGTERM, then wait up to ``timeout`` s for the exit (then SIGKILL); its output read to the end."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        with trio.move_on_after(5):  # the pipes close with the process
            for ended in self.ended.values():
                await ended.wait()
        return self.process.returncode  # type: ignore[return-value]


def vm_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None  # gone (or a zombie, which has no VmRSS)


def evflow_command() -> list[str]:
    script = Path(sys.executable).parent / "evflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "evflow.runtime.cli"]


# ---- the run -------------------------------------------------------------------------------------------


async def sample_rss(pid: int, origin: float, samples: list[tuple[float, int]]) -> None:
    while (kb := vm_rss_kb(pid)) is not None:
        samples.append((round(trio.current_time() - origin, 1), kb))
        await trio.sleep(1)


async def freeze_broker_twice(broker: MosquittoBroker, origin: float, seconds: float,
                              pauses: list[tuple[float, float]]) -> None:
    for fraction in PAUSE_AT:
        await trio.sleep_until(origin + fraction * seconds)
        start = trio.current_time() - origin
        broker.pause()
        try:
            await trio.sleep(PAUSE_SECONDS)
        finally:
            broker.resume()
            pauses.append((round(start, 1), round(trio.current_time() - origin, 1)))


def parse_stats(lines: list[str]) -> dict[str, dict[str, int]]:
    stats: dict[str, dict[str, int]] = {}
    for line in lines:
        match = STATS_LINE.search(line)
        if match:
            counters = stats.setdefault(match.group(1), {})
            for pair in match.group(2).split():
                key, _, value = pair.partition("=")
                if value.lstrip("-").isdigit():
                    counters[key] = int(value)
    return stats


async def soak(seconds: float, broker: MosquittoBroker, pki_dir: Path, work_dir: Path,
               observed: Observed) -> LoadDriver:
    flow_path = work_dir / "flow.json"
    flow_path.write_text(json.dumps(build_flow(broker.url), indent=1))
    driver = LoadDriver(broker.url)
    simulator = Child("simulator", evflow_command() + [
        "simulate", "--broker", broker.url, "--module-id", MODULE_ID, "--certs", str(pki_dir),
        "--heartbeat-interval-ms", str(HEARTBEAT_INTERVAL_MS)], work_dir)
    evflow = Child("evflow", [sys.executable, str(RUNNER), str(flow_path)], work_dir)
    observed.evflow_stderr = str(evflow.paths["stderr"])
    children = (evflow, simulator)
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(driver.run)
            await simulator.start(nursery)
            await simulator.wait_for_line("stdout", "simulating", START_TIMEOUT)
            await evflow.start(nursery)
            floor = await evflow.wait_for_line("stdout", "IMPORT_FLOOR_RSS_KB", START_TIMEOUT)
            observed.import_floor_kb = int(floor.split()[1])
            await evflow.wait_for_line("stderr", "flow running", START_TIMEOUT)
            await driver.wait_sys_dropped_baseline(START_TIMEOUT)

            origin = driver.origin = trio.current_time()
            observed.origin_wall = time.time()
            stop_at = origin + seconds
            nursery.start_soon(sample_rss, evflow.pid, origin, observed.rss)
            async with trio.open_nursery() as load:
                load.start_soon(freeze_broker_twice, broker, origin, seconds, observed.pauses)
                load.start_soon(driver.drive, stop_at)
            observed.load_seconds = round(trio.current_time() - origin, 1)

            await driver.wait_acknowledged(ACK_TIMEOUT)
            # A fixed grace period for stragglers (a request waiting up to its 2 s timeout, the
            # backlog of the second outage draining): longer than evflow may take to finish any
            # message. What is still missing after it is reported as missing, not waited for.
            await trio.sleep(STRAGGLER_SECONDS)

            observed.rss_at_sigterm_kb = vm_rss_kb(evflow.pid) or 0
            sigterm_at, sigterm_line = trio.current_time(), len(evflow.lines["stderr"])
            observed.evflow_exit = await evflow.stop(EVFLOW_EXIT_TIMEOUT)
            observed.stop_seconds = round(trio.current_time() - sigterm_at, 2)
            observed.stop_log = [(round(at - sigterm_at, 2), line) for at, line in zip(
                evflow.arrivals["stderr"][sigterm_line:], evflow.lines["stderr"][sigterm_line:], strict=True)]
            # evflow has gone; once mosquitto has read its DISCONNECT, it has also read and routed
            # everything evflow published before it, and a marker we send now comes back behind it.
            observed.clean_disconnect = await trio.to_thread.run_sync(
                broker.wait_for_log, f"Client {EVFLOW_CLIENT_ID} disconnected", BARRIER_TIMEOUT)
            await driver.barrier(BARRIER_TIMEOUT)
            # Two $SYS publications after that: the dropped counter we hold is final.
            await driver.wait_sys_updates(2, BARRIER_TIMEOUT)
            observed.simulator_exit = await simulator.stop(10)
        finally:
            # Also on failure or Ctrl-C: no process of ours outlives the soak.
            with trio.CancelScope(shield=True):
                for child in children:
                    if child.process is not None and child.returncode is None:
                        await child.stop(10)
                with trio.move_on_after(5):
                    await driver.mqtt.aclose()
            nursery.cancel_scope.cancel()

    stderr_lines = evflow.lines["stderr"]
    observed.stats = parse_stats(stderr_lines)
    observed.tracebacks = sum("Traceback" in line for line in stderr_lines)
    observed.warnings = sum(line.startswith("WARNING") or " WARNING " in line for line in stderr_lines)
    observed.error_lines = [line for line in stderr_lines if line.startswith(("ERROR", "CRITICAL"))]
    observed.errors = len(observed.error_lines)
    return driver


# ---- main ----------------------------------------------------------------------------------------------


def leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found += leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="minutes of load (at least 1: the two 20 s outages must fit; default 10)")
    parser.add_argument("--json", metavar="OUT.json", help="also write the results here")
    parser.add_argument("--docs", action="store_true",
                        help="write the report into docs/benchmarks.md (its section \"Soak test\")")
    args = parser.parse_args(argv)
    if not args.minutes >= 1:
        parser.error("--minutes must be at least 1")
    seconds = args.minutes * 60

    work_dir = Path(tempfile.mkdtemp(prefix="evflow-soak-"))  # kept: the logs are evidence
    observed = Observed(minutes=args.minutes, work_dir=str(work_dir))
    pki_dir = work_dir / "pki"
    subprocess.run(evflow_command() + ["simulate", "--init-pki", str(pki_dir)], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    broker = MosquittoBroker(work_dir / "mosquitto", extra_config=["sys_interval 1"])
    driver: LoadDriver | None = None
    failures: list[BaseException] = []
    interrupted = False
    try:
        broker.start()
        try:
            driver = trio.run(soak, seconds, broker, pki_dir, work_dir, observed)
        except* SoakError as group:  # raised in a nursery, it comes wrapped in a group
            failures += leaves(group)
        except* KeyboardInterrupt:
            interrupted = True
    finally:
        broker.stop()  # resumes it first, should it be frozen
        (work_dir / "mosquitto.log").write_text(broker.log)
    for line in broker.log.splitlines():
        stamp, _, text = line.partition(": ")
        if "dropped" in text and stamp.isdigit():
            observed.mosquitto_drops.append((round(int(stamp) - observed.origin_wall), text))

    if interrupted:
        print(f"soak: interrupted; processes stopped; work dir: {work_dir}", file=sys.stderr)
        return 130
    if driver is None or failures:
        for failure in failures:
            print(f"soak: error: {failure}", file=sys.stderr)
        print(f"work dir: {work_dir}", file=sys.stderr)
        return 1
    checks, facts = evaluate(observed, driver)
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        print_report(observed, driver, checks)
    print(report.getvalue(), end="")
    if args.docs:
        write_docs_section(report.getvalue(), args.minutes)
    if args.json:
        result = {"passed": all(check.ok for check in checks),
                  "checks": [attrs.asdict(check) for check in checks],
                  "facts": facts, "observed": attrs.asdict(observed)}
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 0 if all(check.ok for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
