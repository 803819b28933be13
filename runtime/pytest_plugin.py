"""pytest fixtures for testing flows (registered through the ``pytest11`` entry point).

``evflow_everest``: a private broker and the EVerest simulator on a fresh PKI, for the test;
``evflow_flow``: ``evflow.runtime.testing.run_flow``, to use as ``async with evflow_flow([...], env=...)``.
Both need pytest-trio (the test functions are trio tests).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
async def evflow_everest(tmp_path: Path) -> AsyncIterator[Any]:
    from .testing import everest_simulator

    async with everest_simulator(tmp_path / "everest") as everest:
        yield everest


@pytest.fixture
def evflow_flow() -> Callable[..., Any]:
    from .testing import run_flow

    return run_flow
