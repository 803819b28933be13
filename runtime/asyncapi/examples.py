"""Values that fit a message's schema: the document's own examples where they hold, else made up.

A simulator answers with these, so each one must pass :func:`~.catalogue.check_payload`, the same
check a client applies: EVerest's documents carry a few examples that break their own schemas
(:func:`bad_examples` lists them), and those are skipped, never served. Pure: no I/O but reading the
documents a ``$ref`` names (through the :class:`DocumentSet`, which reads each file once).

What a made-up value honours: ``$ref`` (within and across files), ``const``, ``enum`` (its first
value), ``oneOf``/``anyOf`` (the first option that is not ``null``), ``allOf`` (merged), ``type``
(a list: its first type other than ``null``), ``required`` properties only, ``minLength``/``maxLength``,
``format`` (``date-time`` and a few others), ``pattern`` (when a simple candidate matches),
``minimum``/``maximum`` and their exclusive forms, ``multipleOf``, ``minItems``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..codec import CodecError
from ..errors import EvflowError
from .catalogue import LoadedApi, check_payload
from .documents import DocumentError, DocumentSet, Location
from .model import MessageShape

__all__ = ["ExampleError", "ExampleProblem", "bad_examples", "example_of"]

# Deeper than any of EVerest's schemas; a schema that requires itself would otherwise never end.
_MAX_DEPTH = 64

# A value for each string format EVerest's documents use (and a few common ones), each valid as such.
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "uuid": "00000000-0000-0000-0000-000000000000",
    "email": "user@example.com",
    "uri": "http://example.com",
    "hostname": "localhost",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
}


class ExampleError(EvflowError):
    """No value could be made for a schema; the message names the place in the document."""


@attrs.frozen
class ExampleProblem:
    """One example of a document that breaks its own schema."""

    operation: str
    part: str  # "payload" or "reply"
    index: int  # 0-based, in the document's order
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.operation}: {self.part} example {self.index + 1}: {'; '.join(self.problems)}"


def example_of(shape_or_schema: MessageShape | Any, documents: DocumentSet, where: Location | Path | None = None) -> Any:
    """A plain JSON value that fits: the shape's first example that passes :func:`check_payload`,
    else one made from its schema (and checked the same way).

    ``where`` is the place the schema is written, for its ``$ref``\\ s (a :class:`MessageShape` knows
    its own). Raises :class:`ExampleError` when nothing fits.
    """
    if isinstance(shape_or_schema, MessageShape) and shape_or_schema.location is not None:
        where = shape_or_schema.location
    if where is None:
        raise ValueError("example_of: where the schema is written is needed for a bare schema")
    location = where if isinstance(where, Location) else Location(Path(where).resolve())
    if isinstance(shape_or_schema, MessageShape):
        shape = shape_or_schema
        for example in shape.examples:
            try:
                check_payload(shape, example)
            except CodecError:
                continue
            return example
        value = _Synthesizer(documents).value(shape.schema, location, 0)
        try:
            check_payload(shape, value)
        except CodecError as exc:
            raise ExampleError(f"{location}: the value made from the schema does not fit it "
                               f"({'; '.join(exc.problems)}); give an example or an answer") from None
        return value
    return _Synthesizer(documents).value(shape_or_schema, location, 0)


def bad_examples(api: LoadedApi) -> list[ExampleProblem]:
    """Every example of every operation of ``api`` that fails :func:`check_payload`."""
    found = []
    for operation in api.description.operations.values():
        for part, shape in (("payload", operation.payload), ("reply", operation.reply)):
            if shape is None:
                continue
            for index, example in enumerate(shape.examples):
                try:
                    check_payload(shape, example)
                except CodecError as exc:
                    found.append(ExampleProblem(operation.id, part, index, exc.problems))
    return found


# ---- making a value from a schema ----------------------------------------------------------------


def _is_null_schema(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null" and "$ref" not in schema


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Synthesizer:
    def __init__(self, documents: DocumentSet) -> None:
        self.documents = documents

    def value(self, schema: Any, where: Location, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ExampleError(f"{where}: schemas nested deeper than {_MAX_DEPTH} (a schema that requires itself?)")
        if schema is True:
            return {}
        if not isinstance(schema, dict):
            raise ExampleError(f"{where}: a schema must be a mapping, got {schema!r}")
        if "$ref" in schema:
            target, target_where = self._resolve(schema["$ref"], where.child("$ref"))
            return self.value(target, target_where, depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise ExampleError(f"{where.child('enum')}: expected a list of values")
            return values[0]
        for combinator in ("oneOf", "anyOf"):
            if combinator in schema:
                return self._alternative(schema[combinator], where.child(combinator), depth)
        if "allOf" in schema:
            merged, properties = self._merged(schema, where, depth)
            return self._typed(merged, where, depth, properties)
        return self._typed(schema, where, depth, None)

    def _resolve(self, ref: Any, where: Location) -> tuple[Any, Location]:
        try:
            return self.documents.resolve(ref, where)
        except DocumentError as exc:
            raise ExampleError(str(exc)) from None

    def _alternative(self, options: Any, where: Location, depth: int) -> Any:
        if not isinstance(options, list) or not options:
            raise ExampleError(f"{where}: expected a list of schemas")
        for index, option in enumerate(options):
            option_where = where.child(index)
            resolved = option
            while isinstance(resolved, dict) and "$ref" in resolved:
                resolved, option_where = self._resolve(resolved["$ref"], option_where.child("$ref"))
            if not _is_null_schema(resolved):
                return self.value(resolved, option_where, depth + 1)
        return None  # only null is allowed

    def _merged(self, schema: Mapping[str, Any], where: Location,
                depth: int) -> tuple[dict[str, Any], dict[str, tuple[Any, Location]]]:
        """``allOf`` as one schema: every part's keywords, the strictest of each bound, the union of
        ``required``; each property keeps its own place, so that its ``$ref`` resolves from its file."""
        merged: dict[str, Any] = {key: value for key, value in schema.items() if key != "allOf"}
        properties = {name: (sub, where.child("properties", name)) for name, sub in (schema.get("properties") or {}).items()}
        required = list(schema.get("required") or [])
        parts = schema["allOf"]
        if not isinstance(parts, list):
            raise ExampleError(f"{where.child('allOf')}: expected a list of schemas")
        for index, part in enumerate(parts):
            part_where = where.child("allOf", index)
            while isinstance(part, dict) and "$ref" in part:
                part, part_where = self._resolve(part["$ref"], part_where.child("$ref"))
            if not isinstance(part, dict):
                raise ExampleError(f"{part_where}: expected a schema")
            if "allOf" in part:
                part, part_properties = self._merged(part, part_where, depth + 1)
            else:
                part_properties = {name: (sub, part_where.child("properties", name))
                                   for name, sub in (part.get("properties") or {}).items()}
            properties.update(part_properties)  # a later part wins, as in the loader's merge
            required += [key for key in part.get("required") or [] if key not in required]
            for key, value in part.items():
                if key in ("properties", "required", "allOf"):
                    continue
                if key in ("minimum", "exclusiveMinimum", "minLength", "minItems") and _number(merged.get(key)):
                    merged[key] = max(merged[key], value) if _number(value) else merged[key]
                elif key in ("maximum", "exclusiveMaximum", "maxLength", "maxItems") and _number(merged.get(key)):
                    merged[key] = min(merged[key], value) if _number(value) else merged[key]
                else:
                    merged.setdefault(key, value)
        merged["required"] = required
        if properties:
            merged.setdefault("type", "object")
        return merged, properties

    def _typed(self, schema: Mapping[str, Any], where: Location, depth: int,
               properties: dict[str, tuple[Any, Location]] | None) -> Any:
        kind = schema.get("type")
        if isinstance(kind, list):
            others = [k for k in kind if k != "null"]
            if not others:
                return None
            kind = others[0]
        if kind is None:
            if properties or "properties" in schema or "required" in schema:
                kind = "object"
            elif "items" in schema:
                kind = "array"
            else:
                return {}  # any JSON value is allowed: an empty object reads as "nothing in particular"
        if kind == "object":
            return self._object(schema, where, depth, properties)
        if kind == "array":
            return self._array(schema, where, depth)
        if kind == "string":
            return _string(schema, where)
        if kind == "integer":
            return _integer(schema, where)
        if kind == "number":
            return _float(schema, where)
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        raise ExampleError(f"{where.child('type')}: unknown type {kind!r}")

    def _object(self, schema: Mapping[str, Any], where: Location, depth: int,
                properties: dict[str, tuple[Any, Location]] | None) -> dict[str, Any]:
        if properties is None:
            raw = schema.get("properties") or {}
            if not isinstance(raw, dict):
                raise ExampleError(f"{where.child('properties')}: expected a mapping")
            properties = {name: (sub, where.child("properties", name)) for name, sub in raw.items()}
        required = schema.get("required") or []
        if not isinstance(required, list):
            raise ExampleError(f"{where.child('required')}: expected a list of property names")
        value = {}
        for name in required:
            sub, sub_where = properties.get(name, (True, where.child("required")))
            value[name] = self.value(sub, sub_where, depth + 1)
        return value

    def _array(self, schema: Mapping[str, Any], where: Location, depth: int) -> list[Any]:
        count = schema.get("minItems") or 0
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 4's tuple form: one schema per position
            return [self.value(item, where.child("items", i), depth + 1) for i, item in enumerate(items)]
        if not count:
            return []
        # The same item repeated: `uniqueItems` with minItems > 1 is not honoured (nor checked by the loader).
        item = self.value(items, where.child("items"), depth + 1)
        return [item] * int(count)


def _string(schema: Mapping[str, Any], where: Location) -> str:
    shortest = schema.get("minLength") or 0
    longest = schema.get("maxLength")
    text = _FORMATS.get(schema.get("format"), "")  # type: ignore[arg-type]
    if len(text) < shortest:
        text += "x" * (shortest - len(text))
    if isinstance(longest, int) and len(text) > longest:
        text = text[:longest]
    pattern = schema.get("pattern")
    if not isinstance(pattern, str):
        return text
    compiled = re.compile(pattern)
    size = max(shortest, 1)
    for candidate in (text, "a" * size, "A" * size, "0" * size, "1" * size):
        fits = shortest <= len(candidate) and (not isinstance(longest, int) or len(candidate) <= longest)
        if fits and compiled.search(candidate) is not None:
            return candidate
    raise ExampleError(f"{where}: cannot make up a string matching the pattern {pattern!r}; "
                       "give an example in the document or an answer")


def _bounds(schema: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low is exclusive, high, high is exclusive): draft 6+ numbers or draft 4 booleans."""
    low, high = schema.get("minimum"), schema.get("maximum")
    low = low if _number(low) else None
    high = high if _number(high) else None
    low_open = high_open = False
    exclusive_low, exclusive_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if exclusive_low is True:
        low_open = low is not None
    elif _number(exclusive_low) and (low is None or exclusive_low >= low):
        low, low_open = exclusive_low, True
    if exclusive_high is True:
        high_open = high is not None
    elif _number(exclusive_high) and (high is None or exclusive_high <= high):
        high, high_open = exclusive_high, True
    return low, low_open, high, high_open


def _integer(schema: Mapping[str, Any], where: Location) -> int:
    low, low_open, high, high_open = _bounds(schema)
    first = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
    last = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
    step = schema.get("multipleOf")
    value = 0
    if first is not None and value < first:
        value = first
    if last is not None and value > last:
        value = last
    if isinstance(step, int) and not isinstance(step, bool) and step > 0 and value % step:
        up = (value // step + 1) * step
        value = up if last is None or up <= last else up - step
    if (first is not None and value < first) or (last is not None and value > last):
        raise ExampleError(f"{where}: no integer fits between its minimum and maximum")
    return value


def _float(schema: Mapping[str, Any], where: Location) -> float:
    low, low_open, high, high_open = _bounds(schema)

    def fits(value: float) -> bool:
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        return above and below

    # 0, else the bound nearest to it (as for integers), else a step inside it, else the middle.
    candidates = [0.0]
    if low is not None:
        candidates += [float(low), float(low) + 1]
    if high is not None:
        candidates += [float(high), float(high) - 1]
    if low is not None and high is not None:
        candidates.append((low + high) / 2)
    candidates.sort(key=abs)
    for value in candidates:
        if fits(value):
            return value
    raise ExampleError(f"{where}: no number fits between its minimum and maximum")
