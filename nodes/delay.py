"""``delay``: Node-RED's delay node (89-delay.js): delays each message, or limits the rate of a stream.

Modes (``pauseType``):

* ``delay``: each message by ``timeout`` ``timeoutUnits``; ``delayv``: by ``msg.delay`` milliseconds
  (``timeout`` when it has none, 0 when negative); ``random``: by a time drawn between ``randomFirst``
  and ``randomLast`` ``randomUnits``. ``msg.reset`` drops every message waiting (the reset message
  too); ``msg.flush`` sends the waiting ones now, in arrival order (``msg.flush: n``: the first n). A
  message holding nothing but ``flush`` only flushes, it is not delayed itself.
* ``rate``: at most ``rate`` messages per ``nbRateUnits`` ``rateUnits``. Queueing (``drop`` false): a
  message arriving while the node is idle goes at once, later ones wait in a FIFO and leave one per
  tick (``msg.toFront: true`` jumps the queue); the ticks stop at the first with nothing to send.
  ``msg.flush`` sends queued ones now, ``msg.reset`` empties the queue. Dropping (``drop`` true): a
  message within the interval after the last one sent is dropped, or sent on the second port when
  ``outputs`` is 2 (Node-RED 4's "send intermediate messages on 2nd output").
* ``queue`` and ``timed``: one message kept per ``msg.topic`` (a newer one replaces the older in place;
  the replaced one goes to the second port when ``outputs`` is 2); at each tick ``queue`` sends the
  oldest topic, ``timed`` all of them. A message whose topic is undefined gets ``"_none_"``, as in
  Node-RED (evflow's empty topic stays empty: it is one topic all the same).
* ``allowrate``: ``msg.rate`` (milliseconds between messages) changes the rate until a ``msg.reset``.

Unlike Node-RED's, the node's memory is bounded: it holds at most ``max_held`` messages (an
evflow-only property, default 10,000; Node-RED holds any number unless ``nodeMessageBufferMaxLength``
is set, and then empties its whole queue when full). A message beyond it is dropped (the newest),
counted in ``stats()`` as ``dropped`` and warned about once per burst. Messages still held when the
flow stops are dropped, as Node-RED drops them on close, and counted as ``unsent_at_stop``; messages
dropped by the rate limit (one port) are counted as ``rate_dropped``.

Timers run in the node's one background task (it is a source that also takes input: its ``run``
starts when the flow is ready and stops first on shutdown); a timer late because its receivers hold
it back (backpressure) sends late, and a rate tick missed that way is skipped, not made up for.

Not as in Node-RED, on purpose: ``complete`` nodes see a message when the delay took it, not when it
sent it; the status shows the count at once instead of twice a second at most; ``flush: n`` in
``queue``/``timed`` mode sends at most what is queued (Node-RED fails when n is larger); a
``msg.rate`` in ``queue``/``timed`` mode keeps the mode's own tick (Node-RED switches to the ``rate``
tick, which stops for good once the queue is empty) and a ``msg.reset`` brings the configured rate
back at once; Node.js's limit of 24.8 days on a timer (beyond it, it fires after 1 ms) is not copied.

Helpers here are also used by ``trigger`` and ``rbe``: :class:`Timers` (the deadlines of one node's
background task), :func:`next_tick`, and :func:`js_parse_float` (JavaScript's ``parseFloat``, beside the other
JavaScript value rules in :mod:`evflow.nodes._jsvalues`).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import random
import re
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import attrs
import trio

from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseBool,
    LooseFloat,
    LooseInt,
    Message,
    Node,
    number_range,
    one_of,
)
from evflow.runtime.ratelimit import RateLimitedLog

from ._jsvalues import to_string

__all__ = ["Delay", "DelayConfig", "Timers", "js_parse_float", "next_tick"]

# ---- shared with trigger and rbe ---------------------------------------------------------------

K = TypeVar("K", bound=Hashable)


class Timers(Generic[K]):
    """The deadlines of a node's one background task, by key (a message, a topic, "the tick").

    :meth:`wait` sleeps until the earliest deadline, and wakes early when another task (``receive``)
    sets an earlier one meanwhile; :meth:`pop_due` then hands out the keys that are due, earliest
    first (in the order they were set, on a tie). Setting a key again moves its deadline.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, int] = {}  # key -> the sequence number of its current heap entry
        self._sequence = itertools.count()
        self._sleeping: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: K) -> bool:
        return key in self._live

    def set(self, key: K, deadline: float) -> None:
        sequence = next(self._sequence)
        self._live[key] = sequence
        heapq.heappush(self._heap, (deadline, sequence, key))
        if len(self._heap) > 2 * len(self._live) + 64:  # moved deadlines left stale entries behind
            self._heap = [entry for entry in self._heap if self._live.get(entry[2]) == entry[1]]
            heapq.heapify(self._heap)
        if self._sleeping is not None and deadline < self._sleeping.deadline:
            self._sleeping.deadline = deadline

    def cancel(self, key: K) -> None:
        self._live.pop(key, None)

    def clear(self) -> None:
        self._live.clear()
        self._heap.clear()

    def next_deadline(self) -> float:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
        return heap[0][0] if heap else math.inf

    def pop_due(self, now: float) -> tuple[K, float] | None:
        """The earliest key due by ``now`` and its deadline (no longer set), or None."""
        if self.next_deadline() > now:
            return None
        deadline, _, key = heapq.heappop(self._heap)
        del self._live[key]
        return key, deadline

    async def wait(self) -> None:
        """Until the earliest deadline (or forever, with none), or until an earlier one is set."""
        try:
            with trio.CancelScope(deadline=self.next_deadline()) as self._sleeping:
                await trio.sleep_forever()
        finally:
            self._sleeping = None


def next_tick(last: float, interval: float, now: float) -> float:
    """The tick after ``last`` on its grid of ``interval``, skipping the ticks already missed (by
    backpressure): a late tick is not made up for."""
    missed = max(0, math.floor((now - last) / interval))
    return last + (missed + 1) * interval


_FLOAT_PREFIX = re.compile(r"[+-]?(?:Infinity|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)")


def js_parse_float(value: Any) -> float:
    """JavaScript's ``parseFloat(value)``: the number a value's text starts with (``"12.5 V"`` is
    12.5), NaN when there is none."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _FLOAT_PREFIX.match(to_string(value).lstrip())
    if match is None:
        return math.nan
    return float(match.group().replace("Infinity", "inf"))


# ---- the delay node ----------------------------------------------------------------------------

PAUSE_TYPES = ("delay", "delayv", "random", "rate", "queue", "timed")
TIME_UNITS = {"milliseconds": 0.001, "seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0}
RATE_UNITS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
# Node.js runs a timer of less than a millisecond after one millisecond: a rate tick is never faster.
MIN_INTERVAL = 0.001


@attrs.frozen(kw_only=True)
class DelayConfig:
    # "delay" (fixed), "delayv" (msg.delay ms), "random"; "rate" (all messages), "queue" (one topic per
    # tick), "timed" (all topics each tick)
    pauseType: str = attrs.field(default="delay", validator=one_of(*PAUSE_TYPES))
    # the delay of "delay" (and "delayv" when a message has no msg.delay), in timeoutUnits
    timeout: LooseFloat = attrs.field(default=5.0, validator=number_range(0))
    # milliseconds, seconds, minutes, hours or days
    timeoutUnits: str = attrs.field(default="seconds", validator=one_of(*TIME_UNITS))
    # rate, queue, timed: messages per nbRateUnits rateUnits
    rate: LooseFloat = attrs.field(default=1.0, validator=number_range(0))
    # rate, queue, timed: the rate's time span, in rateUnits (0 is taken as 1)
    nbRateUnits: LooseFloat = attrs.field(default=1.0, validator=number_range(0))
    # second, minute, hour or day
    rateUnits: str = attrs.field(default="second", validator=one_of(*RATE_UNITS))
    # random: the shortest delay, in randomUnits
    randomFirst: LooseFloat = attrs.field(default=1.0, validator=number_range(0))
    # random: the longest delay, in randomUnits
    randomLast: LooseFloat = attrs.field(default=5.0, validator=number_range(0))
    # milliseconds, seconds, minutes, hours or days
    randomUnits: str = attrs.field(default="seconds", validator=one_of(*TIME_UNITS))
    # rate: drop (or send on port 2) the messages over the rate instead of queueing them; queue and
    # timed always replace by topic
    drop: LooseBool = False
    # msg.rate (milliseconds between messages) sets the rate until a msg.reset
    allowrate: LooseBool = False
    # 2: rate with drop sends the messages over the rate, queue and timed the replaced ones, on port 2
    outputs: LooseInt = attrs.field(default=1, validator=one_of(1, 2))
    # evflow: at most this many messages held (waiting or queued); more are dropped, counted, warned
    max_held: int = attrs.field(default=10_000, validator=number_range(1))


class Delay(Node[DelayConfig]):
    """Delays each message, or limits the rate of a stream (see the module docstring)."""

    type = "delay"
    Config = DelayConfig
    # Its timers run in `run`, started once the flow is ready; it takes input as well.
    is_source = True
    inline = True

    @classmethod
    def outputs(cls, config: DelayConfig) -> int:
        return config.outputs

    @classmethod
    def check(cls, config: DelayConfig) -> list[ConfigWarning]:
        if config.pauseType in ("rate", "queue", "timed") and config.rate <= 0:
            raise ValueError(f"{config.pauseType} needs a rate above 0 messages per time unit @ $.rate")
        warnings = []
        if config.outputs == 2 and not (config.pauseType in ("queue", "timed") or config.drop):
            warnings.append(ConfigWarning("$.outputs", f"port 2 is used only by rate with drop, queue and "
                                          f"timed: a {config.pauseType} node sends nothing there"))
        return warnings

    def __init__(self, context: Any, config: DelayConfig) -> None:
        super().__init__(context, config)
        self.timers: Timers[Any] = Timers()
        self.dropped = 0
        self.rate_dropped = 0
        self.unsent_at_stop = 0
        self._overflowing = False
        self._log_drop = RateLimitedLog(context.log, logging.WARNING)
        rate_interval = RATE_UNITS[config.rateUnits] / config.rate if config.rate > 0 else math.inf
        rate_interval *= config.nbRateUnits if config.nbRateUnits > 0 else 1
        self._mode: _Mode
        if config.pauseType in ("delay", "delayv", "random"):
            self._mode = _Delays(self)
        elif config.pauseType == "rate":
            self._mode = _RateDrop(self, rate_interval) if config.drop else _RateQueue(self, rate_interval)
        else:
            self._mode = _TopicQueue(self, rate_interval, send_all=config.pauseType == "timed")

    def stats(self) -> dict[str, int]:
        counters = {"dropped": self.dropped, "rate_dropped": self.rate_dropped, "unsent_at_stop": self.unsent_at_stop}
        return {name: count for name, count in counters.items() if count}

    async def start(self) -> None:
        self._mode.start()

    async def run(self) -> None:
        while True:
            await self.timers.wait()
            while (due := self.timers.pop_due(trio.current_time())) is not None:
                await self._mode.fire(*due)

    async def receive(self, msg: Message) -> None:
        await self._mode.receive(msg)

    async def close(self) -> None:
        unsent = self._mode.drop_all()
        self.timers.clear()
        if unsent:
            self.unsent_at_stop += unsent
            self.context.log.info("the flow stopped: %d held message(s) not sent", unsent)
        self.context.status({})

    # ---- for the modes ---------------------------------------------------------------------------

    def has_room(self, held: int) -> bool:
        """Whether one more message can be held; counts and warns (once per burst) when not."""
        if held < self.config.max_held:
            self._overflowing = False
            return True
        self.dropped += 1
        if not self._overflowing:
            self._overflowing = True
            self._log_drop("holding %d messages (max_held): dropping new ones until there is room, %d so far",
                           held, self.dropped)
        return False

    def show_count(self, count: int, shape: str = "dot") -> None:
        self.context.status({"fill": "blue", "shape": shape, "text": count})


def _has_content(msg: Message, *ignored: str) -> bool:
    """Whether ``msg`` has a property besides ``_msgid`` and the ``ignored`` ones: Node-RED's test
    ``Object.keys(msg).length``. evflow's message always has a topic: ``""`` counts as none."""
    if msg.payload is not UNDEFINED and "payload" not in ignored:
        return True
    if msg.topic is not UNDEFINED and msg.topic != "" and "topic" not in ignored:
        return True
    if msg.error is not None:
        return True
    return any(key not in ignored for key in msg.props)


def _without(msg: Message, *names: str) -> Message:
    if not any(name in msg.props for name in names):
        return msg
    return msg.with_props({key: value for key, value in msg.props.items() if key not in names})


def _flush_count(flush: Any, held: int) -> int:
    """How many held messages ``msg.flush`` sends: all of them, or the number it gives."""
    if isinstance(flush, int | float) and not isinstance(flush, bool):
        if math.isnan(flush):
            return 0
        return held if flush >= held else max(0, math.floor(flush))
    return held


def _rate_from(msg: Message) -> float | None:
    """``msg.rate`` (milliseconds between messages) in seconds, when it is a number."""
    if "rate" not in msg.props:
        return None
    milliseconds = js_parse_float(msg.props["rate"])
    return None if math.isnan(milliseconds) else max(milliseconds / 1000, MIN_INTERVAL)


class _Mode:
    def __init__(self, node: Delay) -> None:
        self.node = node
        self.timers = node.timers

    def start(self) -> None:
        pass

    async def receive(self, msg: Message) -> None:
        raise NotImplementedError

    async def fire(self, key: Any, deadline: float) -> None:
        """One of the mode's timers is due."""

    def drop_all(self) -> int:
        """Forget every held message; how many there were."""
        return 0


class _Delays(_Mode):
    """delay, delayv, random: each message waits for its own deadline."""

    def __init__(self, node: Delay) -> None:
        super().__init__(node)
        config = node.config
        self.pause_type = config.pauseType
        self.timeout = config.timeout * TIME_UNITS[config.timeoutUnits]
        self.random_first = config.randomFirst * TIME_UNITS[config.randomUnits]
        self.random_span = config.randomLast * TIME_UNITS[config.randomUnits] - self.random_first
        # Node-RED shows the count for delays over a second (delay), at least a second (random:
        # it tests the `timeout` there too), or always (delayv).
        self.show = {"delay": self.timeout > 1, "random": self.timeout >= 1, "delayv": True}[self.pause_type]
        self.waiting: dict[int, Message] = {}  # in arrival order
        self.arrivals = itertools.count()

    def _delay_of(self, msg: Message) -> float:
        if self.pause_type == "delay":
            return self.timeout
        if self.pause_type == "random":
            return self.random_first + self.random_span * random.random()
        delay = self.timeout
        if "delay" in msg.props:
            milliseconds = js_parse_float(msg.props["delay"])
            if not math.isnan(milliseconds):
                delay = milliseconds / 1000
        return max(delay, 0.0)

    async def receive(self, msg: Message) -> None:
        props = msg.props
        if "reset" in props:  # it goes too
            self.drop_all()
            self.node.show_count(0, "ring")
            return
        if _has_content(msg, "flush") and self.node.has_room(len(self.waiting)):
            key = next(self.arrivals)
            self.waiting[key] = msg
            self.timers.set(key, trio.current_time() + self._delay_of(msg))
        if "flush" in props:  # the oldest first, this one included
            flushed = []
            for key in list(itertools.islice(self.waiting, _flush_count(props["flush"], len(self.waiting)))):
                flushed.append(self.waiting.pop(key))
                self.timers.cancel(key)
            self.node.show_count(len(self.waiting))
            for each in flushed:
                await self.node.send(each)
        elif self.show:
            self.node.show_count(len(self.waiting))

    async def fire(self, key: int, deadline: float) -> None:
        msg = self.waiting.pop(key, None)
        if msg is None:  # flushed meanwhile
            return
        if self.show:
            self.node.show_count(len(self.waiting))
        await self.node.send(msg)

    def drop_all(self) -> int:
        count = len(self.waiting)
        self.waiting.clear()
        self.timers.clear()
        return count


TICK = "tick"


class _RateQueue(_Mode):
    """rate, queueing: one message per tick; the ticks run while there is something to send."""

    def __init__(self, node: Delay, interval: float) -> None:
        super().__init__(node)
        self.fixed_interval = self.interval = max(interval, MIN_INTERVAL)
        self.queue: collections.deque[Message] = collections.deque()

    def _restart_ticks(self) -> None:
        self.timers.set(TICK, trio.current_time() + self.interval)

    async def receive(self, msg: Message) -> None:
        props = msg.props
        flush, reset = "flush" in props, "reset" in props
        held = _without(msg, "flush")
        if _has_content(held):
            rate = _rate_from(msg) if self.node.config.allowrate else None
            if TICK in self.timers:  # ticking: it waits its turn
                if rate is not None and rate != self.interval:
                    self.interval = rate
                    self._restart_ticks()
                if self.node.has_room(len(self.queue)):
                    if props.get("toFront") is True:
                        self.queue.appendleft(held)
                    else:
                        self.queue.append(held)
                    self.node.show_count(len(self.queue))
            else:  # idle: it goes now, and the next waits a tick
                if rate is not None:
                    self.interval = rate
                self._restart_ticks()
                if not reset:
                    await self.node.send(held)
                elif flush:
                    self.queue.append(held)
        if flush:
            count = _flush_count(props["flush"], len(self.queue))
            flushed = [self.queue.popleft() for _ in range(count)]
            if count == 0:
                self.timers.cancel(TICK)
            else:
                self._restart_ticks()
            self.node.show_count(len(self.queue))
            for each in flushed:
                each = _without(each, "flush", "reset")
                if _has_content(each):
                    await self.node.send(each)
        if reset:
            if not flush:
                self.timers.cancel(TICK)
            self.queue.clear()
            self.interval = self.fixed_interval
            self.node.show_count(0, "ring")

    async def fire(self, key: str, deadline: float) -> None:
        if not self.queue:
            return  # the ticks stop; the next message goes at once
        msg = self.queue.popleft()
        self.timers.set(TICK, next_tick(deadline, self.interval, trio.current_time()))
        self.node.show_count(len(self.queue))
        if _has_content(msg):
            await self.node.send(msg)

    def drop_all(self) -> int:
        count = len(self.queue)
        self.queue.clear()
        return count


class _RateDrop(_Mode):
    """rate, dropping: a message within the interval after the last one sent is not sent (or goes
    to port 2)."""

    def __init__(self, node: Delay, interval: float) -> None:
        super().__init__(node)
        self.fixed_interval = self.interval = interval
        self.last_sent: float | None = None

    async def receive(self, msg: Message) -> None:
        props = msg.props
        if "reset" in props:
            if "flush" not in props:
                self.last_sent = None
            self.interval = self.fixed_interval
            self.node.show_count(0, "ring")
            return
        if self.node.config.allowrate and (rate := _rate_from(msg)) is not None:
            self.interval = rate
        now = trio.current_time()
        if self.last_sent is None or now - self.last_sent > self.interval:
            self.last_sent = now
            await self.node.send(msg)
        elif self.node.config.outputs == 2:
            await self.node.send(msg, 1)
        else:
            self.node.rate_dropped += 1


class _TopicQueue(_Mode):
    """queue and timed: the latest message of each topic, sent at each tick (the oldest topic, or all)."""

    def __init__(self, node: Delay, interval: float, *, send_all: bool) -> None:
        super().__init__(node)
        self.fixed_interval = self.interval = max(interval, MIN_INTERVAL)
        self.send_all = send_all
        self.by_topic: dict[Hashable, Message] = {}  # in the order the topics arrived
        self.unique = itertools.count()

    def start(self) -> None:
        self.timers.set(TICK, trio.current_time() + self.interval)

    def _key(self, topic: Any) -> Hashable:
        """Topics are the same as JavaScript's ``===`` says: an object topic only equals itself."""
        if isinstance(topic, bool):
            return ("bool", topic)
        if isinstance(topic, int | float):
            return ("number", topic)
        if isinstance(topic, str) or topic is None:
            return ("text", topic)
        return ("object", next(self.unique))

    async def receive(self, msg: Message) -> None:
        props = msg.props
        if self.node.config.allowrate and (rate := _rate_from(msg)) is not None and rate != self.interval:
            self.interval = rate
            self.start()
        if msg.topic is UNDEFINED:
            msg = msg.with_payload(msg.payload, "_none_")
        key = self._key(msg.topic)
        replaced = self.by_topic.get(key)
        if replaced is not None or self.node.has_room(len(self.by_topic)):
            self.by_topic[key] = msg
            self.node.show_count(len(self.by_topic))
        if replaced is not None and self.node.config.outputs == 2:
            await self.node.send(replaced, 1)
        if "flush" in props:
            for each in self._take(_flush_count(props["flush"], len(self.by_topic))):
                each = _without(each, "flush", "reset")
                if _has_content(each, "topic"):
                    await self.node.send(each)
            self.node.context.status({})
        if "reset" in props:
            self.by_topic.clear()
            if self.interval != self.fixed_interval:
                self.interval = self.fixed_interval
                self.start()
            self.node.context.status({"text": "reset"})

    def _take(self, count: int) -> list[Message]:
        keys = list(itertools.islice(self.by_topic, count))
        return [self.by_topic.pop(key) for key in keys]

    async def fire(self, key: str, deadline: float) -> None:
        self.timers.set(TICK, next_tick(deadline, self.interval, trio.current_time()))
        if not self.by_topic:
            return
        due = self._take(len(self.by_topic) if self.send_all else 1)
        self.node.show_count(len(self.by_topic))
        for msg in due:
            await self.node.send(msg)

    def drop_all(self) -> int:
        count = len(self.by_topic)
        self.by_topic.clear()
        return count
