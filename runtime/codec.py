"""The one cattrs converter of evflow, and JSON in and out through it.

Wire rules, decided here once for every attrs value that crosses a boundary:

* JSON primitives are taken as they are, never coerced: ``"5"`` is not an int, ``1`` is not a bool.
  (cattrs' defaults call ``int(x)``/``str(x)``, which would turn ``true`` into ``1``.)
* Enums by value, with the allowed values in the error.
* Optional fields are omitted when unset, never sent as ``null``; ``null`` is read as unset.
* Unknown keys are ignored in EVerest's values (every object of its APIs allows additional
  properties) and refused in configuration (a typo in a flow file is reported, not ignored).
* Arrays must be JSON arrays (a string is not a sequence of characters).
* Every problem becomes a :class:`CodecError` listing each one as ``"<what> @ $.json.path"``.

cattrs reports problems as exception groups; they never leave this module (``except*`` cannot catch
them and a trio nursery would wrap them again), a :class:`CodecError` does.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs
import cattrs.gen
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)

from .models.evse_security import U64_MAX, HeartbeatId
from .models.json import JsonObject, JsonValue
from .models.loose import LooseBool, LooseFloat, LooseInt, LooseStr
from .models.validators import FieldValueError

T = TypeVar("T")

__all__ = [
    "CodecError",
    "FieldValueError",
    "converter",
    "decode_json",
    "encode_json",
    "load_json",
    "dump_json",
    "structure",
    "unstructure",
]


class CodecError(ValueError):
    """A value does not fit its type. ``problems`` holds one ``"<what> @ $.path"`` line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


def _type_name(value: object) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        dict: "an object",
        list: "an array",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# ---- strict primitives -------------------------------------------------------------------------


def _structure_str(value: Any, _: type) -> str:
    if type(value) is str:
        return value
    raise TypeError(f"expected a string, got {_type_name(value)}")


def _structure_int(value: Any, _: type) -> int:
    if type(value) is int:
        return value
    raise TypeError(f"expected an integer, got {_type_name(value)}")


def _structure_bool(value: Any, _: type) -> bool:
    if type(value) is bool:
        return value
    raise TypeError(f"expected a boolean, got {_type_name(value)}")


def _structure_float(value: Any, _: type) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    raise TypeError(f"expected a number, got {_type_name(value)}")


def _structure_loose_int(value: Any, _: type) -> int:
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is str and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise TypeError(f"expected an integer (or one written as text), got {_describe_value(value)}")


def _structure_loose_float(value: Any, _: type) -> float:
    if type(value) is int or type(value) is float:
        return float(value)
    if type(value) is str:
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise TypeError(f"expected a number (or one written as text), got {_describe_value(value)}")


def _structure_loose_bool(value: Any, _: type) -> bool:
    if type(value) is bool:
        return value
    if value in ("true", "false", ""):
        return value == "true"
    raise TypeError(f"expected true or false (or \"true\"/\"false\"), got {_describe_value(value)}")


def _structure_loose_str(value: Any, _: type) -> str:
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is int or type(value) is float:
        return json.dumps(value)
    raise TypeError(f"expected a string or a number, got {_describe_value(value)}")


def _describe_value(value: Any) -> str:
    return repr(value) if type(value) is str else _type_name(value)


def _structure_json_object(value: Any, _: type) -> dict[str, Any]:
    if type(value) is dict:
        return value
    raise TypeError(f"expected an object, got {_type_name(value)}")


def _structure_json_value(value: Any, _: type) -> Any:
    return value


def _structure_null(value: Any, _: type) -> None:
    if value is None:
        return None
    raise TypeError(f"expected null, got {_type_name(value)}")


def _structure_u64(value: Any, _: type) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {_type_name(value)}")
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"expected an integer in 0..2^64-1, got {value}")
    return value


@functools.cache
def _enum_table(cls: type[enum.Enum]) -> tuple[dict[Any, enum.Enum], str]:
    by_value = {member.value: member for member in cls}
    return by_value, ", ".join(repr(v) for v in by_value)


def _structure_enum(value: Any, cls: type[enum.Enum]) -> enum.Enum:
    by_value, allowed = _enum_table(cls)
    try:
        return by_value[value]
    except (KeyError, TypeError):  # TypeError: an unhashable value such as a JSON array
        raise ValueError(f"expected one of {allowed}, got {value!r}") from None


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = get_args(tp)
    return get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _array_hook_factory(tp: Any, conv: cattrs.Converter) -> Callable[[Any, type], Any]:
    """``tuple[X, ...]`` from a JSON array only; elements keep their index in error paths."""
    item_type = get_args(tp)[0]
    structure_item = conv.get_structure_hook(item_type)

    def structure_array(value: Any, _: type) -> tuple[Any, ...]:
        if type(value) is not list:
            raise TypeError(f"expected an array, got {_type_name(value)}")
        items = []
        errors = []
        for index, item in enumerate(value):
            try:
                items.append(structure_item(item, item_type))
            except Exception as exc:  # collected and re-raised as one group below
                exc.__notes__ = [cattrs.IterableValidationNote(f"index {index}", index, item_type)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"while structuring {tp!r}", errors, tp)
        return tuple(items)

    return structure_array


def is_wire_model(cls: type) -> bool:
    """Values of the EVerest APIs (``evflow.runtime.models``): their objects allow additional
    properties, so unknown keys are ignored. Everything else structured here is configuration
    written by people (flow files), where an unknown key is a typo to report."""
    return cls.__module__.startswith(_WIRE_MODELS)


_WIRE_MODELS = __name__.rpartition(".")[0] + ".models."


def json_key(field: attrs.Attribute[Any]) -> str:
    """The JSON key of a field: its name, or the ``evflow_key`` its metadata gives (Node-RED's
    ``from`` is a Python keyword, so the field is ``from_``)."""
    return field.metadata.get("evflow_key", field.name)  # type: ignore[no-any-return]


# Set on a class made from a schema with `additionalProperties: false`: its unknown keys are refused.
CLOSED = "__evflow_closed__"


def refuses_unknown_keys(cls: type) -> bool:
    """Configuration refuses unknown keys; EVerest's values ignore them, except those of an object
    whose document says ``additionalProperties: false`` (a class made from it says so itself)."""
    return getattr(cls, CLOSED, not is_wire_model(cls))  # type: ignore[no-any-return]


def _has_renamed_keys(cls: Any) -> bool:
    return attrs.has(cls) and any("evflow_key" in field.metadata for field in attrs.fields(cls))


def _renamed_keys(cls: type) -> dict[str, Any]:
    return {field.name: cattrs.gen.override(rename=field.metadata["evflow_key"])
            for field in attrs.fields(cls) if "evflow_key" in field.metadata}


def _not_a_mapping_guard(conv: cattrs.Converter) -> Callable[[type], Callable[[Any, type], Any]]:
    """attrs classes come from JSON objects only; say so instead of failing inside cattrs."""

    def factory(cls: type) -> Callable[[Any, type], Any]:
        generated = cattrs.gen.make_dict_structure_fn(
            cls, conv, _cattrs_forbid_extra_keys=refuses_unknown_keys(cls), **_renamed_keys(cls)
        )

        def structure_object(value: Any, _: type) -> Any:
            if type(value) is not dict:
                raise TypeError(f"expected an object, got {_type_name(value)}")
            return generated(value, cls)

        return structure_object

    return factory


def make_converter() -> cattrs.Converter:
    """Build and configure evflow's converter: every hook is registered here, before first use."""
    conv = cattrs.Converter(omit_if_default=True, prefer_attrib_converters=False)
    # Class hooks dispatch along the MRO (most specific registration wins): `bool` is an `int` and a
    # `StrEnum` is a `str`, so each gets its own hook.
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(bool, _structure_bool)
    conv.register_structure_hook(float, _structure_float)
    conv.register_structure_hook(enum.Enum, _structure_enum)
    conv.register_structure_hook(enum.StrEnum, _structure_enum)
    conv.register_structure_hook(HeartbeatId, _structure_u64)
    conv.register_structure_hook(JsonObject, _structure_json_object)
    conv.register_structure_hook(JsonValue, _structure_json_value)
    conv.register_structure_hook(type(None), _structure_null)  # a schema of `type: null` alone
    conv.register_structure_hook(LooseInt, _structure_loose_int)
    conv.register_structure_hook(LooseFloat, _structure_loose_float)
    conv.register_structure_hook(LooseBool, _structure_loose_bool)
    conv.register_structure_hook(LooseStr, _structure_loose_str)
    conv.register_structure_hook_factory(_is_homogeneous_tuple, lambda tp: _array_hook_factory(tp, conv))
    conv.register_structure_hook_factory(attrs.has, _not_a_mapping_guard(conv))
    # Tuples go out as JSON arrays.
    conv.register_unstructure_hook_factory(_is_homogeneous_tuple, lambda tp: _array_unstructure_hook(tp, conv))
    # Fields whose wire name is no Python name (`from`) go out under their wire name.
    conv.register_unstructure_hook_factory(
        _has_renamed_keys,
        lambda cls: cattrs.gen.make_dict_unstructure_fn(cls, conv, _cattrs_omit_if_default=True, **_renamed_keys(cls)),
    )
    return conv


def _array_unstructure_hook(tp: Any, conv: cattrs.Converter) -> Callable[[Any], list[Any]]:
    item = conv.get_unstructure_hook(get_args(tp)[0])
    return lambda value: [item(v) for v in value]


converter = make_converter()


# ---- errors with JSON paths ----------------------------------------------------------------------


def _problems(exc: BaseException, path: str) -> Iterator[str]:
    if isinstance(exc, ClassValidationError):
        with_notes, without_notes = exc.group_exceptions()
        for inner, note in with_notes:
            yield from _problems(inner, f"{path}.{note.name}")
        for inner in without_notes:
            yield from _problems(inner, path)
    elif isinstance(exc, IterableValidationError):
        with_notes, without_notes = exc.group_exceptions()
        for inner, note in with_notes:
            yield from _problems(inner, f"{path}[{note.index!r}]")
        for inner in without_notes:
            yield from _problems(inner, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield f"unknown key @ {path}.{key}"
    elif isinstance(exc, FieldValueError):
        yield f"{exc.message} @ {path}.{exc.field}"
    elif isinstance(exc, KeyError):
        yield f"required key missing @ {path}"
    elif isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _problems(inner, path)
    else:
        yield f"{exc} @ {path}"


def problems_of(exc: BaseException, path: str = "$") -> list[str]:
    """Flatten a cattrs validation error into ``"<what> @ <path>"`` lines."""
    return list(_problems(exc, path))


# ---- the boundary --------------------------------------------------------------------------------


def structure(value: Any, cls: type[T], path: str = "$") -> T:
    """Typed value from plain JSON data, or :class:`CodecError`."""
    try:
        return converter.structure(value, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise CodecError(problems_of(exc, path)) from None


def unstructure(value: Any) -> Any:
    """Plain JSON data from a typed value (optional fields left out when unset)."""
    return converter.unstructure(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every call: json.loads with an option builds a new one each time.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def load_json(data: bytes | str) -> Any:
    """Parse JSON strictly (UTF-8, no NaN/Infinity), or :class:`CodecError`."""
    try:
        return _DECODER.decode(data.decode("utf-8") if isinstance(data, bytes | bytearray) else data)
    except UnicodeDecodeError:
        raise CodecError(["invalid UTF-8 @ $"]) from None
    except ValueError as exc:  # json.JSONDecodeError, NaN, an integer too long to convert
        raise CodecError([f"invalid JSON ({exc}) @ $"]) from None
    except RecursionError:
        raise CodecError(["JSON nested too deeply @ $"]) from None


# One encoder for every call, as for decoding: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dump_json(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def decode_json(data: bytes | str, cls: type[T]) -> T:
    return structure(load_json(data), cls)


def encode_json(value: Any) -> bytes:
    return dump_json(converter.unstructure(value))
