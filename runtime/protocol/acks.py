"""Acknowledgements of the QoS 1 messages a client publishes: sans-IO.

paho reports a PUBACK through ``on_publish``, but it calls ``on_publish`` for every QoS 0 message it
writes as well, with that message's packet id, and QoS 0 and QoS 1 messages draw their ids from one
counter that wraps at 65535. So a call is only a *hint*: an entry completes when its own message says
it was acknowledged (paho's ``MQTTMessageInfo.is_published``), checked once paho is done reading.

Received QoS 1 messages need no ledger: evflow acknowledges each as soon as it is routed, that is
once it is in a subscriber's bounded buffer or backlog. Holding acknowledgements back to slow the
broker down would use the broker's window, which is per client: one stalled subscriber would stop
every QoS 1 subscription of the connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["PubackTable"]

W = TypeVar("W")


class PubackTable(Generic[W]):
    """QoS 1 and 2 messages published and not yet acknowledged (PUBACK, PUBCOMP), by packet id, each with an optional
    waiter and a way to ask whether it was acknowledged.

    A message keeps its packet id when it is sent again after a reconnect, so its entry stays
    across connections; :meth:`take_all` empties the table when the client closes.
    """

    __slots__ = ("_waiting", "_hints")

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[W | None, Callable[[], bool]]] = {}
        self._hints: list[int] = []

    def __len__(self) -> int:
        """QoS 1 messages waiting for their PUBACK."""
        return len(self._waiting)

    def expect(self, mid: int, acknowledged: Callable[[], bool], waiter: W | None = None) -> W | None:
        """A new QoS 1 message ``mid``. paho reuses a packet id as soon as its PUBACK is read, which
        may be before :meth:`settle`: the earlier message's waiter is returned then, acknowledged."""
        earlier = self._waiting.get(mid)
        if earlier is not None and not earlier[1]():
            raise ValueError(f"packet id {mid} is already waiting for its PUBACK")
        self._waiting[mid] = (waiter, acknowledged)
        return earlier[0] if earlier is not None else None

    def hint(self, mid: int) -> None:
        """paho called ``on_publish`` with ``mid``: a PUBACK, or a QoS 0 message written."""
        if mid in self._waiting:
            self._hints.append(mid)

    @property
    def hinted(self) -> bool:
        return bool(self._hints)

    def settle(self) -> list[W]:
        """The waiters of hinted entries whose message was acknowledged (those entries leave the
        table); other hints are dropped."""
        done: list[W] = []
        hints, self._hints = self._hints, []
        for mid in hints:
            entry = self._waiting.get(mid)
            if entry is not None and entry[1]():
                del self._waiting[mid]
                if entry[0] is not None:
                    done.append(entry[0])
        return done

    def take_all(self) -> list[W]:
        """Every waiter, the table emptied (the client closes)."""
        waiting = [waiter for waiter, _ in self._waiting.values() if waiter is not None]
        self._waiting.clear()
        self._hints.clear()
        return waiting
