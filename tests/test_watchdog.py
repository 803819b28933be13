"""EVerest's communication-check watchdog semantics, on an explicit clock. No broker."""

from __future__ import annotations

from evflow.runtime.simulator.watchdog import CheckState, CommunicationCheckWatchdog


def test_initial_error_until_the_first_check_then_timeout_then_recovery() -> None:
    watchdog = CommunicationCheckWatchdog(timeout=5)
    assert watchdog.state is CheckState.INITIAL_ERROR and watchdog.deadline is None
    assert watchdog.check(now=1000) is None  # the initial error stays until a check arrives
    assert watchdog.receive(True, now=10) is CheckState.OK
    assert watchdog.receive(True, now=14) is None  # restarts the timer, no change
    assert watchdog.deadline == 19
    assert watchdog.check(now=18.9) is None
    assert watchdog.check(now=19) is CheckState.FAILED
    assert watchdog.check(now=30) is None  # raised once
    assert watchdog.receive(True, now=31) is CheckState.OK


def test_false_stops_the_check_for_good() -> None:
    watchdog = CommunicationCheckWatchdog(timeout=5)
    watchdog.receive(True, now=0)
    assert watchdog.receive(False, now=1) is CheckState.STOPPED
    assert watchdog.check(now=100) is None
    assert watchdog.receive(True, now=101) is None and watchdog.state is CheckState.STOPPED


def test_false_before_any_check_clears_the_initial_error_and_stops() -> None:
    watchdog = CommunicationCheckWatchdog(timeout=5)
    assert watchdog.receive(False, now=0) is CheckState.STOPPED


def test_timeout_zero_turns_the_watchdog_off() -> None:
    watchdog = CommunicationCheckWatchdog(timeout=0)
    assert watchdog.state is CheckState.OFF
    assert watchdog.receive(True, now=0) is None and watchdog.check(now=100) is None
