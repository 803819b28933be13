"""Heartbeat arithmetic: the sequence of EVerest's u64 counter, and liveness against a clock.

EVerest counts heartbeats from 0 up by one, wrapping to 0 after 2^64-1. The difference of two ids is
taken modulo 2^64, as serial-number arithmetic does (RFC 1982): a step forward of less than 2^63 is a
gap of ``step - 1`` lost beats, anything else is a jump backwards, which means EVerest restarted. So the
wrap from 2^64-1 to 0 is an ordinary next beat.

Time enters only as the ``now`` arguments; the caller owns the clock.
"""

from __future__ import annotations

import enum

import attrs

from ..models.evse_security import U64_MAX

_MODULUS = U64_MAX + 1
_HALF = _MODULUS // 2

__all__ = ["BeatKind", "BeatEvent", "HeartbeatSequence", "Liveness", "LivenessEvent"]


class BeatKind(enum.StrEnum):
    FIRST = "first"  # the first beat seen
    NEXT = "next"  # one after the last (including the wrap to 0)
    GAP = "gap"  # ``missed`` beats were lost in between
    RESTARTED = "restarted"  # the counter went backwards: EVerest restarted
    REPEATED = "repeated"  # the same id again (a redelivery)


@attrs.frozen
class BeatEvent:
    kind: BeatKind
    beat_id: int
    previous: int | None = None
    missed: int = 0


@attrs.define
class HeartbeatSequence:
    """Classifies each heartbeat id against the last one; counts lost beats and restarts."""

    last: int | None = None
    lost: int = 0
    restarts: int = 0

    def observe(self, beat_id: int) -> BeatEvent:
        if not 0 <= beat_id <= U64_MAX:
            raise ValueError(f"heartbeat id out of u64 range: {beat_id}")
        previous = self.last
        if previous is None:
            self.last = beat_id
            return BeatEvent(BeatKind.FIRST, beat_id)
        step = (beat_id - previous) % _MODULUS
        if step == 0:
            return BeatEvent(BeatKind.REPEATED, beat_id, previous)
        self.last = beat_id
        if step == 1:
            return BeatEvent(BeatKind.NEXT, beat_id, previous)
        if step < _HALF:
            self.lost += step - 1
            return BeatEvent(BeatKind.GAP, beat_id, previous, missed=step - 1)
        self.restarts += 1
        return BeatEvent(BeatKind.RESTARTED, beat_id, previous)


class LivenessEvent(enum.StrEnum):
    LOST = "lost"  # no beat within the timeout
    RESTORED = "restored"  # a beat after ``LOST``


@attrs.define
class Liveness:
    """Whether beats keep coming: ``LOST`` once after ``timeout`` without one, ``RESTORED`` on the next.

    ``start(now)`` arms the timer, so silence from the start is noticed too. ``deadline`` tells the
    caller when to call ``check`` next (``None`` while lost: only a beat changes anything then).
    ``now`` is when a beat *arrived*: a beat taken from a backlog after the loss, which arrived no
    later than the last one seen, restores nothing.
    """

    timeout: float = attrs.field()
    last_seen: float | None = None
    lost: bool = False

    @timeout.validator
    def _positive(self, _attribute: object, value: float) -> None:
        if not value > 0:
            raise ValueError(f"heartbeat timeout must be positive, got {value}")

    def start(self, now: float) -> None:
        self.last_seen = now
        self.lost = False

    @property
    def deadline(self) -> float | None:
        if self.lost or self.last_seen is None:
            return None
        return self.last_seen + self.timeout

    def beat(self, now: float) -> LivenessEvent | None:
        if self.last_seen is not None and now <= self.last_seen:
            return None  # no news: a beat that arrived before one seen already
        self.last_seen = now
        if self.lost:
            self.lost = False
            return LivenessEvent.RESTORED
        return None

    def check(self, now: float) -> LivenessEvent | None:
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            self.lost = True
            return LivenessEvent.LOST
        return None
