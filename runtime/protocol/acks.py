"""Acknowledgements of one client connection, both ways: sans-IO.

* :class:`AckLedger`: QoS 1 messages received. evflow acknowledges (PUBACK) a message once every
  subscriber that keeps it back has let it go: a subscriber whose buffer is full holds the message
  unacknowledged, so the broker's window of unacknowledged messages holds the broker back. One
  ledger per connection: a message of an earlier connection is never acknowledged on a later one
  (its packet id may name another message there).
* :class:`PubackTable`: QoS 1 messages sent, by packet id, until the broker's PUBACK.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["AckLedger", "PubackTable"]

W = TypeVar("W")


class AckLedger:
    """Holds on received QoS 1 messages, by packet id.

    For each message: :meth:`received`, then one :meth:`hold` per subscriber that keeps it back,
    then :meth:`routed`, which says whether to acknowledge it now; each hold later ends with
    :meth:`release`, and the last one says to acknowledge it. After :meth:`close` nothing is
    acknowledged any more.
    """

    __slots__ = ("_held", "_routing", "_holds", "closed")

    def __init__(self) -> None:
        self._held: dict[int, int] = {}  # packet id -> holds left
        self._routing: int | None = None
        self._holds = 0
        self.closed = False

    @property
    def held(self) -> int:
        """Messages held unacknowledged."""
        return len(self._held)

    def received(self, mid: int) -> None:
        if self._routing is not None:
            raise RuntimeError(f"message {self._routing} is still being routed")
        if mid in self._held:
            # A broker reuses a packet id only once its message is acknowledged.
            raise ValueError(f"packet id {mid} arrived again while still held")
        self._routing = mid
        self._holds = 0

    def hold(self) -> int:
        """The message being routed is kept back by one more subscriber; returns its packet id."""
        if self._routing is None:
            raise RuntimeError("no message is being routed")
        self._holds += 1
        return self._routing

    def routed(self) -> bool:
        """Routing is over: True when the message is to be acknowledged now."""
        mid, self._routing = self._routing, None
        if mid is None:
            raise RuntimeError("no message is being routed")
        if self._holds == 0:
            return not self.closed
        self._held[mid] = self._holds
        return False

    def release(self, mid: int) -> bool:
        """One hold on ``mid`` ends: True when it was the last (acknowledge it now)."""
        holds = self._held.get(mid)
        if holds is None:
            return False  # not held on this connection (closed, or already released)
        if holds > 1:
            self._held[mid] = holds - 1
            return False
        del self._held[mid]
        return not self.closed

    def close(self) -> None:
        """The connection is gone: nothing more is acknowledged."""
        self.closed = True
        self._held.clear()


class PubackTable(Generic[W]):
    """QoS 1 messages this client published, each with a waiter, until its PUBACK.

    A message keeps its packet id when it is sent again after a reconnect, so its entry stays
    across connections; :meth:`take_all` empties the table when the client closes.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: dict[int, W] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, mid: int, waiter: W) -> None:
        if mid in self._waiting:
            raise ValueError(f"packet id {mid} is already waiting for its PUBACK")
        self._waiting[mid] = waiter

    def acknowledged(self, mid: int) -> W | None:
        """The waiter of ``mid`` (None for a PUBACK nobody waits for: a duplicate, say)."""
        return self._waiting.pop(mid, None)

    def take_all(self) -> list[W]:
        waiting = list(self._waiting.values())
        self._waiting.clear()
        return waiting
