"""JavaScript's value semantics on the Python values that stand for JavaScript's in evflow's messages.

Node-RED's nodes compute with JavaScript's rules: ``==`` converts between strings and numbers, ``<``
compares strings by UTF-16 code units and everything else as numbers, ``"" + value`` writes an array
as its items joined by commas, ``JSON.stringify`` writes ``1e-7`` where Python writes ``1e-07``. The
nodes ported from Node-RED use these functions wherever the result depends on those rules.

The values: ``undefined`` is :data:`UNDEFINED`, ``null`` is None, booleans, numbers (int or float),
strings, arrays (list or tuple), objects (dict, or a typed value such as an EVerest reply, taken as
its JSON form), Buffers (bytes or bytearray) and regular expressions (compiled patterns).

* :func:`type_of`, :func:`truthy`: ``typeof`` and ``Boolean(value)``; :func:`plain`: a typed value
  as the JSON object it stands for;
* :func:`to_number`, :func:`to_string`, :func:`number_to_string`, :func:`to_primitive`:
  ``Number(value)``, ``String(value)`` (also what ``value + ""`` gives for these values), and the
  primitive an array or object stands for in a comparison;
* :func:`loose_equals`, :func:`strict_equals`, :func:`compare`: ``==``, ``===``, and the order behind
  ``<``, ``<=``, ``>``, ``>=``;
* :func:`has_own_property`, :func:`own_key_count`: ``value.hasOwnProperty(key)``, ``Object.keys(value).length``;
* :func:`json_stringify`, :func:`json_parse`, :func:`is_json`: ``JSON.stringify``, ``JSON.parse``
  (with V8's error messages, as Node.js 20 and 22 report them); :func:`json_bytes` and
  :func:`json_parse_or` the same for the hot path of the mqtt nodes;
* :func:`parse_int`: ``parseInt(value)``;
* :func:`replace`: ``text.replace(regex, replacement)`` with the ``$&``, ``$1``… patterns of the
  replacement string.
"""

from __future__ import annotations

import enum
import json
import math
import re
from typing import Any

import attrs

from evflow.runtime.codec import unstructure
from evflow.runtime.properties import UNDEFINED
from evflow.runtime.typedinput import JS_WHITESPACE, js_number

__all__ = [
    "UNDEFINED",
    "JSONSyntaxError",
    "compare",
    "has_own_property",
    "is_json",
    "json_bytes",
    "json_parse",
    "json_parse_or",
    "json_stringify",
    "loose_equals",
    "number_to_string",
    "own_key_count",
    "parse_int",
    "plain",
    "replace",
    "strict_equals",
    "to_number",
    "to_primitive",
    "to_string",
    "truthy",
    "type_of",
]

# Integers up to this magnitude are exact in a JavaScript number (a double).
MAX_SAFE_INTEGER = 2**53


def plain(value: Any) -> Any:
    """A typed value (an attrs instance, such as an EVerest reply) as its JSON form; anything else as it is."""
    if attrs.has(type(value)):
        return unstructure(value)
    return value


def _kind(value: Any) -> str:
    """``typeof``, with ``null`` told apart from objects."""
    kind = type(value)
    if kind is str:
        return "string"
    if kind is int or kind is float:
        return "number"
    if kind is bool:
        return "boolean"
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, str):  # a StrEnum is its wire string
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "object"


def type_of(value: Any) -> str:
    """JavaScript's ``typeof value``: ``"undefined"``, ``"boolean"``, ``"number"``, ``"string"``, or
    ``"object"`` (``null``, arrays, objects, Buffers and regular expressions)."""
    kind = _kind(value)
    return "object" if kind == "null" else kind


def truthy(value: Any) -> bool:
    """``Boolean(value)``: false for ``undefined``, ``null``, ``false``, ``0``, ``NaN`` and ``""``; true
    for everything else, empty arrays and objects included."""
    kind = _kind(value)
    if kind == "number":
        return value == value and value != 0
    if kind == "string":
        return len(value) > 0
    if kind == "boolean":
        return bool(value)
    return kind == "object"


# ---- conversions --------------------------------------------------------------------------------



def _number(value: float) -> int | float:
    """A number as evflow keeps it: integral values as ints (they print as JavaScript prints them)."""
    return js_number(value)


def _string_to_number(text: str) -> int | float:
    return js_number(text)  # one reading of a numeric literal, the typed inputs' too


def to_primitive(value: Any) -> Any:
    """``ToPrimitive(value)``: arrays, objects, Buffers and regular expressions become their text;
    ``undefined``, ``null``, booleans, numbers and strings stay as they are."""
    if _kind(value) != "object":
        return value
    return to_string(value)


def to_number(value: Any) -> int | float:
    """``Number(value)``: a string is read as a JavaScript numeric literal (``""`` is 0, ``"0x1A"``
    26, anything else NaN); ``null`` is 0, ``undefined`` NaN, arrays and Buffers go through their
    text (``[5]`` is 5), objects are NaN."""
    kind = _kind(value)
    if kind == "number":
        return value  # type: ignore[no-any-return]
    if kind == "string":
        return _string_to_number(value)
    if kind == "boolean":
        return 1 if value else 0
    if kind == "null":
        return 0
    if kind == "undefined":
        return math.nan
    return _string_to_number(to_string(value))


def number_to_string(number: float) -> str:
    """``String(number)``: the shortest digits that read back as the same number, in decimal
    notation from 1e-7 up to 1e21 and in exponent notation (``1e+21``, ``1.5e-7``) outside."""
    if isinstance(number, bool):
        return "true" if number else "false"
    if isinstance(number, int):
        if abs(number) <= MAX_SAFE_INTEGER:
            return str(number)
        try:
            number = float(number)  # a JavaScript number holds no more digits than a double
        except OverflowError:
            number = math.inf if number > 0 else -math.inf
    if number != number:
        return "NaN"
    if number in (math.inf, -math.inf):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"  # -0 too
    sign = "-" if number < 0 else ""
    # repr gives the shortest round-trip digits, as JavaScript does; only the notation differs.
    mantissa, _, exponent = repr(abs(number)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    point = len(whole) + (int(exponent) if exponent else 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    count = len(digits)
    if count <= point <= 21:
        text = digits + "0" * (point - count)
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        power = point - 1
        text = digits[0] + ("." + digits[1:] if count > 1 else "") + ("e+" if power >= 0 else "e-") + str(abs(power))
    return sign + text


def _buffer_text(data: bytes | bytearray) -> str:
    """``buffer.toString()``: UTF-8, with U+FFFD for what does not decode."""
    return bytes(data).decode("utf-8", "replace")


def to_string(value: Any) -> str:
    """``String(value)`` (and ``value + ""``): ``null`` is ``"null"``, an array its items joined by
    commas (``null`` and ``undefined`` items empty), an object ``"[object Object]"``, a Buffer its
    bytes decoded as UTF-8."""
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return number_to_string(value)
    if value is None:
        return "null"
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number_to_string(value)
    if isinstance(value, list | tuple):
        return ",".join("" if item is None or item is UNDEFINED else to_string(item) for item in value)
    if isinstance(value, bytes | bytearray):
        return _buffer_text(value)
    if isinstance(value, re.Pattern):
        return f"/{value.pattern}/" + ("i" if value.flags & re.IGNORECASE else "")
    return "[object Object]"


# ---- comparisons ----------------------------------------------------------------------------------


def strict_equals(a: Any, b: Any) -> bool:
    """``a === b``: same type and value; arrays, objects and Buffers only when they are the same one."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "object":
        return a is b
    return bool(a == b)  # NaN is not NaN; 0 is -0


def loose_equals(a: Any, b: Any) -> bool:
    """``a == b``: ``null == undefined``; a string and a number compare as numbers; a boolean as the
    number 1 or 0; an array, object or Buffer against a string or number as its text."""
    kind_a, kind_b = _kind(a), _kind(b)
    if kind_a == kind_b:
        return a is b if kind_a == "object" else bool(a == b)
    if kind_a in ("null", "undefined") or kind_b in ("null", "undefined"):
        return kind_a in ("null", "undefined") and kind_b in ("null", "undefined")
    if kind_a == "boolean":
        return loose_equals(1 if a else 0, b)
    if kind_b == "boolean":
        return loose_equals(a, 1 if b else 0)
    if kind_a == "number" and kind_b == "string":
        return bool(a == _string_to_number(b))
    if kind_a == "string" and kind_b == "number":
        return bool(_string_to_number(a) == b)
    if kind_a == "object":
        return loose_equals(to_string(a), b)
    return loose_equals(a, to_string(b))


def _utf16_less(a: str, b: str) -> bool:
    if a.isascii() and b.isascii():
        return a < b
    return a.encode("utf-16-be", "surrogatepass") < b.encode("utf-16-be", "surrogatepass")


def compare(a: Any, b: Any) -> int | None:
    """The order behind ``<``, ``<=``, ``>`` and ``>=``: -1, 0 or 1, or None where JavaScript's
    comparison is undefined (a NaN on either side), which makes all four false.

    Both sides become primitives (arrays and objects their text); two strings compare by UTF-16
    code units, anything else as numbers (``null`` is 0, ``undefined`` NaN, ``true`` 1)."""
    a, b = to_primitive(a), to_primitive(b)
    if _kind(a) == "string" and _kind(b) == "string":
        return -1 if _utf16_less(a, b) else 1 if _utf16_less(b, a) else 0
    x, y = to_number(a), to_number(b)
    if x != x or y != y:
        return None
    return -1 if x < y else 1 if x > y else 0


# ---- properties ----------------------------------------------------------------------------------

_INDEX = re.compile(r"0|[1-9][0-9]*")


def _index(key: str) -> int | None:
    """The array index a property key names (``"0"``, ``"12"``, not ``"01"``), or None."""
    if _INDEX.fullmatch(key):
        index = int(key)
        if index < 2**32 - 1:
            return index
    return None


def _length(value: Any) -> int:
    """``value.length``: a string's in UTF-16 code units (a character beyond U+FFFF counts twice)."""
    if isinstance(value, str) and not value.isascii():
        return len(value) + sum(1 for char in value if ord(char) > 0xFFFF)
    return len(value)


def has_own_property(value: Any, key: str) -> bool:
    """``value.hasOwnProperty(key)`` for a value that is not ``null`` or ``undefined``: an object's
    keys; an array's or string's indexes and ``length``; a Buffer's indexes; nothing of a number or
    boolean."""
    value = plain(value)
    if isinstance(value, dict):
        return key in value
    if isinstance(value, str | list | tuple | bytes | bytearray):
        if key == "length":
            return not isinstance(value, bytes | bytearray)  # a Buffer's length is its prototype's
        index = _index(key)
        return index is not None and index < _length(value)
    return False


def own_key_count(value: Any) -> int:
    """``Object.keys(value).length`` of an object (0 for a regular expression)."""
    value = plain(value)
    return len(value) if isinstance(value, dict | list | tuple | str | bytes | bytearray) else 0


# ---- JSON ----------------------------------------------------------------------------------------


def _ordered_keys(obj: dict[Any, Any]) -> list[tuple[str, Any]]:
    """An object's members in JavaScript's order: array-index keys first, ascending, then the
    others in insertion order."""
    items = [(key if type(key) is str else to_string(key), value) for key, value in obj.items()]
    indexed = [(index, key, value) for key, value in items if (index := _index(key)) is not None]
    if not indexed:
        return items
    indexed.sort(key=lambda member: member[0])
    return [(key, value) for _, key, value in indexed] + [(k, v) for k, v in items if _index(k) is None]


_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _quote(text: str) -> str:
    quoted = _encode_string(text)
    if _LONE_SURROGATE.search(quoted) is None:
        return quoted  # type: ignore[no-any-return]
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)  # as well-formed JSON.stringify


def json_stringify(value: Any, indent: int | str = 0) -> Any:
    """``JSON.stringify(value, null, indent)``: the JSON text, or :data:`UNDEFINED` for
    ``undefined``. As JavaScript writes it: numbers as :func:`number_to_string` (NaN and Infinity
    as ``null``), members that are ``undefined`` left out (``null`` in arrays), array-index keys
    first, a Buffer as ``{"type":"Buffer","data":[…]}``, a regular expression as ``{}``.

    :class:`TypeError` for a circular structure or a value JSON has no form for."""
    gap = " " * min(indent, 10) if isinstance(indent, int) else indent[:10]
    if value is UNDEFINED:
        return UNDEFINED
    return _serialise(value, gap, "", [])


def _serialise(value: Any, gap: str, indentation: str, stack: list[int]) -> str:
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return number_to_string(value) if math.isfinite(value) else "null"
    if value is None:
        return "null"
    if isinstance(value, enum.Enum):
        return _serialise(value.value, gap, indentation, stack)
    if isinstance(value, str):
        return _quote(str.__str__(value))
    if isinstance(value, int | float):
        return _serialise(int(value) if isinstance(value, int) else float(value), gap, indentation, stack)
    if isinstance(value, bytes | bytearray):
        return _serialise({"type": "Buffer", "data": list(value)}, gap, indentation, stack)
    if isinstance(value, re.Pattern):
        return "{}"
    if attrs.has(type(value)):
        return _serialise(unstructure(value), gap, indentation, stack)
    if not isinstance(value, dict | list | tuple):
        raise TypeError(f"cannot convert a {type(value).__name__} to JSON")
    if id(value) in stack:
        raise TypeError("Converting circular structure to JSON")
    stack.append(id(value))
    inner = indentation + gap
    if isinstance(value, dict):
        members = [
            _quote(key) + (": " if gap else ":") + _serialise(item, gap, inner, stack)
            for key, item in _ordered_keys(value)
            if item is not UNDEFINED
        ]
        opening, closing = "{", "}"
    else:
        members = ["null" if item is UNDEFINED else _serialise(item, gap, inner, stack) for item in value]
        opening, closing = "[", "]"
    stack.pop()
    if not members:
        return opening + closing
    if not gap:
        return opening + ",".join(members) + closing
    return f"{opening}\n{inner}" + f",\n{inner}".join(members) + f"\n{indentation}{closing}"


class JSONSyntaxError(ValueError):
    """``JSON.parse`` refused its text; the message is V8's (``Unexpected token 'a', "abc" is not valid JSON``)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_float(text: str) -> int | float:
    return _number(float(text))


# Numbers as JavaScript has them: 1.0 is 1 (an int, so it prints as 1 wherever it goes next).
_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_constant=_reject_constant)


def json_parse(text: Any) -> Any:
    """``JSON.parse(text)``: a Buffer is read as UTF-8 text, anything else as :func:`to_string`.
    Objects become dicts, arrays lists; integral numbers ints. :class:`JSONSyntaxError` with V8's
    message when the text is not JSON."""
    if not isinstance(text, str):
        text = to_string(text)
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise JSONSyntaxError(_V8Diagnosis(text).message() or str(exc)) from None


def json_parse_or(text: str, default: Any) -> Any:
    """``JSON.parse(text)``, or ``default`` when it throws (without the cost of V8's message)."""
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError):
        return default


# Where Python's compact JSON may differ from JSON.stringify's: a float (Python writes "2.0",
# "1e-07", "NaN"; every float it writes has a digit before "." or "e", or is NaN or Infinity), an
# integer beyond 2**53 (16 digits or more: a JavaScript number rounds it), or a key that is an
# array index (JavaScript puts those first). Text in strings may match too, which costs only the
# slower path.
_MAY_DIFFER = re.compile(rb'[0-9][.eE]|[0-9]{16}|NaN|Infinity|"(?:0|[1-9][0-9]*)":')
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def json_bytes(value: Any) -> bytes:
    """``JSON.stringify(value)`` as UTF-8, for a value JSON has a form for (:class:`TypeError` if
    not). Python's C encoder writes it where its text cannot differ from JavaScript's; else (floats,
    index keys, Buffers, typed values, lone surrogates) :func:`json_stringify` does."""
    try:
        data = _COMPACT.encode(value).encode()
    except (TypeError, ValueError, UnicodeEncodeError):
        data = None
    if data is None or _MAY_DIFFER.search(data):
        return json_stringify(value).encode()  # type: ignore[no-any-return]
    return data


_PARSE_INT = re.compile(r"([+-]?)(?:0[xX]([0-9a-fA-F]+)|([0-9]+))")


def parse_int(value: Any) -> int | float:
    """``parseInt(value)``: the whole number at the start of ``String(value)`` (after white space;
    ``0x`` for hexadecimal), or NaN."""
    text = to_string(value).lstrip(JS_WHITESPACE)
    match = _PARSE_INT.match(text)
    if match is None:
        return math.nan
    sign, hexadecimal, decimal = match.groups()
    number = int(hexadecimal, 16) if hexadecimal else int(decimal)
    return -number if sign == "-" else number


def is_json(value: Any) -> bool:
    """Whether ``JSON.parse(value)`` succeeds (``value`` converted as :func:`json_parse` does)."""
    if not isinstance(value, str):
        value = to_string(value)
    try:
        _DECODER.decode(value)
    except (ValueError, RecursionError):
        return False
    return True


class _Failure(Exception):
    def __init__(self, template: str | None, position: int) -> None:
        self.template = template  # None: V8's "unexpected token" message for the character there
        self.position = position


_WHITESPACE = " \t\n\r"
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_ESCAPES = frozenset('"\\/bfnrt')
_HEX = frozenset("0123456789abcdefABCDEF")
# V8 names the whole text instead of one character when it is one of these.
_SPECIAL_TEXTS = frozenset({"NaN", "Infinity", "undefined", "[object Object]"})


class _V8Diagnosis:
    """Finds where and why V8's ``JSON.parse`` stops on a text Python's parser refused, to report it
    in V8's words. Run only on failure: parsing itself is Python's."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def message(self) -> str:
        try:
            self._skip()
            self._value()
            self._skip()
            if self.at < len(self.text):
                raise _Failure("Unexpected non-whitespace character after JSON at position %d", self.at)
        except _Failure as failure:
            return self._describe(failure)
        except RecursionError:
            return "Maximum call stack size exceeded"
        return ""  # Python refused what V8 takes: the caller says what Python said

    def _describe(self, failure: _Failure) -> str:
        text, at = self.text, failure.position
        if at >= len(text) and failure.template is None:
            return "Unexpected end of JSON input"
        # V8 counts in UTF-16 code units: a character beyond U+FFFF is two.
        units = text.encode("utf-16-le", "surrogatepass")
        length = len(units) // 2
        position = len(text[:at].encode("utf-16-le", "surrogatepass")) // 2
        if failure.template is not None:
            return failure.template % position
        char = text[at]
        if char == '"':
            return f"Unexpected string in JSON at position {position}"
        if char == "-" or "0" <= char <= "9":
            return f"Unexpected number in JSON at position {position}"
        if text in _SPECIAL_TEXTS:
            return f'"{text}" is not valid JSON'

        def excerpt(start: int, end: int) -> str:
            # Half a surrogate pair (V8 names one where it cuts through a pair) shows as U+FFFD.
            return _LONE_SURROGATE.sub("\ufffd", units[2 * start : 2 * end].decode("utf-16-le", "surrogatepass"))

        token = f"Unexpected token '{excerpt(position, position + 1)}', "
        if length < 21:
            return token + f'"{text}" is not valid JSON'
        if position < 10:
            return token + f'"{excerpt(0, position + 10)}"... is not valid JSON'
        if position < length - 10:
            return token + f'..."{excerpt(position - 10, position + 10)}"... is not valid JSON'
        return token + f'..."{excerpt(position - 10, length)}" is not valid JSON'

    def _peek(self) -> str:
        return self.text[self.at] if self.at < len(self.text) else ""

    def _skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in _WHITESPACE:
            self.at += 1

    def _value(self) -> None:
        char = self._peek()
        if char == "{":
            self._object()
        elif char == "[":
            self._array()
        elif char == '"':
            self._string()
        elif char == "-" or "0" <= char <= "9":
            self._number()
        elif char in _LITERALS:
            for expected in _LITERALS[char]:
                if self._peek() != expected:
                    raise _Failure(None, self.at)
                self.at += 1
        else:
            raise _Failure(None, self.at)

    def _object(self) -> None:
        self.at += 1
        self._skip()
        if self._peek() == "}":
            self.at += 1
            return
        if self._peek() != '"':
            raise _Failure("Expected property name or '}' in JSON at position %d", self.at)
        # V8 names the missing colon after the first property name only; after the others it
        # reports the token it found.
        missing_colon: str | None = "Expected ':' after property name in JSON at position %d"
        while True:
            self._string()
            self._skip()
            if self._peek() != ":":
                raise _Failure(missing_colon, self.at)
            missing_colon = None
            self.at += 1
            self._skip()
            self._value()
            self._skip()
            if self._peek() == "}":
                self.at += 1
                return
            if self._peek() != ",":
                raise _Failure("Expected ',' or '}' after property value in JSON at position %d", self.at)
            self.at += 1
            self._skip()
            if self._peek() != '"':
                raise _Failure("Expected double-quoted property name in JSON at position %d", self.at)

    def _array(self) -> None:
        self.at += 1
        self._skip()
        if self._peek() == "]":
            self.at += 1
            return
        while True:
            self._value()
            self._skip()
            if self._peek() == "]":
                self.at += 1
                return
            if self._peek() != ",":
                raise _Failure("Expected ',' or ']' after array element in JSON at position %d", self.at)
            self.at += 1
            self._skip()

    def _string(self) -> None:
        text = self.text
        self.at += 1
        while True:
            if self.at >= len(text):
                raise _Failure("Unterminated string in JSON at position %d", self.at)
            char = text[self.at]
            if char == '"':
                self.at += 1
                return
            if char < " ":
                raise _Failure("Bad control character in string literal in JSON at position %d", self.at)
            if char == "\\":
                self.at += 1
                escape = self._peek()
                if escape == "":
                    raise _Failure(None, self.at)
                if escape == "u":
                    for offset in range(1, 5):
                        if self.at + offset >= len(text) or text[self.at + offset] not in _HEX:
                            raise _Failure("Bad Unicode escape in JSON at position %d", self.at + offset)
                    self.at += 4
                elif escape not in _ESCAPES:
                    # V8 looks escapes up in a table of Latin-1 characters; past it, the token is named.
                    bad = "Bad escaped character in JSON at position %d" if escape <= "\xff" else None
                    raise _Failure(bad, self.at)
            self.at += 1

    def _digits(self) -> int:
        start = self.at
        while "0" <= self._peek() <= "9":
            self.at += 1
        return self.at - start

    def _number(self) -> None:
        if self._peek() == "-":
            self.at += 1
            if not "0" <= self._peek() <= "9":
                raise _Failure("No number after minus sign in JSON at position %d", self.at)
        if self._peek() == "0":
            self.at += 1
            if "0" <= self._peek() <= "9":
                raise _Failure("Unexpected number in JSON at position %d", self.at)
        else:
            self._digits()
        if self._peek() == ".":
            self.at += 1
            if not self._digits():
                raise _Failure("Unterminated fractional number in JSON at position %d", self.at)
        if self._peek() in ("e", "E"):
            self.at += 1
            if self._peek() in ("+", "-"):
                self.at += 1
            if not self._digits():
                raise _Failure("Exponent part is missing a number in JSON at position %d", self.at)


# ---- String.prototype.replace ---------------------------------------------------------------------

_PATTERN = re.compile(r"\$(?:([$&`'])|([0-9]{1,2})|<([^>]*)>)")


def replace(text: str, pattern: re.Pattern[str], replacement: str, count: int = 0) -> str:
    """``text.replace(pattern, replacement)`` with a global regular expression (``count=1``: one
    without the ``g`` flag). In ``replacement``, ``$$`` is ``$``, ``$&`` the match, ``$``` and
    ``$'`` the text before and after it, ``$1``…``$99`` a group (``$0`` and groups the expression
    does not have stay as written), ``$<name>`` a named group."""
    if "$" not in replacement:
        return pattern.sub(lambda match: replacement, text, count)
    groups = pattern.groups
    named = bool(pattern.groupindex)

    def substitute(match: re.Match[str]) -> str:
        def expand(token: re.Match[str]) -> str:
            symbol, number, name = token.groups()
            if symbol == "$":
                return "$"
            if symbol == "&":
                return match.group()
            if symbol == "`":
                return text[: match.start()]
            if symbol == "'":
                return text[match.end() :]
            if number is not None:
                if len(number) == 2 and 1 <= int(number) <= groups:
                    return match.group(int(number)) or ""
                if 1 <= int(number[0]) <= groups:
                    return (match.group(int(number[0])) or "") + number[1:]
                return token.group()
            if not named:
                return token.group()
            return (match.group(name) if name in pattern.groupindex else None) or ""

        return _PATTERN.sub(expand, replacement)

    return pattern.sub(substitute, text, count)
