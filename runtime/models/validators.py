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


def field_check(check: Callable[[Any], Any]) -> Validator:
    """An attrs validator from any function that raises ``ValueError`` for a bad value: the error is
    reported at the field's own JSON path."""

    def validate(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        try:
            check(value)
        except ValueError as exc:
            raise FieldValueError(attribute.name, str(exc)) from None

    return validate


def number_range(low: float | None = None, high: float | None = None, *, above: float | None = None) -> Validator:
    """``low <= value <= high`` (either bound optional), or ``value > above``; ``None`` passes."""

    def validate(_instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is None:
            return
        if above is not None and not value > above:
            raise FieldValueError(attribute.name, f"must be greater than {above:g}, got {value:g}")
        if low is not None and value < low:
            raise FieldValueError(attribute.name, f"must be at least {low:g}, got {value:g}")
        if high is not None and value > high:
            raise FieldValueError(attribute.name, f"must be at most {high:g}, got {value:g}")

    return validate


def one_of(*allowed: Any) -> Validator:
    def validate(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in allowed:
            raise FieldValueError(attribute.name, f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")

    return validate
