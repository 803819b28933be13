"""Python types from the JSON schemas of AsyncAPI documents, made at run time.

An object becomes a frozen attrs class (field names are the wire names where Python allows), a string
enum a ``StrEnum``, an array ``tuple[X, ...]``; ``required`` decides which fields have no default;
ranges, lengths and patterns become attrs validators, so that a value that breaks its schema cannot
exist, whether it came from the wire or from a flow. The one converter (``evflow.runtime.codec``)
structures and unstructures them like the hand-written models.

What is modelled: ``$ref`` (within and across files), ``type``, ``properties``, ``required``,
``additionalProperties`` (``false`` refuses unknown keys; otherwise they are ignored), ``enum`` of
strings, ``items``, ``allOf`` of objects, ``oneOf``/``anyOf`` of one schema and ``null`` (optional),
``minimum``/``maximum``, ``minLength``/``maxLength``, ``pattern``, ``minItems``/``maxItems``. Other
``oneOf``/``anyOf`` are taken as any JSON value (nothing refused), and said so in the type's docs.
"""

from __future__ import annotations

import enum
import keyword
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from ..codec import CLOSED
from ..models.json import JsonObject, JsonValue
from ..models.validators import FieldValueError, Validator
from .documents import DocumentError, DocumentSet, Location

__all__ = ["Constraint", "TypeBuilder", "class_name", "constraint_of", "python_name"]

# Keys whose values are secrets wherever they appear (a key's passphrase, a SIM's PIN): kept out of
# reprs, and the request client keeps them out of log lines.
_SECRET_NAMES = re.compile(r"(^|_)(password|passphrase|secret|pin)$", re.IGNORECASE)


Constraint = Callable[[Any], "str | None"]


def python_name(wire_name: str) -> str:
    """A Python identifier for a JSON key: ``from`` → ``from_``, ``max-age`` → ``max_age``."""
    name = re.sub(r"\W", "_", wire_name)
    if not name or name[0].isdigit():
        name = "_" + name
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        name += "_"
    return name


def class_name(hint: str) -> str:
    """A class name from a schema or type name: ``start_transaction`` → ``StartTransaction``."""
    parts = re.split(r"[^A-Za-z0-9]+", hint)
    name = "".join(part[:1].upper() + part[1:] for part in parts if part)
    return name if name and not name[0].isdigit() else f"T{name}"


def constraint_of(schema: Mapping[str, Any], where: Location | None = None) -> Constraint | None:
    """One check for a schema's ranges, lengths, pattern and item counts (None when it has none):
    it returns what is wrong with a value of the right type, or None."""
    checks: list[Constraint] = []
    low, high = schema.get("minimum"), schema.get("maximum")
    if isinstance(low, int | float) and not isinstance(low, bool):
        checks.append(lambda v, low=low: f"must be at least {low}, got {v}" if _is_number(v) and v < low else None)
    if isinstance(high, int | float) and not isinstance(high, bool):
        checks.append(lambda v, high=high: f"must be at most {high}, got {v}" if _is_number(v) and v > high else None)
    shortest, longest = schema.get("minLength"), schema.get("maxLength")
    if isinstance(shortest, int):
        checks.append(lambda v, n=shortest: f"shorter than {n} characters ({len(v)})"
                      if isinstance(v, str) and len(v) < n else None)
    if isinstance(longest, int):
        checks.append(lambda v, n=longest: f"longer than {n} characters ({len(v)})"
                      if isinstance(v, str) and len(v) > n else None)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            place = f"{where.child('pattern')}: " if where is not None else ""
            raise DocumentError(f"{place}not a regular expression ({exc}): {pattern!r}") from None
        checks.append(lambda v, p=compiled: f"does not match the pattern {p.pattern!r}: {v!r}"
                      if isinstance(v, str) and p.search(v) is None else None)
    fewest, most = schema.get("minItems"), schema.get("maxItems")
    if isinstance(fewest, int):
        checks.append(lambda v, n=fewest: f"fewer than {n} items ({len(v)})"
                      if isinstance(v, tuple) and len(v) < n else None)
    if isinstance(most, int):
        checks.append(lambda v, n=most: f"more than {n} items ({len(v)})"
                      if isinstance(v, tuple) and len(v) > n else None)
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def check_all(value: Any) -> str | None:
        for check in checks:
            problem = check(value)
            if problem is not None:
                return problem
        return None

    return check_all


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _field_validator(constraint: Constraint, wire_name: str) -> Validator:
    def validate(_instance: Any, _attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None:
            problem = constraint(value)
            if problem is not None:
                raise FieldValueError(wire_name, problem)

    return validate


class TypeBuilder:
    """Types for the schemas of one set of documents; a named schema (``$ref`` target) is made once,
    however many places refer to it."""

    def __init__(self, documents: DocumentSet, module: str) -> None:
        self.documents = documents
        self.module = module  # the classes' __module__: the codec takes evflow.runtime.models.* as wire values
        self._made: dict[Location, Any] = {}
        self._making: set[Location] = set()
        self.classes = 0

    def type_of(self, schema: Any, where: Location, hint: str) -> Any:
        """The Python type for ``schema`` found at ``where``; ``hint`` names a class made for it."""
        if not isinstance(schema, dict):
            if schema is True or schema == {}:
                return JsonValue
            raise DocumentError(f"{where}: a schema must be a mapping, got {schema!r}")
        if "$ref" in schema:
            return self._referenced(schema["$ref"], where.child("$ref"))
        for combinator in ("oneOf", "anyOf"):
            if combinator in schema:
                return self._alternatives(schema[combinator], where.child(combinator), hint)
        kind = schema.get("type")
        if isinstance(kind, list):
            others = [k for k in kind if k != "null"]
            if len(others) == 1 and len(kind) == 2:
                return self.type_of({**schema, "type": others[0]}, where, hint) | None
            return JsonValue
        if "allOf" in schema:
            properties, required = self._merged(schema, where)
            return self._object(schema, where, hint, properties, required)
        if "enum" in schema:
            return self._enum(schema["enum"], where.child("enum"), hint)
        if kind == "string":
            return str
        if kind == "integer":
            return int
        if kind == "number":
            return float
        if kind == "boolean":
            return bool
        if kind == "null":
            return type(None)
        if kind == "array":
            items = schema.get("items")
            item = JsonValue if items is None else self.type_of(items, where.child("items"), f"{hint}Item")
            return tuple[item, ...]  # type: ignore[valid-type]
        if kind == "object" or "properties" in schema:
            if not schema.get("properties"):
                return JsonObject
            return self._object(schema, where, hint)
        if kind is None:
            return JsonValue
        raise DocumentError(f"{where.child('type')}: unknown type {kind!r}")

    def constraint_for(self, schema: Any, where: Location) -> Constraint | None:
        """The ranges, lengths and patterns a value of ``schema`` must keep that its type does not
        check itself: the schema's own, through ``$ref`` and a nullable ``oneOf``, and each item's of
        an array of scalars (an object checks its own fields)."""
        for _ in range(32):  # a chain of $refs; a loop of them ends here
            if isinstance(schema, dict) and "$ref" in schema:
                schema, where = self.documents.resolve(schema["$ref"], where.child("$ref"))
                continue
            options = schema.get("oneOf", schema.get("anyOf")) if isinstance(schema, dict) else None
            if isinstance(options, list):
                others = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
                if len(others) == 1:
                    schema = others[0]
                    continue
            break
        if not isinstance(schema, dict):
            return None
        own = constraint_of(schema, where)
        items = schema.get("items")
        item_check = self.constraint_for(items, where.child("items")) if schema.get("type") == "array" and isinstance(
            items, dict) else None
        if item_check is None:
            return own

        def check(value: Any) -> str | None:
            problem = own(value) if own is not None else None
            if problem is None and isinstance(value, tuple):
                for index, item in enumerate(value):
                    item_problem = item_check(item) if item is not None else None
                    if item_problem is not None:
                        return f"item {index}: {item_problem}"
            return problem

        return check

    def _referenced(self, ref: Any, where: Location) -> Any:
        schema, target = self.documents.resolve(ref, where)
        made = self._made.get(target)
        if made is not None:
            return made
        if target in self._making:  # a schema that contains itself: not modelled, taken as any JSON
            return JsonValue
        self._making.add(target)
        try:
            name = target.pointer.rsplit("/", 1)[-1] or target.path.stem
            made = self.type_of(schema, target, name)
        finally:
            self._making.discard(target)
        self._made[target] = made
        return made

    def _alternatives(self, options: Any, where: Location, hint: str) -> Any:
        if not isinstance(options, list) or not options:
            raise DocumentError(f"{where}: expected a list of schemas")
        others = [(i, o) for i, o in enumerate(options) if not (isinstance(o, dict) and o.get("type") == "null")]
        if len(others) == 1:
            index, option = others[0]
            made = self.type_of(option, where.child(index), hint)
            return made | None if len(options) == 2 else made
        return JsonValue

    def _merged(self, schema: Mapping[str, Any], where: Location,
                seen: frozenset[Location] = frozenset()) -> tuple[dict[str, tuple[Any, Location]], list[str]]:
        """``allOf`` of object schemas as one object: their properties (each with the place it is
        written, which may be another file) and required keys together."""
        if where in seen:
            raise DocumentError(f"{where}: allOf includes itself")
        seen = seen | {where}
        properties = self._located_properties(schema, where)
        required: list[str] = list(schema.get("required", []))
        parts = schema["allOf"]
        if not isinstance(parts, list):
            raise DocumentError(f"{where.child('allOf')}: expected a list of schemas")
        for index, part in enumerate(parts):
            part_where = where.child("allOf", index)
            while isinstance(part, dict) and "$ref" in part:
                part, part_where = self.documents.resolve(part["$ref"], part_where.child("$ref"))
            if not isinstance(part, dict):
                raise DocumentError(f"{part_where}: expected a schema")
            if "allOf" in part:
                part_properties, part_required = self._merged(part, part_where, seen)
            else:
                part_properties, part_required = self._located_properties(part, part_where), part.get("required", [])
            properties.update(part_properties)
            required += [key for key in part_required if key not in required]
        return properties, required

    @staticmethod
    def _located_properties(schema: Mapping[str, Any], where: Location) -> dict[str, tuple[Any, Location]]:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise DocumentError(f"{where.child('properties')}: expected a mapping")
        for name in properties:
            if not isinstance(name, str):
                raise DocumentError(f"{where.child('properties')}: a property name must be text, got {name!r}")
        return {name: (sub, where.child("properties", name)) for name, sub in properties.items()}

    def _enum(self, values: Any, where: Location, hint: str) -> Any:
        if not isinstance(values, list) or not values:
            raise DocumentError(f"{where}: expected a list of values")
        if not all(type(v) is str for v in values):
            return JsonValue  # a non-string enum: not modelled, nothing refused
        members: dict[str, str] = {}
        for value in values:
            if value in members.values():
                continue
            name = python_name(value)
            # Enum reserves _sunder_ and __dunder__ names and refuses to shadow str's methods (`mro`,
            # `title`): such a value, or two values with one Python name (`a-b`, `a_b`), gets another
            # name. Members are found by value; the names are only for people.
            if name.startswith("_") or hasattr(str, name) or name in ("mro",):
                name = f"v_{name}"
            while name in members:
                name += "_"
            members[name] = value
        made = enum.StrEnum(class_name(hint), list(members.items()), module=self.module)  # type: ignore[misc]
        made.__doc__ = f"One of: {', '.join(values)}."
        return made

    def _object(self, schema: Mapping[str, Any], where: Location, hint: str,
                properties: dict[str, tuple[Any, Location]] | None = None, required: Any = None) -> type:
        if properties is None:
            properties = self._located_properties(schema, where)
            required = schema.get("required") or []
        if not isinstance(required, list):
            raise DocumentError(f"{where.child('required')}: expected a list of property names")
        for key in required:
            if key not in properties:
                raise DocumentError(f"{where.child('required')}: {key!r} is required but not among the properties")
        fields: dict[str, Any] = {}
        taken: set[str] = set()
        for wire_name, (subschema, field_where) in properties.items():
            field_type = self.type_of(subschema, field_where, f"{hint}_{wire_name}")
            name = python_name(wire_name)
            while name in taken:
                name += "_"
            taken.add(name)
            metadata: dict[str, Any] = {}
            if name != wire_name:
                metadata["evflow_key"] = wire_name
            secret = bool(_SECRET_NAMES.search(wire_name))
            if secret:
                metadata["evflow_secret"] = True
            validator = None
            constraint = self.constraint_for(subschema, field_where)
            if constraint is not None:
                validator = _field_validator(constraint, wire_name)
            if wire_name in required:
                fields[name] = attrs.field(type=field_type, validator=validator, metadata=metadata, repr=not secret)
            else:
                fields[name] = attrs.field(type=field_type | None, default=None, validator=validator,
                                           metadata=metadata, repr=not secret)
        # No pickling support and no __match_args__: nothing uses them, and each costs code per class
        # (an API document makes hundreds).
        cls = attrs.make_class(class_name(hint), fields, frozen=True, kw_only=True, slots=True,
                               getstate_setstate=False, match_args=False)
        cls.__module__ = self.module
        description = schema.get("description")
        cls.__doc__ = description.strip() if isinstance(description, str) else None
        if schema.get("additionalProperties") is False:
            setattr(cls, CLOSED, True)  # the codec refuses its unknown keys
        self.classes += 1
        return cls
