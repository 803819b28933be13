"""The soak's checks: what the driver counted against evflow's own counters, and the report."""

from __future__ import annotations

import re
import subprocess
import time
from typing import Any

import attrs
from soak_flow import (
    BENCH_DIR,
    MAX_HELD,
    MAX_HELD_BYTES,
    Q0_RATE,
    Q1_RATE,
    REQUEST_RATE,
    RSS_BUDGET_KB,
    STALL_IN_QUEUE,
    STALL_PAYLOAD_BYTES,
    STALL_RATE,
)
from soak_load import LoadDriver


@attrs.define
class Observed:
    """Everything the checks look at."""

    minutes: float
    work_dir: str
    evflow_stderr: str = ""
    import_floor_kb: int = 0
    rss: list[tuple[float, int]] = attrs.field(factory=list)  # (seconds since load start, VmRSS kB)
    rss_at_sigterm_kb: int = 0
    pauses: list[tuple[float, float]] = attrs.field(factory=list)  # (start, end), seconds since load start
    load_seconds: float = 0.0
    evflow_exit: int | None = None
    # evflow's shutdown: seconds from SIGTERM to its exit, and its log lines from then on, each with
    # the seconds since SIGTERM at which it reached us (its log has no timestamps when not a tty)
    stop_seconds: float = 0.0
    stop_log: list[tuple[float, str]] = attrs.field(factory=list)
    error_lines: list[str] = attrs.field(factory=list)
    # mosquitto's log lines about dropping, with the seconds since load start
    mosquitto_drops: list[tuple[float, str]] = attrs.field(factory=list)
    origin_wall: float = 0.0
    clean_disconnect: bool = False
    tracebacks: int = 0
    warnings: int = 0
    errors: int = 0
    stats: dict[str, dict[str, int]] = attrs.field(factory=dict)
    simulator_exit: int | None = None


@attrs.frozen
class Check:
    name: str
    ok: bool
    numbers: str
    details: tuple[str, ...] = ()


def mb(kb: float) -> str:
    return f"{kb / 1024:.1f} MB"


def evaluate(observed: Observed, driver: LoadDriver) -> tuple[list[Check], dict[str, Any]]:
    stats = observed.stats

    def counter(node: str, key: str) -> int:
        return stats.get(node, {}).get(key, 0)

    dropped_values = [value for _, value in driver.sys_dropped]
    # Broker-wide (every client and topic): what mosquitto dropped during the soak.
    mosquitto_dropped = dropped_values[-1] - dropped_values[0] if dropped_values else 0
    mosquitto_said = "; ".join(f"at {t:.0f} s: {text}" for t, text in observed.mosquitto_drops[:5])
    checks: list[Check] = []
    facts: dict[str, Any] = {"mosquitto_dropped_delta": mosquitto_dropped,
                             "mosquitto_drop_log": observed.mosquitto_drops}

    # Memory.
    floor = observed.import_floor_kb
    peak_t, peak = max(observed.rss, key=lambda s: s[1]) if observed.rss else (0.0, 0)
    at_1min = min(observed.rss, key=lambda s: abs(s[0] - 60))[1] if observed.rss else 0
    at_end = observed.rss_at_sigterm_kb
    facts["rss"] = {"import_floor_kb": floor, "peak_kb": peak, "peak_at_s": peak_t, "at_1min_kb": at_1min,
                    "at_end_kb": at_end, "budget_kb": RSS_BUDGET_KB, "samples": observed.rss}
    checks.append(Check(
        "memory", bool(peak and floor) and peak <= floor + RSS_BUDGET_KB,
        f"peak {mb(peak)} (at {peak_t:.0f} s) <= import floor {mb(floor)} + {mb(RSS_BUDGET_KB)}",
        (f"at 1 min {mb(at_1min)}, at the end {mb(at_end)} (end - 1 min: {(at_end - at_1min) / 1024:+.1f} MB)",)))

    def split_loss(sent: int, evflow_in: int, evflow_out: int, missing: int) -> tuple[int, int]:
        """A leg's loss inside evflow (received, not passed on) and outside it (before or after)."""
        inside = max(evflow_in - evflow_out, 0)
        return inside, missing - inside

    # Requests: each answered exactly once; one that never reached evflow (or whose answer never
    # came back) was dropped by the broker, and its counter must say so.
    sent = driver.requests.sent
    ok = sum(1 for outcomes in driver.outcomes.values() if outcomes == ["ok"])
    failed = sum(1 for outcomes in driver.outcomes.values() if outcomes == ["failed"])
    missing = [i for i in range(sent) if i not in driver.outcomes]
    twice = {i: outcomes for i, outcomes in driver.outcomes.items() if len(outcomes) > 1}
    req_received, req_answered = counter("req_in", "received"), counter("done_out", "published")
    req_inside, req_outside = split_loss(sent, req_received, req_answered, len(missing))
    facts["requests"] = {"sent": sent, "ok": ok, "failed": failed, "missing": missing[:100],
                         "missing_ranges": id_ranges(missing), "missing_count": len(missing),
                         "lost_inside_evflow": req_inside, "lost_at_the_broker": req_outside,
                         "answered_more_than_once": len(twice), "stray_topics": driver.stray_outcomes[:100]}
    details = [(f"evflow: req_in received {req_received} (dropped {counter('req_in', 'dropped')}), "
               f"done_out published {req_answered}: every request evflow received "
               f"{'was' if req_answered == req_received else 'was NOT'} answered once")]
    if missing:
        details.append(f"unanswered: {len(missing)}, ids {id_ranges(missing)[:10]}: {req_inside} lost inside "
                       f"evflow, {req_outside} dropped by mosquitto (its counter rose by {mosquitto_dropped})")
    if twice:
        details.append(f"answered more than once (first 10): {dict(list(twice.items())[:10])}")
    if driver.stray_outcomes:
        details.append(f"outcomes naming no request sent: {driver.stray_outcomes[:10]}")
    checks.append(Check(
        "requests",
        sent > 0 and req_inside == 0 and req_outside <= mosquitto_dropped and not twice and not driver.stray_outcomes,
        f"{sent} sent: {ok} ok, {failed} failed, {len(missing)} unanswered (counted by mosquitto), "
        f"{len(twice)} answered twice",
        tuple(details)))

    # QoS 1 forwarding: end to end, or counted: by evflow inside it, by mosquitto outside it.
    q1_sent, q1_back = driver.q1.acked, len(driver.q1_back.unique)
    q1_missing = q1_sent - q1_back
    q1_counted = counter("q1_in", "dropped") + counter("q1_out", "dropped")
    q1_inside, q1_outside = split_loss(q1_sent, counter("q1_in", "received"), counter("q1_out", "published"),
                                       q1_missing)
    facts["q1"] = {"sent_acknowledged": q1_sent, "handed_over": driver.q1.sent, "received_unique": q1_back,
                   "duplicates": driver.q1_back.duplicates, "evflow_leg_drops": q1_counted,
                   "lost_inside_evflow": q1_inside, "lost_at_the_broker": q1_outside,
                   "evflow_connection_drops": counter("b", "dropped"), "schedule_resets": driver.q1.schedule_resets}
    checks.append(Check(
        "QoS 1 leg",
        q1_sent > 0 and q1_inside <= q1_counted and q1_outside <= mosquitto_dropped and not driver.q1_back.unexpected,
        f"{q1_sent} sent, {q1_back} back ({driver.q1_back.duplicates} duplicates): {q1_missing} missing, "
        f"{q1_inside} inside evflow <= {q1_counted} it counted, {q1_outside} at the broker <= {mosquitto_dropped} "
        f"mosquitto counted",
        ((f"evflow: q1_in received {counter('q1_in', 'received')} dropped {counter('q1_in', 'dropped')}, "
         f"q1_out published {counter('q1_out', 'published')} dropped {counter('q1_out', 'dropped')}; "
         f"connection 'dropped' (all its subscriptions) {counter('b', 'dropped')}"),
         (f"mosquitto's log: {mosquitto_said or 'nothing about drops'} (its default max_queued_messages, 1000 per "
          "client, overflows when a frozen broker resumes with a backlog)"))))

    # QoS 0 forwarding: losses within evflow's counted drops plus mosquitto's.
    q0_sent, q0_back = driver.q0.sent, len(driver.q0_back.unique)
    q0_missing = q0_sent - q0_back
    q0_counted = counter("q0_in", "dropped") + counter("q0_out", "dropped")
    facts["q0"] = {"sent": q0_sent, "received_unique": q0_back, "duplicates": driver.q0_back.duplicates,
                   "evflow_leg_drops": q0_counted, "mosquitto_dropped_delta": mosquitto_dropped,
                   "schedule_resets": driver.q0.schedule_resets}
    checks.append(Check(
        "QoS 0 leg", q0_sent > 0 and q0_missing <= q0_counted + mosquitto_dropped and not driver.q0_back.unexpected,
        f"{q0_sent} sent, {q0_back} back: {q0_missing} missing <= {q0_counted} dropped by evflow "
        f"+ {mosquitto_dropped} dropped by mosquitto",
        ((f"evflow: q0_in received {counter('q0_in', 'received')} dropped {counter('q0_in', 'dropped')}, "
         f"q0_out published {counter('q0_out', 'published')} dropped {counter('q0_out', 'dropped')}"),
         "mosquitto's count is broker-wide ($SYS/broker/publish/messages/dropped: every client and topic)")))

    # The hung consumer: every message accounted for, and the backlog bounded.
    stall_sent = driver.stall.sent
    taken, dropped, unprocessed = (counter("stall_in", key) for key in ("received", "dropped", "unprocessed_at_stop"))
    accounted = taken + dropped + unprocessed
    # At most this many fit: the mqtt in's buffer and held backlog, the message it is handing on, the
    # stall node's queue of one and the message it is stuck on.
    capacity = STALL_IN_QUEUE + min(MAX_HELD, MAX_HELD_BYTES // STALL_PAYLOAD_BYTES) + 3
    all_counted = stall_sent - mosquitto_dropped <= accounted <= stall_sent
    if accounted > capacity:
        bounded = dropped > 0 and unprocessed <= STALL_IN_QUEUE + MAX_HELD
        bound_text = (f"backlog at its bound: {unprocessed} unprocessed at stop (buffer {STALL_IN_QUEUE} "
                      f"+ max_held {MAX_HELD}), {dropped} dropped")
    else:
        bounded = dropped == 0
        bound_text = (f"bound NOT REACHED (too short a run): {accounted} arrived and the backlog holds "
                      f"{capacity}, so {dropped} dropped is right; at {STALL_RATE:g}/s a run of about "
                      f"{capacity / STALL_RATE / 60 + 0.5:.1f} min or more reaches it")
    facts["stall"] = {"sent": stall_sent, "received": taken, "dropped": dropped, "unprocessed_at_stop": unprocessed,
                      "accounted": accounted, "capacity": capacity, "bound_reached": accounted > capacity}
    checks.append(Check(
        "hung consumer", stall_sent > 0 and all_counted and bounded,
        f"{stall_sent} sent, {accounted} accounted for: {taken} taken + {dropped} dropped "
        f"+ {unprocessed} unprocessed at stop",
        (bound_text, f"the bound: mqtt-broker max_held {MAX_HELD} messages, max_held_bytes {MAX_HELD_BYTES}")))

    # Heartbeats and liveness.
    kinds = [event.get("event") for _, event in driver.events]
    expected = ["lost", "restored"] * len(observed.pauses)
    # Each pair comes after its outage began ("lost" is published into the frozen broker and so
    # arrives with "restored", after the outage) and before the next one began.
    starts = [start for start, _ in observed.pauses] + [float("inf")]
    in_place = kinds == expected and all(
        starts[i // 2] <= t < starts[i // 2 + 1] for i, (t, _) in enumerate(driver.events))
    facts["heartbeat"] = {"beats_forwarded": driver.beats, "evflow_beats": counter("hb", "beats"),
                          "evflow_dropped": counter("hb", "dropped"), "first_last_id": driver.beat_ids,
                          "events": driver.events, "pauses": observed.pauses}
    seen = ", ".join(f"{event.get('event')} at {t:.0f} s" for t, event in driver.events) or "none"
    checks.append(Check(
        "liveness", in_place,
        f"{driver.beats} beats forwarded; events: {seen}",
        (f"outages {', '.join(f'{a:.0f}-{b:.0f} s' for a, b in observed.pauses)}; expected {expected}",
         (f"evflow: hb beats {counter('hb', 'beats')} dropped {counter('hb', 'dropped')} "
         f"invalid {counter('hb', 'invalid')}; hb_out published {counter('hb_out', 'published')}"))))

    # Shutdown.
    facts["stop"] = {"seconds": observed.stop_seconds, "log": observed.stop_log}
    checks.append(Check(
        "clean stop", observed.evflow_exit == 0 and observed.tracebacks == 0 and observed.errors == 0 and bool(stats),
        f"exit {observed.evflow_exit} {observed.stop_seconds:.1f} s after SIGTERM, {observed.tracebacks} "
        f"tracebacks, counters of {len(stats)} nodes logged",
        ((f"{observed.warnings} WARNING and {observed.errors} ERROR lines in its log; mosquitto "
         f"{'saw its DISCONNECT' if observed.clean_disconnect else 'saw NO DISCONNECT'}"),
         *grouped_errors(observed.error_lines),
         "stop timeline: " + " | ".join(stop_timeline(observed.stop_log)))))
    return checks, facts


def grouped_errors(lines: list[str]) -> list[str]:
    """ERROR lines, the same message of several nodes on one line: "ERROR x3 (a, b, c): message"."""
    groups: dict[str, list[str]] = {}
    for line in lines:
        match = re.search(r"\[([^\]]+)\] (.*)$", line)
        text, node = (match.group(2), match.group(1)) if match else (line, "")
        groups.setdefault(text, []).append(node)
    return [f"ERROR x{len(nodes)} ({', '.join(n for n in nodes if n) or '-'}): {text}" for text, nodes in groups.items()]


def stop_timeline(stop_log: list[tuple[float, str]]) -> list[str]:
    """The phases of evflow's stop as they reached us, e.g. "+2.0 s stopping: draining ..."."""
    steps, closing_errors = [], 0
    for t, line in stop_log:
        text = line.split(": ", 1)[-1]
        if "did not close" in line:
            closing_errors += 1
            if closing_errors == 1:
                steps.append(f"+{t:.1f} s nodes not closed in time")
        elif "stopping" in line or "flow stopped" in line:
            steps.append(f"+{t:.1f} s {text}")
    return steps


def id_ranges(ids: list[int]) -> list[str]:
    """[3, 4, 5, 9] -> ["3-5", "9"]."""
    ranges: list[str] = []
    start = previous = None
    for i in [*ids, None]:
        if start is not None and (i is None or i != previous + 1):
            ranges.append(f"{start}-{previous}" if previous != start else f"{start}")
            start = None
        if start is None:
            start = i
        previous = i
    return ranges


def print_report(observed: Observed, driver: LoadDriver, checks: list[Check]) -> None:
    print(f"evflow soak: {observed.minutes:g} min of load ({observed.load_seconds:.0f} s), broker frozen "
          + ", ".join(f"{b - a:.0f} s at {a:.0f} s" for a, b in observed.pauses))
    print(f"load: {Q0_RATE:g}/s QoS 0, {Q1_RATE:g}/s QoS 1, a request every {1000 / REQUEST_RATE:.0f} ms, "
          f"{STALL_RATE:g}/s x {STALL_PAYLOAD_BYTES} B into a hung consumer (backlog bound: mqtt-broker "
          f"max_held {MAX_HELD}, max_held_bytes {MAX_HELD_BYTES})")
    print("driver: " + ", ".join(
        f"{stream.topic} {stream.sent} sent" for stream in (driver.q0, driver.q1, driver.requests, driver.stall))
        + f"; fell more than 1 s behind its schedule "
        f"{sum(s.schedule_resets for s in (driver.q0, driver.q1, driver.requests, driver.stall))} times")
    print(f"work dir: {observed.work_dir}")
    print(f"evflow stderr: {observed.evflow_stderr}")
    print()
    width = max(len(check.name) for check in checks)
    print(f"{'check':<{width}}  result  numbers")
    print(f"{'-' * width}  ------  {'-' * 60}")
    for check in checks:
        print(f"{check.name:<{width}}  {'PASS' if check.ok else 'FAIL':<6}  {check.numbers}")
        for detail in check.details:
            print(f"{'':<{width}}          {detail}")
    print()
    rss = observed.rss
    if rss:
        step = max(1, len(rss) // 12)
        print("evflow RSS (s: MB): " + "  ".join(f"{t:.0f}: {kb / 1024:.1f}" for t, kb in rss[::step]))
    print("evflow counters: " + "; ".join(
        f"{node} " + " ".join(f"{k}={v}" for k, v in counters.items()) for node, counters in observed.stats.items()))
    failed = [check.name for check in checks if not check.ok]
    print()
    print("RESULT: " + ("PASS" if not failed else "FAIL (" + ", ".join(failed) + ")"))


DOCS_PAGE = BENCH_DIR.parent / "docs" / "benchmarks.md"
SOAK_HEADING = "## Soak test"


def write_docs_section(report: str, minutes: float) -> None:
    """Put the report into docs/benchmarks.md, replacing the section an earlier soak wrote there
    (bench/docs.py keeps the section when it rewrites the page)."""
    commit = subprocess.run(["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    # What could change the result: the code under test and the soak itself (not the docs).
    dirty = subprocess.run(["git", "-C", str(BENCH_DIR.parent), "status", "--porcelain", "--untracked-files=no",
                            "--", "runtime", "nodes", "pyproject.toml", "bench/soak*.py"],
                           capture_output=True, text=True).stdout.strip()
    lines = [line for line in report.splitlines() if not line.startswith(("work dir:", "evflow stderr:"))]
    section = f"""{SOAK_HEADING}

`bench/soak.py` (not part of the test suite): {minutes:g} minutes of mixed load against a private
mosquitto (its defaults) and the EVerest simulator: QoS 0 and QoS 1 forwarding, requests, heartbeats,
a consumer that hangs for good, and the broker frozen (SIGSTOP) twice for 20 s. evflow runs in a
child process, as `evflow run` does; its memory is sampled every second; at the end its own
counters are compared with what the load driver counted. `{BENCH_DIR.name}/soak.py --help` says more.

{time.strftime('%Y-%m-%d')}, evflow from commit {commit}{' with uncommitted changes' if dirty else ''}:

```
{chr(10).join(lines).strip()}
```

How to read it: a loss is counted either by evflow (what it received and did not pass on: its drop
counters, and the hung consumer's bounded backlog) or by mosquitto (what never reached evflow, or
never came back from it: `$SYS/broker/publish/messages/dropped`, broker-wide); the checks say which.
With its defaults mosquitto queues at most 1000 messages per client, so when a frozen broker resumes
with the QoS 1 messages it took meanwhile, that queue overflows and it drops some (a bare paho
subscriber loses them the same way); a broker that must not drop them needs a larger
`max_queued_messages`. A request sent during an outage either failed with its timeout (routed to the
request node's error port, counted) or never reached evflow (counted by mosquitto).
"""
    page = DOCS_PAGE.read_text() if DOCS_PAGE.exists() else "# Benchmarks\n"
    if SOAK_HEADING in page:
        start = page.index(SOAK_HEADING)
        following = page.find("\n## ", start + len(SOAK_HEADING))
        page = page[:start] + section + (page[following + 1:] if following >= 0 else "")
    else:
        page = page.rstrip() + "\n\n" + section
    DOCS_PAGE.write_text(page)
    print(f"wrote the report into {DOCS_PAGE}")
