"""A JSON Schema (draft 2020-12) for flow files, derived from the node types' config classes.

Editors that know JSON Schema (VS Code, JetBrains, vim with a language server) then check flow files
as they are typed: node types, property names and types, required properties, enum values, and that
secrets are written as ``${NAME}``. Cross-node rules (wires, references) stay with ``evflow validate``.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

import attrs

from .codec import json_key, refuses_unknown_keys
from .configdoc import field_docs
from .models.loose import LooseBool, LooseFloat, LooseInt, LooseStr
from .nodeapi import ConfigNode
from .registry import Registry
from .validate import OVERFLOW_POLICIES, STRUCTURAL_TYPES

__all__ = ["flow_schema"]

_ENV_REFERENCE = r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$"


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of values the codec structures into ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [type_schema(arg) for arg in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (tuple, list) and args:
        return {"type": "array", "items": type_schema(args[0])}
    if origin is dict or tp is dict:
        return {"type": "object"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"enum": [member.value for member in tp]}
    if attrs.has(tp):
        return object_schema(tp)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp in _LOOSE:
        return _LOOSE[tp]
    supertype = getattr(tp, "__supertype__", None)  # a NewType
    return type_schema(supertype) if supertype is not None else {}


# Values as Node-RED writes them: numbers and booleans also as text.
_LOOSE: dict[Any, dict[str, Any]] = {
    LooseInt: {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^\s*[+-]?[0-9]+\s*$"}]},
    LooseFloat: {"anyOf": [{"type": "number"},
                           {"type": "string", "pattern": r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"}]},
    LooseBool: {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false", ""]}]},
    LooseStr: {"type": ["string", "number", "boolean"]},
}


def object_schema(cls: type, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    properties: dict[str, Any] = dict(extra or {})
    required = []
    for field in attrs.fields(cls):
        schema = type_schema(hints.get(field.name, field.type if field.type is not None else Any))
        if field.metadata.get("evflow_secret"):
            schema = {"type": "string", "pattern": _ENV_REFERENCE,
                      "description": "a secret: only as ${NAME}, from the environment or a credentials file"}
        elif "evflow_ref" in field.metadata:
            schema = {"type": "string", "description": f"id of a {field.metadata['evflow_ref']} node"}
        doc = docs.get(field.name) or field.metadata.get("evflow_doc")
        if doc:
            schema.setdefault("description", doc)
        key = json_key(field)
        if field.default is attrs.NOTHING:
            required.append(key)
        elif not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            default = field.default.value if isinstance(field.default, enum.Enum) else field.default
            if isinstance(default, (str, int, float, bool, type(None))):
                schema["default"] = default
        properties[key] = schema
    # A flow file's node refuses unknown keys; EVerest's values ignore them (unless their document closes them).
    closed = refuses_unknown_keys(cls)
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": not closed}
    if required:
        schema["required"] = required
    return schema


_COMMON = {
    "id": {"type": "string", "minLength": 1},
    "name": {"type": "string"},
    "z": {"type": "string", "description": "the tab this node is on"},
    "d": {"type": "boolean", "description": "disabled"},
    "x": {"type": "number"}, "y": {"type": "number"}, "w": {"type": "number"}, "h": {"type": "number"},
    "g": {"type": "string"}, "l": {"type": "boolean"}, "info": {"type": "string"},
    "outputs": {"type": "integer"}, "inputs": {"type": "integer"},
}
_WIRES = {"type": "array", "items": {"type": "array", "items": {"type": "string"}},
          "description": "one list of target node ids per output port"}
_QUEUE = {
    "queue_size": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "description": "input queue length"},
    "overflow": {"enum": list(OVERFLOW_POLICIES), "description": "what a full input queue does"},
}


def flow_schema(registry: Registry) -> dict[str, Any]:
    classes, _errors = registry.load_all()
    branches = []
    for name, node_class in sorted(classes.items()):
        extra = {**_COMMON, "type": {"const": name}}
        if not issubclass(node_class, ConfigNode):
            extra["wires"] = _WIRES
            if node_class.has_input:
                extra.update(_QUEUE)
        then = object_schema(node_class.Config, extra)
        then["required"] = ["id", "type", *then.get("required", [])]
        doc = (node_class.__doc__ or "").strip().splitlines()
        if doc:
            then["description"] = doc[0]
        branches.append({"if": {"properties": {"type": {"const": name}}, "required": ["type"]}, "then": then})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "evflow flow file",
        "description": "A JSON array of node objects, as Node-RED's flows.json.",
        "type": "array",
        "items": {
            "type": "object",
            "required": ["id", "type"],
            "properties": {"id": {"type": "string", "minLength": 1},
                           "type": {"enum": sorted([*classes, *STRUCTURAL_TYPES])}},
            "allOf": branches,
        },
    }
