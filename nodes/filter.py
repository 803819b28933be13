"""``filter``: passes on the messages whose rules hold, drops the others."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any

import attrs

from evflow.runtime.codec import unstructure
from evflow.runtime.nodeapi import ConfigWarning, Message, Node

from ._paths import MISSING, PropertyPath, path_field


class FilterOp(enum.StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    IN = "in"
    REGEX = "regex"
    EXISTS = "exists"
    TRUE = "true"
    FALSE = "false"


class FilterMode(enum.StrEnum):
    ALL = "all"
    ANY = "any"


# Ops that test the property alone: a `value` given with them is a mistake.
_NO_VALUE = frozenset({FilterOp.EXISTS, FilterOp.TRUE, FilterOp.FALSE})
_ORDERING = frozenset({FilterOp.LT, FilterOp.LTE, FilterOp.GT, FilterOp.GTE})


@attrs.frozen(kw_only=True)
class FilterRule:
    # property path of the value to test, e.g. "payload.status", "payload.info.ocsp.0.ocsp_path"
    property: str = path_field()
    # the test: eq ne lt lte gt gte in regex exists true false
    op: FilterOp
    # what to compare with: a list for `in`, a pattern for `regex`, a number or string for lt/lte/gt/gte;
    # not given for exists/true/false
    value: Any = None


@attrs.frozen(kw_only=True)
class FilterConfig:
    # the rules, at least one
    rules: tuple[FilterRule, ...]
    # "all": every rule must hold; "any": one is enough
    mode: FilterMode = FilterMode.ALL


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or kind is float or (isinstance(value, int | float) and not isinstance(value, bool))


def _plain(value: Any) -> Any:
    """Typed containers as their JSON form, so that typed and JSON payloads compare alike."""
    if attrs.has(type(value)) or isinstance(value, tuple):
        return unstructure(value)
    return value


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``; a StrEnum equals its wire string."""
    if isinstance(a, bool) is not isinstance(b, bool):
        return False
    try:
        return bool(a == b)
    except Exception:  # an odd __eq__ in a payload is a mismatch, not a failure
        return False


def _order_test(op: FilterOp, expected: Any) -> Callable[[Any], bool]:
    """lt/lte/gt/gte against a number or a string; other kinds of value do not compare (false)."""
    numeric = _is_number(expected)
    compare = {
        FilterOp.LT: lambda v: v < expected,
        FilterOp.LTE: lambda v: v <= expected,
        FilterOp.GT: lambda v: v > expected,
        FilterOp.GTE: lambda v: v >= expected,
    }[op]
    if numeric:
        return lambda v: _is_number(v) and compare(v)
    return lambda v: isinstance(v, str) and compare(v)


def _test(rule: FilterRule) -> Callable[[Any], bool]:
    """The rule's test of a present (not missing, not null) value."""
    op, expected = rule.op, rule.value
    if op is FilterOp.EQ:
        if isinstance(expected, dict | list):
            return lambda v: _same(_plain(v), expected)
        return lambda v: _same(v, expected)
    if op is FilterOp.NE:
        if isinstance(expected, dict | list):
            return lambda v: not _same(_plain(v), expected)
        return lambda v: not _same(v, expected)
    if op in _ORDERING:
        return _order_test(op, expected)
    if op is FilterOp.IN:
        choices = tuple(expected)
        return lambda v: any(_same(_plain(v), choice) for choice in choices)
    if op is FilterOp.REGEX:
        search = re.compile(expected).search
        return lambda v: isinstance(v, str) and search(v) is not None
    if op is FilterOp.EXISTS:
        return lambda v: True
    if op is FilterOp.TRUE:
        return lambda v: v is True
    return lambda v: v is False  # FilterOp.FALSE


def _compile(rule: FilterRule) -> Callable[[Message], bool]:
    get = PropertyPath.parse(rule.property).get
    test = _test(rule)

    def holds(msg: Message) -> bool:
        value = get(msg)
        if value is MISSING or value is None:
            return False
        try:
            return test(value)
        except Exception:  # e.g. comparing a float with a StrEnum subclass that refuses: not a match
            return False

    return holds


class Filter(Node[FilterConfig]):
    """Passes on the messages whose ``rules`` hold (all of them, or one with ``mode: "any"``).

    Each message whose rules hold — all of them (``mode: "all"``, the default) or at least one
    (``mode: "any"``) — goes on unchanged on port 0; the others are dropped.

    A rule is ``{"property": "payload.status", "op": "eq", "value": "Accepted"}``. ``property`` is a
    path from ``payload``, ``topic``, ``msg_id``, ``meta`` or ``error``, through mapping keys, list
    indexes (``payload.info.ocsp.0``) and the fields of typed payloads alike. Ops:

    * ``eq`` / ``ne``: equal / present and not equal (JSON equality: ``true`` is not ``1``; an enum of
      a typed payload equals its wire string, ``"Accepted"``; a typed value equals its JSON form);
    * ``lt`` ``lte`` ``gt`` ``gte``: against a number (numbers only) or a string (strings only);
      values of another kind do not compare: the rule is false, never an error;
    * ``in``: equal to one of the items of ``value`` (a list);
    * ``regex``: ``value`` is a pattern (Python ``re``) found anywhere in a string value (anchor it
      with ``^…$`` for a whole match); values that are not strings do not match;
    * ``exists``: the property is there and not ``null``;
    * ``true`` / ``false``: the value is the boolean ``true`` / ``false`` (not merely truthy).

    A missing property — no such key, index or field, or ``null`` (a typed payload's unset optional
    field is ``null``) — makes every op false, ``ne`` included (``ne`` means "present and
    different"); test for it with ``exists``.
    """

    type = "filter"
    Config = FilterConfig
    inline = True

    def __init__(self, context: Any, config: FilterConfig) -> None:
        super().__init__(context, config)
        tests = tuple(_compile(rule) for rule in config.rules)
        if config.mode is FilterMode.ALL:
            self._passes: Callable[[Message], bool] = lambda msg: all(t(msg) for t in tests)
        else:
            self._passes = lambda msg: any(t(msg) for t in tests)

    @classmethod
    def check(cls, config: FilterConfig) -> list[ConfigWarning]:
        if not config.rules:
            raise ValueError("a filter needs at least one rule @ $.rules")
        for index, rule in enumerate(config.rules):
            at = f"@ $.rules[{index}].value"
            op, value = rule.op, rule.value
            if op in _NO_VALUE:
                if value is not None:
                    raise ValueError(f"op {op.value!r} takes no value {at}")
            elif value is None:
                raise ValueError(f"op {op.value!r} needs a value (null never matches: use op 'exists') {at}")
            elif op is FilterOp.IN and not isinstance(value, list):
                raise ValueError(f"op 'in' takes a list of values {at}")
            elif op in _ORDERING and not (_is_number(value) or isinstance(value, str)):
                raise ValueError(f"op {op.value!r} compares with a number or a string {at}")
            elif op is FilterOp.REGEX:
                if not isinstance(value, str):
                    raise ValueError(f"op 'regex' takes a pattern (a string) {at}")
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ValueError(f"invalid regular expression {value!r}: {exc} {at}") from None
        return []

    async def receive(self, msg: Message) -> None:
        if self._passes(msg):
            await self.send(msg)
