"""How a message gets into a node: its :class:`Inbox` (a bounded queue with an overflow policy, the
node's workers, an inline run when the node is idle) and the flow's :class:`InFlight` count.

* A sender hands a message on with :meth:`Inbox.put`. With room in the queue it is appended and
  ``put`` returns at once, without a scheduler round trip. A full queue either drops (the newest, or
  the oldest queued; counted, logged once per burst) or makes the sender wait, first come first
  served: a waiting sender's message is moved into the queue by the worker that frees the slot, so
  messages of two senders never overtake each other once they wait.
* A node type declared ``inline`` (its ``receive`` only computes and sends) is run in the sender's
  task when it is idle and nothing waits for it: a chain like mqtt in -> filter -> mqtt out then costs
  no task switch per message, while order, one message at a time and backpressure stay as with the
  queue. It runs under the sender's cancel scopes, so a node must not put a timeout or a cancel
  scope around ``send`` (the engine's own scopes never do: a source is stopped between sends). A
  check of the sender's deadline before each inline run cost 2 µs, half of a whole hop (bench).
* :class:`InFlight` counts messages accepted by some node and not yet handled or dropped: the stop
  drains it to zero, within its deadline.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Awaitable, Callable

import attrs
import trio

from .message import Message

__all__ = ["InFlight", "Inbox", "InboxStats", "Overflow"]


class Overflow(enum.StrEnum):
    """What a full input queue does with one more message."""

    BLOCK = "block"  # the sender waits for room
    DROP_OLDEST = "drop-oldest"
    DROP_NEWEST = "drop-newest"


class InFlight:
    """Messages accepted by some node's input and not yet handled (or dropped)."""

    __slots__ = ("count", "abandoned", "_drained")

    def __init__(self) -> None:
        self.count = 0
        # Messages a sender took and did not hand on (see FlowEngine.abandoned).
        self.abandoned = 0
        self._drained: trio.Event | None = None

    def done(self) -> None:
        self.count -= 1
        if self.count == 0 and self._drained is not None:
            self._drained.set()

    async def wait_drained(self) -> None:
        if self.count == 0:
            await trio.lowlevel.checkpoint()
            return
        self._drained = trio.Event()
        await self._drained.wait()


@attrs.frozen
class InboxStats:
    """A node's input queue, now: messages queued (waiting for a worker), senders waiting for room,
    the queue's size, and messages dropped by its policy so far."""

    queued: int
    waiting_senders: int
    capacity: int
    dropped: int


@attrs.define(eq=False, slots=True)
class _WaitingSender:
    message: Message
    taken: trio.Event = attrs.field(factory=trio.Event)


class Inbox:
    """See the module docstring. ``handle`` runs the node's ``receive`` on one message (routing its
    failure); ``on_drop`` reports a dropped message (the message, and the drop count so far)."""

    __slots__ = (
        "capacity", "overflow", "inline", "dropped", "_handle", "_in_flight", "_on_drop", "_queue",
        "_waiting", "_work", "_busy", "_idle",
    )

    def __init__(
        self,
        *,
        capacity: int,
        overflow: Overflow,
        inline: bool,
        handle: Callable[[Message], Awaitable[None]],
        in_flight: InFlight,
        on_drop: Callable[[int], None],
    ) -> None:
        if capacity < 1:
            raise ValueError(f"an input queue holds at least one message, got {capacity}")
        self.capacity = capacity
        self.overflow = overflow
        self.inline = inline
        self.dropped = 0
        self._handle = handle
        self._in_flight = in_flight
        self._on_drop = on_drop
        self._queue: collections.deque[Message] = collections.deque()
        self._waiting: collections.deque[_WaitingSender] = collections.deque()
        self._work = trio.lowlevel.ParkingLot()  # workers waiting for a message
        # Workers waiting for a message: each takes one more than the queue holds (as a trio
        # channel hands a message straight to a waiting receiver), so a burst into an idle node
        # fills its queue only beyond the messages its workers are about to take.
        self._idle = 0
        self._busy = False  # an inline node is handling a message (inline or in its worker)

    def statistics(self) -> InboxStats:
        return InboxStats(len(self._queue), len(self._waiting), self.capacity, self.dropped)

    # ---- senders ---------------------------------------------------------------------------------

    def has_room(self, count: int = 1) -> bool:
        """Whether :meth:`offer` would take ``count`` messages now (a drop policy always does)."""
        if self.overflow is not Overflow.BLOCK:
            return True
        return not self._waiting and len(self._queue) + count <= self.capacity + self._idle

    def offer(self, msg: Message) -> None:
        """Take ``msg`` without waiting: the caller checked :meth:`has_room` (never runs inline)."""
        self._in_flight.count += 1
        self._enqueue(msg)

    async def put(self, msg: Message) -> bool:
        """Deliver ``msg``: run it here when inline and idle, else queue it (waiting while the queue
        is full, or by the drop policy). True when it surely went through a checkpoint."""
        self._in_flight.count += 1
        if self.inline and not self._busy and not self._queue and not self._waiting:
            await self._run(msg)
            return False  # its receive may not have yielded
        if self.overflow is not Overflow.BLOCK or self.has_room():
            self._enqueue(msg)
            return False
        waiting = _WaitingSender(msg)
        self._waiting.append(waiting)
        try:
            await waiting.taken.wait()
        except BaseException:
            if not waiting.taken.is_set():  # cancelled before a worker took it: not delivered
                self._waiting.remove(waiting)
                self._in_flight.done()
                self._in_flight.abandoned += 1
            raise
        return True

    def _enqueue(self, msg: Message) -> None:
        queue = self._queue
        if len(queue) >= self.capacity + self._idle:
            if self.overflow is Overflow.DROP_NEWEST:
                self._drop()
                return
            # DROP_OLDEST (BLOCK never gets here full): the oldest no idle worker is about to take.
            del queue[self._idle]
            self._drop()
        queue.append(msg)
        if self._work and not self._busy:
            self._work.unpark()

    def _drop(self) -> None:
        self.dropped += 1
        self._in_flight.done()
        self._on_drop(self.dropped)

    # ---- the node's side -------------------------------------------------------------------------

    async def _run(self, msg: Message) -> None:
        self._busy = True
        try:
            await self._handle(msg)
        finally:
            self._busy = False
            self._in_flight.done()
            if self._queue and self._work:  # its worker waited for this run to end
                self._work.unpark()

    async def work(self) -> None:
        """One worker: handle queued messages one after another, for good (cancelled at the end)."""
        queue = self._queue
        waiting = self._waiting
        while True:
            self._idle += 1
            try:
                # Idle again: room for one more, which goes to the sender that waited longest.
                while waiting and len(queue) < self.capacity + self._idle:
                    sender = waiting.popleft()
                    queue.append(sender.message)
                    sender.taken.set()
                while not queue or (self.inline and self._busy):
                    await self._work.park()
            finally:
                self._idle -= 1
            msg = queue.popleft()
            if self.inline:
                await self._run(msg)
            else:
                try:
                    await self._handle(msg)
                finally:
                    self._in_flight.done()

