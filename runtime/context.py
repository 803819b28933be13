"""Node-RED's context: values a node keeps between messages, for itself (``context``), for its tab
(``flow``) or for every flow (``global``).

Only Node-RED's default store, ``memory``, exists: values live as long as the process (a reload
starts afresh) and are shared by reference, as Node-RED's memory store shares them. Keys are property
expressions (``counts.total``, ``readings[0]``), read and written as Node-RED does: a missing key or
parent reads as ``undefined``, a set creates what is missing, and setting ``undefined`` deletes.
"""

from __future__ import annotations

from typing import Any

from .properties import UNDEFINED, get_within, parse_property, set_within

__all__ = ["ContextStore", "Contexts"]


class ContextStore:
    """One scope's values."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        """The value at ``key``, or :data:`~evflow.runtime.properties.UNDEFINED`."""
        return get_within(self._data, parse_property(key))

    def set(self, key: str, value: Any) -> None:
        set_within(self._data, parse_property(key), value)

    def keys(self) -> list[str]:
        return list(self._data)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not UNDEFINED


class Contexts:
    """Every context of a running flow: one global store, one per tab, one per node."""

    def __init__(self) -> None:
        self.global_store = ContextStore()
        self._flows: dict[str, ContextStore] = {}
        self._nodes: dict[str, ContextStore] = {}

    def flow(self, tab: str) -> ContextStore:
        store = self._flows.get(tab)
        if store is None:
            store = self._flows[tab] = ContextStore()
        return store

    def node(self, node_id: str) -> ContextStore:
        store = self._nodes.get(node_id)
        if store is None:
            store = self._nodes[node_id] = ContextStore()
        return store
