"""A result that arrives once, from a callback, for one waiting task."""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class OneShot(Generic[T]):
    """Set once with a value or an error (later sets are ignored); ``wait`` returns or raises it."""

    __slots__ = ("_event", "_value", "_error")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    async def wait(self) -> T:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]
