"""Log a recurring problem once per burst, with the count of what was not logged."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs the first occurrence, then at most one line per ``interval`` seconds carrying the count.

    Counting is the caller's job (its stats); this only keeps a flood of identical problems from
    flooding the log, without hiding that they happen.
    """

    __slots__ = ("_logger", "_level", "_interval", "_clock", "_next_allowed", "_suppressed")

    def __init__(
        self,
        logger: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
        level: int = logging.WARNING,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._interval = interval
        self._clock = clock
        self._next_allowed = float("-inf")
        self._suppressed = 0

    def __call__(self, message: str, *args: object, extra: dict[str, object] | None = None) -> None:
        now = self._clock()
        if now < self._next_allowed:
            self._suppressed += 1
            return
        self._next_allowed = now + self._interval
        if self._logger.isEnabledFor(self._level):
            if self._suppressed:
                message += " (and %d more like it not logged in the last %.0f s)"
                args = (*args, self._suppressed, self._interval)
            self._logger.log(self._level, message, *args, extra=extra)
        self._suppressed = 0
