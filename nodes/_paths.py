"""Property paths into a message, shared by ``filter``, ``log`` and ``debug``.

A path names a message property and steps into it: ``payload.info.ocsp.0.ocsp_path``. The first name
is one of ``payload``, ``topic``, ``msg_id``, ``meta``, ``error`` (a leading ``msg.`` is allowed and
dropped, as Node-RED users write it; ``msg`` alone is the whole message). Each further step is

* a key of a mapping (plain JSON objects, ``meta``),
* an index of a list or tuple (``ocsp.0``; ``ocsp[0]`` is the same), counted from 0,
* a field of an attrs value (typed payloads such as ``GetCertificateInfoResult``, ``msg.error``):
  only declared fields are reachable, never methods or other attributes.

So one path reads the JSON form of a value and its typed form alike. A step that does not apply (no
such key, index out of range, a step into a string or a number, or into ``null``) gives
:data:`MISSING`. Paths are parsed once, when the node is built; resolving one only walks the steps.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import attrs

from evflow.runtime.codec import FieldValueError
from evflow.runtime.message import Message
from evflow.runtime.nodeapi import UNDEFINED

__all__ = ["MISSING", "ROOTS", "PropertyPath", "check_path", "path_field", "path_validator"]

ROOTS = frozenset({"payload", "topic", "msg_id", "meta", "error"})


# What a path that leads nowhere resolves to (not ``None``: ``null`` is a value): JavaScript's
# ``undefined``, the same value Node-RED's property expressions give.
MISSING: Any = UNDEFINED

# One dotted part: a name (anything but separators and spaces), then any number of "[N]" indexes.
_PART = re.compile(r"([^.\[\]{}\s]+)((?:\[[0-9]+\])*)")
_INDEX = re.compile(r"\[([0-9]+)\]")


@functools.cache
def _attrs_fields(cls: type) -> frozenset[str]:
    return frozenset(field.name for field in attrs.fields(cls))


@attrs.frozen
class PropertyPath:
    """A parsed property path; :meth:`get` resolves it on a message."""

    text: str
    # the message attribute ("" for the whole message)
    root: str
    # each step as (mapping key, list index or None when the step is not a number)
    steps: tuple[tuple[str, int | None], ...]

    @classmethod
    def parse(cls, text: str) -> PropertyPath:
        """The path, or ValueError saying what is wrong with it."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a property path must not be empty (e.g. payload.status)")
        text = text.strip()
        names: list[str] = []
        for part in text.split("."):
            match = _PART.fullmatch(part)
            if match is None:
                raise ValueError(f"invalid property path {text!r}: write dotted names, e.g. payload.info.ocsp.0")
            names.append(match.group(1))
            names.extend(_INDEX.findall(match.group(2)))
        if names[0] == "msg":
            names.pop(0)
            if not names:
                return cls(text, "", ())
        if names[0] not in ROOTS:
            roots = ", ".join(sorted(ROOTS))
            raise ValueError(f"property path {text!r} must start with one of {roots}")
        steps = tuple((name, int(name) if name.isdigit() else None) for name in names[1:])
        return cls(text, names[0], steps)

    def names(self) -> tuple[str, ...]:
        return (self.root, *(key for key, _ in self.steps))

    def get(self, msg: Message) -> Any:
        """The value at this path in ``msg``, or :data:`MISSING`."""
        value: Any = getattr(msg, self.root) if self.root else msg
        for key, index in self.steps:
            kind = type(value)
            if kind is dict or isinstance(value, Mapping):
                value = value.get(key, MISSING)
            elif kind is list or kind is tuple:
                if index is None or index >= len(value):
                    return MISSING
                value = value[index]
            elif attrs.has(kind) and key in _attrs_fields(kind):
                value = getattr(value, key)
            else:
                return MISSING
            if value is MISSING:
                return MISSING
        return value


def check_path(field: str, text: str) -> PropertyPath:
    """Parse ``text``, reporting a problem as a :class:`FieldValueError` of ``field`` (so the codec
    gives the field's own JSON path)."""
    try:
        return PropertyPath.parse(text)
    except ValueError as exc:
        raise FieldValueError(field, str(exc)) from None


def path_validator(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    """attrs validator of a field holding a property path."""
    check_path(attribute.name, value)


def path_field(**field_options: Any) -> Any:
    """An attrs field holding a property path, checked when the config is built."""
    return attrs.field(validator=path_validator, **field_options)
