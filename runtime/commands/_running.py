"""Running a command's trio main: evflow's own errors become one clear line each, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..errors import EvflowError, leaves
from ..output import flush_all
from ..redaction import redact


def run_trio(command: str, main: Callable[..., Awaitable[int]], *args: Any) -> int:
    """``trio.run(main, *args)``; an :class:`EvflowError` (alone or in a nursery's group) exits 1.

    Anything else is a bug and keeps its traceback.
    """
    failures: list[BaseException] = []
    try:
        return trio.run(main, *args)
    except* EvflowError as group:
        failures.extend(leaves(group))
    flush_all()  # log lines the run queued come before the error
    for failure in failures:
        print(redact(f"evflow {command}: error: {failure}"), file=sys.stderr)
    return 1
