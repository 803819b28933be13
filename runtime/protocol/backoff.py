"""Reconnect delays: sans-IO, with the random draw given (tests give a fixed one)."""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

__all__ = ["Backoff"]


@attrs.define
class Backoff:
    """Reconnect delays: doubling from ``low`` up to ``high``, each drawn in [d/2, d] so that many
    gateways behind one broker do not come back in step."""

    low: float
    high: float
    draw: Callable[[], float] = random.random
    _next: float = attrs.field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._next = self.low

    def delay(self) -> float:
        current = self._next
        self._next = min(current * 2, self.high)
        return current * (0.5 + self.draw() / 2)
