"""Showing values to people (``log``, ``debug``): compact JSON with secrets redacted, always.

Typed values (attrs classes) are turned into their JSON form through the codec first, so a
``GetCertificateInfoResult`` shows as its wire JSON. Then every mapping key named like a secret
(:data:`SECRET_KEYS`, compared case-insensitively), at any depth, has its value replaced by ``"***"``
— whatever the value, ``null`` included, so that not even the presence of a secret shows. A property
path that steps through such a key (``payload.info.password``) shows ``"***"`` too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from evflow.runtime.codec import unstructure

from ._paths import MISSING, PropertyPath

__all__ = ["MISSING_TEXT", "REDACTED", "SECRET_KEYS", "is_secret_path", "redact", "show", "show_text"]

SECRET_KEYS = frozenset({"password", "passphrase", "secret", "token", "key_password"})
REDACTED = "***"
# How a property that is not there shows (not JSON, so it cannot be mistaken for a value).
MISSING_TEXT = "<missing>"


def is_secret_path(path: PropertyPath) -> bool:
    """Whether the path steps through a key named like a secret: its value is never shown."""
    return any(name.lower() in SECRET_KEYS for name in path.names())


def redact(value: Any) -> Any:
    """Plain JSON data for ``value`` (attrs values unstructured), secrets replaced by ``"***"``."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    if attrs.has(kind):
        return redact(unstructure(value))
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and key.lower() in SECRET_KEYS else redact(item)
            for key, item in value.items()
        }
    if kind is list or kind is tuple:
        return [redact(item) for item in value]
    return value  # str and int subclasses (StrEnum, IntEnum) and what json.dumps will refuse


def _unshowable(value: Any) -> str:
    # Never repr() an unknown object: it could carry a secret.
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return f"<{type(value).__name__}>"


def show(value: Any) -> str:
    """Compact JSON of ``value``, redacted; :data:`MISSING_TEXT` for a missing property."""
    if value is MISSING:
        return MISSING_TEXT
    try:
        return json.dumps(redact(value), separators=(",", ":"), ensure_ascii=False, default=_unshowable)
    except (TypeError, ValueError, RecursionError):  # keys JSON cannot have, a cycle
        return f"<unprintable {type(value).__name__}>"


def show_text(value: Any) -> str:
    """Like :func:`show`, but a string shows as itself (no quotes): for text meant to be read."""
    if isinstance(value, str):
        return str(value)  # a StrEnum shows its value, not its member name
    return show(value)
