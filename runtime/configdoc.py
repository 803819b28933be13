"""Documentation of node types, derived from the code itself: the class docstring, and for each
config field the comment written above it (or at the end of its line). Read only by ``evflow nodes``
and schema tools, never when a flow runs."""

from __future__ import annotations

import enum
import inspect
import io
import tokenize
import types
import typing
from typing import Any

import attrs

from .codec import json_key

__all__ = ["describe_field_type", "field_docs", "fields_of"]


def field_docs(cls: type) -> dict[str, str]:
    """``{field name: comment}`` from the class body's source (empty when the source is not available)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    pending: list[str] = []
    last_name: str | None = None
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    line_start = True
    for token in tokens:
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if line_start:
                pending.append(text)
            elif last_name is not None:
                docs.setdefault(last_name, text)
            continue
        if token.type in (tokenize.NL, tokenize.NEWLINE):
            line_start = True
            if token.type == tokenize.NEWLINE:
                last_name = None
            continue
        if token.type in (tokenize.INDENT, tokenize.DEDENT):
            continue
        if line_start and token.type == tokenize.NAME:
            last_name = token.string
            if pending:
                docs[token.string] = " ".join(pending)
        elif line_start:
            last_name = None
        if line_start:
            pending = []
        line_start = False
    return docs



def describe_field_type(tp: Any) -> str:
    """A short, JSON-minded name for a field type (``string``, ``number``, ``"a" | "b"``…)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_field_type(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (tuple, list):
        return f"list of {describe_field_type(args[0]) if args else 'any'}"
    if origin in (dict,):
        return "object"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " | ".join(repr(m.value) for m in tp)
    return {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}.get(
        tp, "any" if tp is Any else getattr(tp, "__name__", str(tp))
    )


def fields_of(config_class: type) -> list[dict[str, Any]]:
    """Name, type, default (or required), secret/reference markers and doc of each config field."""
    docs = field_docs(config_class)
    hints = typing.get_type_hints(config_class)
    described = []
    for field in attrs.fields(config_class):
        entry: dict[str, Any] = {"name": json_key(field), "type": describe_field_type(
            hints.get(field.name, field.type if field.type is not None else Any))}
        if field.default is attrs.NOTHING:
            entry["required"] = True
        elif isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            entry["default"] = field.default.factory()  # type: ignore[union-attr]
        else:
            entry["default"] = field.default.value if isinstance(field.default, enum.Enum) else field.default
        if "evflow_ref" in field.metadata:
            entry["references"] = field.metadata["evflow_ref"]
        if field.metadata.get("evflow_secret"):
            entry["secret"] = True
        doc = docs.get(field.name) or field.metadata.get("evflow_doc")
        if doc:
            entry["doc"] = doc
        described.append(entry)
    return described
