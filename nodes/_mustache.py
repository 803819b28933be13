"""Mustache templates as mustache.js 4.2 renders them for Node-RED's ``template`` node (values become
text as JavaScript's ``String(value)`` makes it: :func:`evflow.nodes._jsvalues.to_string`).

Why not a library: PyPI's mustache renderers follow the Mustache spec or Python, not mustache.js, and
Node-RED's template output is mustache.js's. ``chevron`` has had no release since 2021; ``pystache``
is maintained, but it renders values as Python does (``True``, ``[1, 2]``, ``{'a': 1}`` where
mustache.js writes ``true``, ``1,2``, ``[object Object]``), escapes a different set of characters, and
resolves dotted names as the spec does, not as mustache.js does (which walks the whole dotted name in
each context and falls back to the parent when its last step is missing). Node-RED also needs a hook
for names the message does not have (``flow.x``, ``global.x``, ``env.X``, else the empty string).
Matching all that through a library's extension points would be longer than this module, which
follows mustache.js's parser (standalone lines, ``{{=<% %>=}}`` delimiters, comments, the same error
texts) and writer step by step.

What is not here: partials (``{{> name}}``) render as nothing, as in Node-RED, which passes none;
lambdas do not exist in JSON data.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from evflow.runtime.codec import unstructure
from evflow.runtime.nodeapi import UNDEFINED

from ._jsvalues import to_string, truthy

__all__ = ["MustacheError", "Section", "Template", "escape_html", "parse", "render"]


class MustacheError(ValueError):
    """A template that does not parse (mustache.js's words: ``Unclosed tag at 12``)."""


# ---- JavaScript's view of values ----------------------------------------------------------------


def _is_object(value: Any) -> bool:
    """``typeof value === "object"`` and not null: objects, arrays, Buffers."""
    return isinstance(value, Mapping | list | tuple | bytes | bytearray) or attrs.has(type(value))


_INDEX = re.compile(r"0|[1-9][0-9]*")


def _has(value: Any, key: str) -> bool:
    """``key in value`` for an object; for a primitive, whether it has ``key`` as its own property
    (a string's ``length`` and character indexes)."""
    if isinstance(value, Mapping):
        return key in value
    if isinstance(value, list | tuple | bytes | bytearray | str):
        return key == "length" or (_INDEX.fullmatch(key) is not None and int(key) < len(value))
    return False


def _get(value: Any, key: str) -> Any:
    """``value[key]`` in JavaScript, for JSON-like values; ``UNDEFINED`` when there is none."""
    if attrs.has(type(value)):
        value = unstructure(value)
    if isinstance(value, Mapping):
        return value.get(key, UNDEFINED)
    if isinstance(value, list | tuple | bytes | bytearray | str):
        if key == "length":
            return len(value)
        if _INDEX.fullmatch(key) is not None and int(key) < len(value):
            return value[int(key)]
    return UNDEFINED


# ---- parsing (mustache.js's parseTemplate) -------------------------------------------------------


@attrs.frozen
class Section:
    """``{{#name}}…{{/name}}``, or ``{{^name}}…{{/name}}`` when ``inverted``."""

    name: str
    inverted: bool
    children: tuple[Any, ...]


@attrs.frozen
class _Value:
    """``{{name}}`` (escaped) or ``{{{name}}}``/``{{&name}}`` (raw)."""

    name: str
    escaped: bool


@attrs.frozen
class Template:
    """A parsed template: text, values and sections; ``names`` are every name it looks up."""

    tokens: tuple[Any, ...]
    names: frozenset[str]


_WHITE = re.compile(r"\s*")
_SPACE = re.compile(r"\s+")
_EQUALS = re.compile(r"\s*=")
_CURLY = re.compile(r"\s*\}")
_TAG_TYPE = re.compile(r"#|\^|/|>|\{|&|=|!")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def eos(self) -> bool:
        return self.pos >= len(self.text)

    def scan(self, pattern: re.Pattern[str]) -> str:
        match = pattern.match(self.text, self.pos)
        if match is None:
            return ""
        self.pos = match.end()
        return match.group()

    def scan_until(self, pattern: re.Pattern[str]) -> str:
        match = pattern.search(self.text, self.pos)
        end = len(self.text) if match is None else match.start()
        found = self.text[self.pos : end]
        self.pos = end
        return found


def _tag_patterns(tags: str | list[str]) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    if isinstance(tags, str):
        tags = _SPACE.split(tags)[:2]
    if len(tags) != 2:
        raise MustacheError(f"Invalid tags: {','.join(tags)}")
    opening, closing = tags
    return (
        re.compile(re.escape(opening) + r"\s*"),
        re.compile(r"\s*" + re.escape(closing)),
        re.compile(r"\s*" + re.escape("}" + closing)),
    )


@functools.lru_cache(maxsize=64)
def parse(template: str) -> Template:
    """Parse as mustache.js does, standalone lines and all; :class:`MustacheError` when it does not."""
    if not template:
        return Template((), frozenset())
    # Flat tokens first, as mustache.js keeps them: [kind, value] with kind "text" (one character),
    # or a tag's symbol. Whitespace-only lines holding only section/comment/partial/delimiter tags
    # ("standalone") lose their whitespace and line break.
    tokens: list[list[Any] | None] = []
    sections: list[str] = []
    spaces: list[int] = []
    has_tag = False
    non_space = False

    def strip_space() -> None:
        nonlocal has_tag, non_space, spaces
        if has_tag and not non_space:
            for index in spaces:
                tokens[index] = None
        spaces = []
        has_tag = False
        non_space = False

    opening, closing, closing_curly = _tag_patterns(["{{", "}}"])
    scanner = _Scanner(template)
    while not scanner.eos():
        for char in scanner.scan_until(opening):
            if char.isspace():
                spaces.append(len(tokens))
            else:
                non_space = True
            tokens.append(["text", char])
            if char == "\n":
                strip_space()
        start = scanner.pos
        if not scanner.scan(opening):
            break
        has_tag = True
        kind = scanner.scan(_TAG_TYPE) or "name"
        scanner.scan(_WHITE)
        if kind == "=":
            value = scanner.scan_until(_EQUALS)
            scanner.scan(_EQUALS)
            scanner.scan_until(closing)
        elif kind == "{":
            value = scanner.scan_until(closing_curly)
            scanner.scan(_CURLY)
            scanner.scan_until(closing)
            kind = "&"
        else:
            value = scanner.scan_until(closing)
        if not scanner.scan(closing):
            raise MustacheError(f"Unclosed tag at {scanner.pos}")
        tokens.append([kind, value])
        if kind in ("#", "^"):
            sections.append(value)
        elif kind == "/":
            if not sections:
                raise MustacheError(f'Unopened section "{value}" at {start}')
            opened = sections.pop()
            if opened != value:
                raise MustacheError(f'Unclosed section "{opened}" at {start}')
        elif kind in ("name", "&"):
            non_space = True
        elif kind == "=":
            opening, closing, closing_curly = _tag_patterns(value)
    strip_space()
    if sections:
        raise MustacheError(f'Unclosed section "{sections[-1]}" at {scanner.pos}')
    return _nest(token for token in tokens if token is not None)


def _nest(flat: Any) -> Template:
    """Adjacent text joined, sections nested."""
    names: set[str] = set()
    root: list[Any] = []
    collector = root
    stack: list[tuple[list[Any], str, bool, list[Any]]] = []  # (outer collector, name, inverted, children)
    text: list[str] = []

    def flush() -> None:
        if text:
            collector.append("".join(text))
            text.clear()

    for kind, value in flat:
        if kind == "text":
            text.append(value)
            continue
        flush()
        if kind in ("#", "^"):
            names.add(value)
            children: list[Any] = []
            stack.append((collector, value, kind == "^", children))
            collector = children
        elif kind == "/":
            outer, name, inverted, children = stack.pop()
            outer.append(Section(name, inverted, tuple(children)))
            collector = outer
        elif kind in ("name", "&"):
            names.add(value)
            collector.append(_Value(value, kind == "name"))
        # "!" comments, "=" delimiter changes and ">" partials render nothing
    flush()
    return Template(tuple(root), frozenset(names))


# ---- rendering (mustache.js's Context and Writer) ------------------------------------------------

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "/": "&#x2F;", "`": "&#x60;",
             "=": "&#x3D;"}
_HTML_SPECIAL = re.compile(r"[&<>\"'`=/]")


def escape_html(text: str) -> str:
    return _HTML_SPECIAL.sub(lambda match: _ENTITIES[match.group()], text)


def _lookup(stack: list[Any], name: str) -> Any:
    """mustache.js's ``Context.lookup``: innermost view first; a dotted name is walked whole in each
    view, and counts as found there when its last step exists."""
    if name == ".":
        return stack[-1]
    dotted = name.find(".") > 0
    keys = name.split(".") if dotted else ()
    for view in reversed(stack):
        if dotted:
            value = view
            for index, key in enumerate(keys):
                if value is None or value is UNDEFINED:
                    break
                if attrs.has(type(value)):
                    value = unstructure(value)
                if index == len(keys) - 1 and _has(value, key):
                    return _get(value, key)
                value = _get(value, key)
        elif _is_object(view):
            if attrs.has(type(view)):
                view = unstructure(view)
            if _has(view, name):
                return _get(view, name)
    return UNDEFINED


def render(
    template: Template,
    view: Any,
    missing: Callable[[str], Any],
    escape_root_strings: bool = False,
) -> str:
    """``template`` with ``view`` (the message, as a mapping). A name found in no view is
    ``missing(name)``. With ``escape_root_strings``, text found outside sections has its backslashes,
    line breaks, tabs, form feeds and backspaces escaped as in a JSON string (Node-RED does this for
    JSON output; inside sections it does not)."""
    out: list[str] = []

    def lookup(stack: list[Any], name: str) -> Any:
        value = _lookup(stack, name)
        if value is UNDEFINED:
            return missing(name)
        if escape_root_strings and len(stack) == 1 and isinstance(value, str):
            return _json_escape(value)
        return value

    def walk(tokens: tuple[Any, ...], stack: list[Any]) -> None:
        for token in tokens:
            if type(token) is str:
                out.append(token)
            elif type(token) is _Value:
                value = lookup(stack, token.name)
                if value is None or value is UNDEFINED:
                    continue
                if token.escaped and not (isinstance(value, int | float) and not isinstance(value, bool)):
                    out.append(escape_html(to_string(value)))
                else:
                    out.append(to_string(value))
            else:
                value = lookup(stack, token.name)
                if token.inverted:
                    if not truthy(value) or (isinstance(value, list | tuple) and not value):
                        walk(token.children, stack)
                elif not truthy(value):
                    continue
                elif isinstance(value, list | tuple):
                    for item in value:
                        walk(token.children, [*stack, item])
                elif value is True:
                    walk(token.children, stack)
                else:  # an object, a string or a number becomes the innermost view
                    walk(token.children, [*stack, value])

    walk(template.tokens, [view])
    return "".join(out)


_JSON_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\f": "\\f", "\b": "\\b"})


def _json_escape(text: str) -> str:
    return text.translate(_JSON_ESCAPES)
