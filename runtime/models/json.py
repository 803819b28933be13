"""Values that a document leaves open: any JSON object, any JSON value."""

from __future__ import annotations

from typing import Any, NewType

__all__ = ["JsonObject", "JsonValue"]

# A JSON object whose keys the document does not describe (`type: object` without properties).
JsonObject = NewType("JsonObject", dict)  # type: ignore[type-arg]
# Any JSON value (a schema without a type, or one evflow does not model: anyOf, oneOf).
JsonValue = NewType("JsonValue", Any)  # type: ignore[valid-newtype]
