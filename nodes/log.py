"""``log``: writes a line to evflow's log for each message, secrets redacted."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from typing import Any

import attrs

from evflow.runtime.codec import FieldValueError
from evflow.runtime.nodeapi import ConfigWarning, Message, Node

from ._paths import PropertyPath, check_path
from ._redact import REDACTED, is_secret_path, show, show_text


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


_LEVELS = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARNING: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}

# A piece of a parsed template: literal text, or a function of the message giving text.
Piece = str | Callable[[Message], str]


def parse_template(template: str, field: str = "message") -> tuple[Piece, ...]:
    """``"cert {payload.status}"`` as pieces; ``{{`` and ``}}`` stand for braces. Nothing in a
    placeholder is executed: it is a property path, no format spec, no conversion."""
    pieces: list[Piece] = []
    literal: list[str] = []
    position, end = 0, len(template)
    while position < end:
        char = template[position]
        if char in "{}" and template.startswith(char * 2, position):
            literal.append(char)
            position += 2
        elif char == "}":
            raise FieldValueError(field, f"a lone '}}' at character {position + 1}: write '}}}}' for a brace")
        elif char == "{":
            close = template.find("}", position + 1)
            if close < 0:
                raise FieldValueError(
                    field, f"'{{' at character {position + 1} is not closed: write '{{{{' for a brace"
                )
            path = check_path(field, template[position + 1 : close])
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(_text_of(path))
            position = close + 1
        else:
            literal.append(char)
            position += 1
    if literal:
        pieces.append("".join(literal))
    return tuple(pieces)


def _text_of(path: PropertyPath) -> Callable[[Message], str]:
    if is_secret_path(path):
        return lambda msg: REDACTED
    get = path.get
    return lambda msg: show_text(get(msg))


def _json_of(path: PropertyPath) -> Callable[[Message], str]:
    if is_secret_path(path):
        return lambda msg: REDACTED
    get = path.get
    return lambda msg: show(get(msg))


def _template(_instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    parse_template(value, attribute.name)


def _paths(_instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for index, text in enumerate(value):
        check_path(f"{attribute.name}[{index}]", text)


@attrs.frozen(kw_only=True)
class LogConfig:
    # log level of the lines: debug, info, warning or error
    level: LogLevel = LogLevel.INFO
    # the line; each {property.path} is replaced by that property's value, {{ and }} are braces
    message: str = attrs.field(default="{payload}", validator=_template)
    # property paths appended to the line as path=value (values as JSON)
    fields: tuple[str, ...] = attrs.field(default=(), validator=_paths)


class Log(Node[LogConfig]):
    """Logs a line per message from a template, secrets always redacted; no output port.

    The line goes to evflow's log (logger ``evflow.node.log``, prefixed with the node's name or id)
    at ``level`` (``info`` by default).

    ``message`` is a template (default ``"{payload}"``): each ``{path}`` is a property path as in
    ``filter`` (``{payload.status}``, ``{payload.info.ocsp.0.ocsp_path}``, ``{topic}``), replaced by
    its value — a string as itself, anything else as compact JSON (typed payloads in their JSON form),
    ``<missing>`` for a property that is not there; ``{{`` and ``}}`` are literal braces. Nothing is
    evaluated. ``fields`` lists property paths appended as ``path=value``, values always as JSON.

    Secrets are always redacted: the value of every key named ``password``, ``passphrase``,
    ``secret``, ``token`` or ``key_password`` (any case, at any depth, e.g. ``info.password`` of a
    ``GetCertificateInfoResult``) shows as ``"***"``, and so does a path through such a key.

    No output port: the log is where messages end. To log messages and go on with them, wire the
    node before it to both ``log`` and the next node, as in Node-RED. Nothing is formatted when the
    level is off.
    """

    type = "log"
    Config = LogConfig
    inline = True

    def __init__(self, context: Any, config: LogConfig) -> None:
        super().__init__(context, config)
        self._level = _LEVELS[config.level]
        pieces = list(parse_template(config.message))
        for text in config.fields:
            path = PropertyPath.parse(text)
            pieces.append(f" {path.text}=")
            pieces.append(_json_of(path))
        self._pieces = tuple(pieces)
        self._log = context.log

    @classmethod
    def outputs(cls, config: LogConfig) -> int:
        return 0

    @classmethod
    def check(cls, config: LogConfig) -> list[ConfigWarning]:
        if not config.message and not config.fields:
            raise ValueError("nothing to log: the message is empty and there are no fields @ $.message")
        return []

    def line(self, msg: Message) -> str:
        return "".join(piece if type(piece) is str else piece(msg) for piece in self._pieces)  # type: ignore[operator]

    async def receive(self, msg: Message) -> None:
        if self._log.isEnabledFor(self._level):
            self._log.log(self._level, "%s", self.line(msg))
