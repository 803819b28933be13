"""``heartbeat``: EVerest's heartbeat ids, and what they say about EVerest's liveness."""

from __future__ import annotations

import attrs
import trio

from evflow.runtime.client import ApiClient, HeartbeatSubscription
from evflow.runtime.errors import InvalidPayload
from evflow.runtime.message import new_message
from evflow.runtime.nodeapi import Node, Readiness, number_range, one_of, ref
from evflow.runtime.protocol.heartbeat import BeatKind, HeartbeatSequence, Liveness, LivenessEvent
from evflow.runtime.transport import Overflow


@attrs.frozen(kw_only=True)
class HeartbeatConfig:
    # id of an everest-api node
    api: str = ref("everest-api")
    # seconds without a heartbeat before port 1 reports "lost" (EVerest beats every second by default)
    timeout: float = attrs.field(default=5.0, validator=number_range(above=0))
    # QoS of the heartbeat subscription: 1 when no beat may be lost between the broker and evflow
    qos: int = attrs.field(default=0, validator=one_of(0, 1))


class Heartbeat(Node[HeartbeatConfig]):
    """Port 0: each heartbeat id (an integer) as it arrives. Port 1: liveness events, as
    ``{"event": "lost"}`` when none came within ``timeout`` seconds, ``{"event": "restored"}`` on the
    next one, ``{"event": "gap", "missed": n}`` when ids were skipped and ``{"event": "restarted"}``
    when the counter went back (EVerest restarted). The u64 wrap to 0 is not a gap."""

    type = "heartbeat"
    Config = HeartbeatConfig
    is_source = True
    has_input = False

    @classmethod
    def outputs(cls, config: HeartbeatConfig) -> int:
        return 2

    def stats(self) -> dict[str, int]:
        if not hasattr(self, "beats"):
            return {}
        subscription = self.beats.subscription
        return {"beats": self.received, "invalid": self.beats.invalid, "dropped": subscription.dropped,
                "gaps": self.gaps, "restarts": self.restarts, "lost": self.losses,
                "unprocessed_at_stop": subscription.pending}

    def readiness(self) -> Readiness:
        liveness = self._liveness
        if liveness is None or self.received == 0:
            return Readiness(False, "no heartbeat from EVerest yet", self._since)
        if liveness.lost:
            return Readiness(False, f"no heartbeat from EVerest within {self.config.timeout:g} s", self._since)
        return Readiness(True, since=self._since)

    async def start(self) -> None:
        self.received = self.gaps = self.restarts = self.losses = 0
        self._liveness: Liveness | None = None
        self._since = trio.current_time()  # when readiness last changed
        client: ApiClient = self.context.config_node(self.config.api).client  # type: ignore[attr-defined]
        self.topic = client.topics.e2m("heartbeat")
        # BLOCK: beats a slow flow has not taken yet wait in the subscription's backlog, not dropped.
        self.beats: HeartbeatSubscription = await client.heartbeats(
            qos=self.config.qos, overflow=Overflow.BLOCK, stamp_arrivals=True
        )

    async def run(self) -> None:
        liveness = self._liveness = Liveness(self.config.timeout)
        liveness.start(trio.current_time())
        self._restored = trio.Event()
        # Two tasks, and no timer around a send: a beat on its way to a slow node is never cut short.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, liveness)
            await self._take_beats(liveness)

    async def _take_beats(self, liveness: Liveness) -> None:
        """Each beat in arrival order: liveness restored, gaps and restarts, the beat itself."""
        send = self.context.send
        topic = self.topic
        subscription = self.beats.subscription
        sequence = HeartbeatSequence()
        receive, receive_nowait = self.beats.receive, self.beats.receive_nowait
        taken_in_a_row = 0
        while True:
            if taken_in_a_row >= 64:  # a backlog may hold thousands: let other tasks run now and then
                taken_in_a_row = 0
                await trio.lowlevel.checkpoint()
            try:
                try:
                    beat = receive_nowait()  # a burst goes on without a scheduler round trip each
                    taken_in_a_row += 1
                except trio.WouldBlock:
                    taken_in_a_row = 0
                    beat = await receive()
            except InvalidPayload as exc:
                await self.context.error(exc)
                continue
            self.received += 1
            if self.received == 1:
                self._since = trio.current_time()
            if liveness.beat(subscription.last_arrival or trio.current_time()) is LivenessEvent.RESTORED:
                self._since = trio.current_time()
                self._restored.set()
                self._restored = trio.Event()
                await send(new_message({"event": "restored", "beat": beat}, topic), 1)
            event = sequence.observe(beat)
            if event.kind is BeatKind.GAP:
                self.gaps += 1
                await send(new_message({"event": "gap", "missed": event.missed, "beat": beat,
                                        "previous": event.previous}, topic), 1)
            elif event.kind is BeatKind.RESTARTED:
                self.restarts += 1
                await send(new_message({"event": "restarted", "beat": beat, "previous": event.previous}, topic), 1)
            await send(new_message(beat, topic), 0)

    async def _watch(self, liveness: Liveness) -> None:
        """Report "lost" when no beat *arrived* within the timeout, however far behind the flow is
        in taking them: silence is measured from arrivals, not from the flow's progress."""
        subscription = self.beats.subscription
        while True:
            deadline = liveness.deadline
            if deadline is None:  # lost: only a beat changes anything now
                await self._restored.wait()
                continue
            await trio.sleep_until(deadline)
            arrived = subscription.last_arrival
            if arrived is not None and liveness.last_seen is not None and arrived > liveness.last_seen:
                liveness.last_seen = arrived  # beats came, and wait in the subscription: alive
            if liveness.check(trio.current_time()) is LivenessEvent.LOST:
                self.losses += 1
                self._since = trio.current_time()
                await self.context.send(new_message({"event": "lost", "timeout": self.config.timeout}, self.topic), 1)
