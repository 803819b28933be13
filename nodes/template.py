"""``template``: sets a message property (or a flow or global context value) from a template, as
Node-RED's node of the same name.

Node-RED 4's properties: ``template`` (the text), ``syntax`` ``mustache`` (rendered with the message as
its view, mustache.js's way: see :mod:`evflow.nodes._mustache`) or ``plain`` (used as it is),
``output`` ``str`` (the text), ``json`` (the text parsed as JSON) or ``yaml`` (parsed as YAML), and
where the result goes: ``field`` of ``fieldType`` ``msg`` (a property expression), ``flow`` or
``global`` (a context key; the message then goes on unchanged). ``format`` is the editor's syntax
highlighting, accepted and ignored.

Mustache names are looked up in the message first (``{{payload.a}}``, ``{{topic}}``, ``{{_msgid}}``);
then ``{{flow.x}}`` and ``{{global.x}}`` (also ``{{flow[memory].x}}``) read the context stores,
``{{env.NAME}}`` an environment variable (Node-RED's ``NR_NODE_ID`` and the like included), and any
other name is the empty string. ``{{x}}`` escapes HTML as mustache.js does, ``{{{x}}}`` and ``{{&x}}``
do not. For JSON output, text values found outside sections have backslashes, line breaks and tabs
escaped as in a JSON string, so ``{"a": "{{payload}}"}`` stays valid JSON (Node-RED does this only
outside sections, and so does evflow).

An empty ``template`` takes the message's ``msg.template`` instead, as in Node-RED. The node's own
template is parsed when the flow is loaded: one that does not parse is a validation error (Node-RED
would fail each message). A rendering or parsing failure fails the message (routed to ``catch``).

Not supported: context stores other than the memory store (evflow has only that one). YAML output
needs PyYAML; it is read as js-yaml reads it (YAML 1.2: only ``true``/``false`` are booleans, ``010``
is ten, ``12:30`` is text, a timestamp becomes the ISO text a JavaScript Date is sent as).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import attrs

from evflow.runtime.nodeapi import (
    ConfigWarning,
    Message,
    Node,
    PropertyError,
    parse_property,
    set_property,
)
from evflow.runtime.typedinput import env_text

from ._jsvalues import json_parse, type_of
from ._mustache import MustacheError, parse, render
from ._mustache import Template as MustacheTemplate
from .debug import whole_message


def _blank_is(default: str) -> Callable[[str], str]:
    """Node-RED reads an empty setting as its default (``n.field || "payload"``)."""
    return lambda value: value or default


@attrs.frozen(kw_only=True)
class TemplateConfig:
    # where the result goes: a message property expression, or a context key (see fieldType)
    field: str = attrs.field(default="payload", converter=_blank_is("payload"))
    # "msg", "flow" or "global"
    fieldType: str = attrs.field(default="msg", converter=_blank_is("msg"))
    # the editor's syntax highlighting (handlebars, html, json, yaml, text…): ignored
    format: str = "handlebars"
    # "mustache": render the template; "plain": use it as it is
    syntax: str = attrs.field(default="mustache", converter=_blank_is("mustache"))
    # the template; empty: the message's msg.template
    template: str = ""
    # "str": the text; "json": the text parsed as JSON; "yaml": parsed as YAML (needs PyYAML)
    output: str = attrs.field(default="str", converter=_blank_is("str"))


_CONTEXT_NAME = re.compile(r"(flow|global)(\[(\w+)\])?\.(.+)", re.DOTALL)
_STORE_KEY = re.compile(r"#:\((\S+?)\)::(.*)", re.DOTALL)
_MEMORY_STORES = ("memory", "default")


def _context_name(name: str) -> tuple[str, str] | None:
    """``flow.x`` or ``global[store].x`` as (scope, key); None for any other name."""
    match = _CONTEXT_NAME.match(name)
    if match is None:
        return None
    store = match.group(3)
    if store is not None and store not in _MEMORY_STORES:
        raise ValueError(f"context store {store!r} in {{{{{name}}}}} is not available: "
                         "evflow has only the memory store")
    return match.group(1), match.group(4)


def _check_names(template: MustacheTemplate) -> None:
    for name in template.names:
        scope_key = _context_name(name)
        if scope_key is not None:
            try:
                parse_property(scope_key[1])
            except PropertyError as exc:
                raise ValueError(f"in {{{{{name}}}}}: {exc}") from None


class Template(Node[TemplateConfig]):
    """Sets ``field`` from ``template``: see the module docstring."""

    type = "template"
    Config = TemplateConfig
    inline = True

    def __init__(self, context: Any, config: TemplateConfig) -> None:
        super().__init__(context, config)
        self._parsed = parse(config.template) if config.syntax == "mustache" and config.template else None
        self._convert = _OUTPUTS[config.output]()
        if config.fieldType == "msg":
            self._field_parts = parse_property(config.field)
        else:
            self._context_key = _store_key(config.field)
            self._store = context.flow if config.fieldType == "flow" else context.global_context

    @classmethod
    def check(cls, config: TemplateConfig) -> list[ConfigWarning]:
        if config.syntax not in ("mustache", "plain"):
            raise ValueError(f"syntax must be 'mustache' or 'plain', got {config.syntax!r} @ $.syntax")
        if config.output not in _OUTPUTS:
            raise ValueError(f"output must be 'str', 'json' or 'yaml', got {config.output!r} @ $.output")
        if config.output == "yaml":
            try:
                _OUTPUTS["yaml"]()
            except ImportError:
                raise ValueError("YAML output needs PyYAML, which is not installed (pip install pyyaml) "
                                 "@ $.output") from None
        if config.fieldType == "msg":
            try:
                parse_property(config.field)
            except PropertyError as exc:
                raise ValueError(f"{exc} @ $.field") from None
        elif config.fieldType in ("flow", "global"):
            try:
                parse_property(_store_key(config.field))
            except (PropertyError, ValueError) as exc:
                raise ValueError(f"{exc} @ $.field") from None
        else:
            raise ValueError(f"fieldType must be 'msg', 'flow' or 'global', got {config.fieldType!r} @ $.fieldType")
        if config.syntax == "mustache" and config.template:
            try:
                _check_names(parse(config.template))
            except (MustacheError, ValueError) as exc:
                raise ValueError(f"the template does not parse: {exc} @ $.template") from None
        return []

    async def receive(self, msg: Message) -> None:
        config = self.config
        template: Any = config.template
        parsed = self._parsed
        if not template and "template" in msg.props:
            template = msg.props["template"]
            parsed = None
        if config.syntax == "mustache":
            if parsed is None:
                if not isinstance(template, str):
                    given = "array" if isinstance(template, list | tuple) else type_of(template)
                    raise TypeError(f'Invalid template! Template should be a "string" but "{given}" was given as '
                                    "the first argument for mustache#render(template, view, partials)")
                parsed = parse(template)
                _check_names(parsed)
            value: Any = render(parsed, whole_message(msg), self._outside_message, config.output == "json")
        else:
            value = template
        value = self._convert(value)
        if config.fieldType == "msg":
            await self.send(set_property(msg, self._field_parts, value))
        else:
            self._store.set(self._context_key, value)
            await self.send(msg)

    def _outside_message(self, name: str) -> Any:
        """A name the message does not have: env.X, flow.x, global.x, else the empty string."""
        if name.startswith("env.") and len(name) > 4:
            return env_text(name[4:], self.context)
        scope_key = _context_name(name)
        if scope_key is None:
            return ""
        scope, key = scope_key
        store = self.context.flow if scope == "flow" else self.context.global_context
        return store.get(key)


def _store_key(field: str) -> str:
    """A context key as the editor writes it, ``#:(store)::key`` or ``key``."""
    match = _STORE_KEY.fullmatch(field)
    if match is None:
        return field
    if match.group(1) not in _MEMORY_STORES:
        raise ValueError(f"context store {match.group(1)!r} is not available: evflow has only the memory store")
    return match.group(2)


# ---- output formats ----------------------------------------------------------------------------


def _as_text() -> Callable[[Any], Any]:
    return lambda value: value


def _as_json() -> Callable[[Any], Any]:
    return json_parse  # fails with V8's words, as Node-RED's message does


def _as_yaml() -> Callable[[Any], Any]:
    """YAML read as js-yaml (YAML 1.2's core schema) reads it; ImportError without PyYAML."""
    import yaml  # only flows with YAML output need PyYAML

    class Loader(yaml.SafeLoader):
        pass

    # YAML 1.1's implicit types that YAML 1.2 (js-yaml) reads as text: yes/no/on/off, 0-prefixed
    # octal, 1_000 and 12:30 (sexagesimal) numbers. The remaining resolvers are YAML 1.2's.
    replaced = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    Loader.yaml_implicit_resolvers = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in replaced]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                   r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))

    def construct_int(loader: Any, node: Any) -> int:
        text = loader.construct_scalar(node)
        if text.startswith(("0o", "0x")):
            return int(text, 0)
        return int(text, 10)

    def construct_timestamp(loader: Any, node: Any) -> str:
        value = yaml.SafeLoader.construct_yaml_timestamp(loader, node)
        if not isinstance(value, datetime.datetime):
            value = datetime.datetime(value.year, value.month, value.day)
        if value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"

    Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    Loader.add_constructor("tag:yaml.org,2002:timestamp", construct_timestamp)

    def convert(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return yaml.load(value, Loader=Loader)  # a SafeLoader: no arbitrary objects
        except yaml.YAMLError as exc:
            raise ValueError(f"the rendered template is not YAML: {exc}") from None

    return convert


_OUTPUTS: dict[str, Callable[[], Callable[[Any], Any]]] = {"str": _as_text, "json": _as_json, "yaml": _as_yaml}
