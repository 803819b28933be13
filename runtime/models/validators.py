"""attrs validators whose errors name their field.

cattrs attaches a validator's error to the object, not to the field it checked, so a plain attrs
validator would be reported at ``$.info`` instead of ``$.info.certificate_count``. These raise
:class:`FieldValueError`, which the codec turns into the field's own JSON path.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any

import attrs


class FieldValueError(ValueError):
    """A field's value is out of its range; ``field`` is its (wire) name."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def max_length(limit: int) -> Validator:
    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Sized | None) -> None:
        if value is not None and len(value) > limit:
            raise FieldValueError(attribute.name, f"longer than {limit} characters ({len(value)})")

    return check


def int_range(low: int, high: int) -> Validator:
    def check(_instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
        if not low <= value <= high:
            raise FieldValueError(attribute.name, f"expected an integer in {low}..{high}, got {value}")

    return check
