"""Differential test of evflow against Node-RED 4: each case's flow runs in both, on the same inputs,
and what each published on the case's output topics is compared.

    .venv/bin/python bench/nodered_diff/run.py                       # every case in cases/
    .venv/bin/python bench/nodered_diff/run.py --only 'switch-*' json-both-ways
    .venv/bin/python bench/nodered_diff/run.py --record              # refresh expected/ from Node-RED
    .venv/bin/python bench/nodered_diff/run.py --node-red-only       # check the corpus in Node-RED

Node-RED's answer is its recording in expected/ when that was made from the case as it is now, and
otherwise (or with --live) Node-RED run there and then: installed from npm into the bench's cache on
first use, like the bench's. Each run of a case, by either system, gets a fresh private mosquitto.
Exit status 1 when a case fails, or does not run cleanly in Node-RED.
"""

from __future__ import annotations

import argparse
import fnmatch
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # this harness's modules, then the bench's

from common import private_broker  # noqa: E402
from compare import diff  # noqa: E402
from corpus import Case, CaseError, Output, Recording, load_corpus, load_recording, save_recording  # noqa: E402
from session import Session  # noqa: E402
from systems import Running  # noqa: E402
from targets import EvflowTarget, NodeRedTarget  # noqa: E402

# From the last input on, a run that never goes quiet (an endless source without a `count`) ends here.
RUN_DEADLINE = 30.0
LOG_TAIL = 15


@attrs.define
class Observed:
    """One system's run of one case."""

    outputs: list[Output]
    log: str
    seconds: float
    # why the run is not usable (did not start, exited on its way): None when it ran
    failure: str | None = None
    workdir: Path | None = None


def _tail(log: str, lines: int = LOG_TAIL) -> list[str]:
    return log.splitlines()[-lines:]


def _evflow_reasons(log: str) -> list[str]:
    """evflow's validation errors when it refused the flow (its warnings left out), else its log's tail."""
    errors = [line for line in log.splitlines() if ": error: " in line]
    if not errors:
        return _tail(log)
    more = [f"... and {len(errors) - LOG_TAIL} more"] if len(errors) > LOG_TAIL else []
    return errors[:LOG_TAIL] + more


def _drive(case: Case, session: Session, running: Running, ready_timeout: float,
           expected: int | None) -> tuple[list[Output], str | None]:
    """Wait for the started system, publish the inputs, collect until done: (outputs, failure)."""
    failure = session.wait_ready(running.alive, ready_timeout)
    if failure is not None:
        return [], failure
    for message in case.inputs:
        if not message.before_start:
            session.publish(message)
            if message.delay_after_ms:
                time.sleep(message.delay_after_ms / 1000)  # the case's schedule, not a wait for an event
    ended = session.wait_done(case, expected, running.alive, RUN_DEADLINE)
    if ended == "exited":
        failure = f"exited during the run (status {running.process.returncode})"
    return case.counted(session.outputs()), failure


def observe(case: Case, target: NodeRedTarget | EvflowTarget, expected: int | None, keep: bool, *,
            open_session: Callable[[int], Session] | None = None, prefix: str = "nrdiff") -> Observed:
    """Run ``case`` on ``target`` against a private broker of its own and collect what it published;
    ``expected`` is how many messages Node-RED published, when known. ``open_session`` makes the
    harness's client for a broker port (default: one watching the case's outputs)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{case.name.replace(':', '-')}-{target.name}-"))
    open_session = open_session or (lambda port: Session(port, case.outputs))
    began = time.monotonic()
    try:
        with private_broker() as broker, open_session(broker.port) as session:
            for message in case.inputs:
                if message.before_start:
                    session.publish(message)
            running = target.start(case, broker.port, workdir)
            try:
                outputs, failure = _drive(case, session, running, target.ready_timeout, expected)
            finally:
                running.stop()
        # The run's folder is temporary: paths into it are shown relative to it.
        log = running.log_path.read_text(errors="replace").replace(f"{workdir}/", "")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return Observed(outputs=outputs, log=log, seconds=time.monotonic() - began, failure=failure,
                    workdir=workdir if keep else None)


@attrs.define
class Verdict:
    case: Case
    status: str  # PASS, FAIL, INVALID (the case does not run cleanly in Node-RED), OK (Node-RED only)
    lines: list[str] = attrs.field(factory=list)
    node_red_s: float | None = None
    evflow_s: float | None = None


class NodeRedSource:
    """Node-RED's answers: its recording where that is up to date, else (or when asked) a run now,
    Node-RED installed once, lazily."""

    def __init__(self, *, live: bool, record: bool, keep: bool) -> None:
        self.target = NodeRedTarget()
        self.live, self.record, self.keep = live or record, record, keep
        self.unavailable: str | None = None
        self.install_s: float | None = None
        self._installed = False
        # the Node-RED versions of the recordings used
        self.recorded_versions: set[str] = set()

    def _available(self) -> bool:
        if not self._installed and self.unavailable is None:
            already = self.target.system.red_js.exists()
            began = time.monotonic()
            try:
                self.target.install()
            except (RuntimeError, OSError) as exc:
                self.unavailable = str(exc)
                return False
            if not already:
                self.install_s = time.monotonic() - began
            self._installed = True
        return self._installed

    def answer(self, verdict: Verdict) -> list[Output] | None:
        """What Node-RED publishes for the verdict's case; None when there is no usable answer, the
        verdict then says why (INVALID: the case does not run cleanly in Node-RED)."""
        case = verdict.case
        recording = load_recording(case)
        fresh = recording if recording is not None and recording.case_digest == case.digest else None
        if fresh is not None and not self.live:
            self.recorded_versions.add(fresh.node_red)
            return list(fresh.outputs)
        if not self._available():
            if fresh is not None:
                self.recorded_versions.add(fresh.node_red)
                return list(fresh.outputs)
            missing = "no recording" if recording is None else "the recording is older than the case"
            verdict.status = "FAIL"
            verdict.lines.append(f"{missing}, and Node-RED is unavailable: {self.unavailable}")
            return None
        run = observe(case, self.target, None, self.keep)
        verdict.node_red_s = run.seconds
        if run.workdir:
            verdict.lines.append(f"Node-RED's run: {run.workdir}")
        problems = [f"Node-RED {run.failure}", *_tail(run.log)] if run.failure else self.target.problems(case, run.log)
        if problems:
            verdict.status = "INVALID"
            verdict.lines += ["the case does not run cleanly in Node-RED:", *(f"  {p}" for p in problems)]
            return None
        drift = diff(case, list(fresh.outputs), run.outputs, ("recorded", "now")) if fresh is not None else []
        if drift:
            verdict.lines += ["note: Node-RED's answer now differs from its recording (a flaky case?):",
                              *("  " + line for line in drift)]
        if self.record:
            save_recording(case, Recording(case_digest=case.digest, node_red=self.target.version,
                                           outputs=tuple(run.outputs)))
        return run.outputs


def judge(case: Case, node_red: NodeRedSource, evflow: EvflowTarget | None, keep: bool) -> Verdict:
    verdict = Verdict(case, "PASS")
    expected = node_red.answer(verdict)
    if expected is None:
        return verdict
    if evflow is None:
        verdict.status = "OK"
        verdict.lines.insert(0, f"Node-RED published {len(expected)} message(s)")
        return verdict
    got = observe(case, evflow, len(expected), keep)
    verdict.evflow_s = got.seconds
    if got.workdir:
        verdict.lines.append(f"evflow's run: {got.workdir}")
    if got.failure:
        verdict.status = "FAIL"
        verdict.lines += [f"evflow {got.failure}:", *("  " + line for line in _evflow_reasons(got.log))]
        return verdict
    differences = diff(case, expected, got.outputs)
    if differences:
        verdict.status = "FAIL"
        verdict.lines += ["- Node-RED  + evflow", *differences]
    return verdict


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="cases by name (shell patterns allowed)")
    parser.add_argument("--record", action="store_true", help="run Node-RED and write its answers to expected/")
    parser.add_argument("--live", action="store_true", help="run Node-RED even where a recording is up to date")
    parser.add_argument("--node-red-only", action="store_true",
                        help="run only Node-RED: check that every case runs cleanly there (no evflow)")
    parser.add_argument("--keep", action="store_true", help="keep each run's folder (flow, settings, log)")
    return parser.parse_args(argv)


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    if not patterns:
        return cases
    chosen = [case for case in cases if any(fnmatch.fnmatchcase(case.name, p) for p in patterns)]
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(case.name, p) for case in cases)]
    if unmatched:
        raise SystemExit(f"no case matches {', '.join(unmatched)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cases = select(load_corpus(), args.only)
    except CaseError as exc:
        print(f"bad case file: {exc}", file=sys.stderr)
        return 1
    node_red = NodeRedSource(live=args.live or args.node_red_only, record=args.record, keep=args.keep)
    evflow = None if args.node_red_only else EvflowTarget()
    began = time.monotonic()
    verdicts = []
    for case in cases:
        try:
            verdict = judge(case, node_red, evflow, args.keep)
        except Exception as exc:  # the harness's own failure (a broker that did not start): this case only
            verdict = Verdict(case, "FAIL", [f"the harness failed: {type(exc).__name__}: {exc}"])
        verdicts.append(verdict)
        timing = " ".join(f"{name} {seconds:.1f} s" for name, seconds in
                          (("Node-RED", verdict.node_red_s), ("evflow", verdict.evflow_s)) if seconds is not None)
        print(f"{verdict.status:7} {case.name}" + (f"  ({timing})" if timing else ""), flush=True)
        for line in verdict.lines:
            print(f"        {line}", flush=True)
    elapsed = time.monotonic() - began
    counts = {status: sum(1 for v in verdicts if v.status == status) for status in ("PASS", "FAIL", "INVALID", "OK")}
    print()
    if node_red.install_s is not None:
        print(f"Node-RED {node_red.target.version} installed from npm in {node_red.install_s:.1f} s")
    if node_red.unavailable:
        print(f"Node-RED is unavailable: {node_red.unavailable}")
    ran = sum(1 for v in verdicts if v.node_red_s is not None)
    print(f"Node-RED's answers: {ran} from runs now" + (f" (Node-RED {node_red.target.version})" if ran else "")
          + (f", recordings of Node-RED {', '.join(sorted(node_red.recorded_versions))} for the rest"
             if node_red.recorded_versions else ""))
    if evflow is None:
        print(f"{len(cases)} cases in Node-RED: {counts['OK']} ran cleanly, {counts['INVALID']} did not  "
              f"({elapsed:.0f} s)")
    else:
        print(f"{len(cases)} cases: {counts['PASS']} passed, {counts['FAIL']} failed"
              + (f", {counts['INVALID']} invalid in Node-RED" if counts["INVALID"] else "") + f"  ({elapsed:.0f} s)")
    return 1 if counts["FAIL"] or counts["INVALID"] else 0


if __name__ == "__main__":
    sys.exit(main())
