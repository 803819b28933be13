"""EVerest's side of an API's liveness, for both simulators: the heartbeat it publishes and the
communication-check watchdog it keeps (the state machine is :mod:`.watchdog`)."""

from __future__ import annotations

import logging
import math

import trio

from ..codec import CodecError, dump_json, load_json
from ..errors import MqttError
from ..models.evse_security import U64_MAX
from ..ratelimit import RateLimitedLog
from ..transport import MqttClient
from .watchdog import CheckState, CommunicationCheckWatchdog

__all__ = ["EverestLiveness"]

log = logging.getLogger("evflow.simulator")


class EverestLiveness:
    """The heartbeat on ``heartbeat_topic`` (a u64 that wraps, drift-free, every ``interval_ms``;
    ``<= 0``: none, as in EVerest) and the watchdog of the communication check (``<= 0``: off)."""

    def __init__(
        self, mqtt: MqttClient, heartbeat_topic: str, *, interval_ms: int, start: int = 0,
        comm_check_timeout_s: float, pause_after: int | None = None, pause_s: float = 0.0,
    ) -> None:
        self.mqtt = mqtt
        self.heartbeat_topic = heartbeat_topic
        self.interval_ms = interval_ms
        self.start = start
        # a fault to inject: the beats stop for `pause_s` after `pause_after` of them
        self.pause_after = pause_after
        self.pause_s = pause_s
        self.watchdog = CommunicationCheckWatchdog(comm_check_timeout_s)
        self.heartbeats_lost = 0
        self.invalid_checks = 0
        self._watchdog_changed = trio.Event()
        self._log_invalid = RateLimitedLog(log)

    async def run(self) -> None:
        """The heartbeat and the watchdog, until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.interval_ms > 0:
                nursery.start_soon(self._heartbeat)
            if self.watchdog.state is not CheckState.OFF:
                log.warning("communication check: %s (raised until the first check arrives)", self.watchdog.state)
                nursery.start_soon(self._watch)

    async def _heartbeat(self) -> None:
        interval = self.interval_ms / 1000
        beat = self.start
        next_at = trio.current_time()
        sent = 0
        while True:
            if sent == self.pause_after and self.pause_s > 0:
                log.warning("fault: heartbeat paused for %g s", self.pause_s)
                next_at += self.pause_s
                await trio.sleep_until(next_at)
            sent += 1
            if self.mqtt.connected:
                try:
                    await self.mqtt.publish(self.heartbeat_topic, dump_json(beat))
                except MqttError:
                    self.heartbeats_lost += 1  # lost with the connection, as EVerest's are; the counter goes on
            beat = 0 if beat == U64_MAX else beat + 1
            # Drift-free: the n-th beat is due at start + n * interval, whatever each publish took.
            next_at += interval
            await trio.sleep_until(next_at)

    async def _watch(self) -> None:
        while True:
            deadline = self.watchdog.deadline
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._watchdog_changed.wait()
                self._watchdog_changed = trio.Event()
                continue
            if self.watchdog.check(trio.current_time()) is CheckState.FAILED:
                log.error("communication check: failed (none within %g s)", self.watchdog.timeout)

    def communication_check(self, payload: bytes) -> None:
        """One ``communication_check`` message from the client."""
        try:
            value = load_json(payload)
        except CodecError:
            value = None
        if type(value) is not bool:
            self.invalid_checks += 1
            self._log_invalid("Invalid data: communication_check is not a boolean: %r", payload[:40])
            return
        changed = self.watchdog.receive(value, trio.current_time())
        if changed is not None:
            (log.warning if changed is CheckState.STOPPED else log.info)("communication check: %s", changed)
            self._watchdog_changed.set()
