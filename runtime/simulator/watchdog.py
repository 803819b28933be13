"""EVerest's communication-check watchdog, as a pure state machine over an explicit clock.

EVerest raises "Initial communication check" until the first check arrives; each check restarts the
timer and clears an error; no check within the timeout raises a communication-check failure; ``false``
clears the error and stops the check for good (until EVerest restarts). A timeout <= 0 turns it off.
"""

from __future__ import annotations

import enum

import attrs


class CheckState(enum.StrEnum):
    INITIAL_ERROR = "initial error"  # no check yet
    OK = "ok"
    FAILED = "failed"  # no check within the timeout
    STOPPED = "stopped"  # `false` received: no checking any more
    OFF = "off"  # configured off


@attrs.define
class CommunicationCheckWatchdog:
    timeout: float
    state: CheckState = CheckState.INITIAL_ERROR
    last_check: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.timeout <= 0:
            self.state = CheckState.OFF

    @property
    def deadline(self) -> float | None:
        """When ``check`` can next change the state; ``None`` if only a message can."""
        if self.state is CheckState.OK and self.last_check is not None:
            return self.last_check + self.timeout
        return None

    def receive(self, value: bool, now: float) -> CheckState | None:
        """A ``communication_check`` message; returns the new state when it changed."""
        if self.state in (CheckState.STOPPED, CheckState.OFF):
            return None
        self.last_check = now
        new = CheckState.OK if value else CheckState.STOPPED
        return self._enter(new)

    def check(self, now: float) -> CheckState | None:
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            return self._enter(CheckState.FAILED)
        return None

    def _enter(self, state: CheckState) -> CheckState | None:
        if state is self.state:
            return None
        self.state = state
        return state
