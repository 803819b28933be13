"""``json``: Node-RED's JSON node — converts a property between a JSON text and its value.

Implements Node-RED 4's json node (``70-JSON.js``): a text or Buffer (UTF-8) is parsed
(``action`` "" or ``"obj"``), anything else — object, array, number, boolean, null — becomes its
JSON text (``action`` "" or ``"str"``, indented by 4 with ``pretty``), as JavaScript's
``JSON.parse``/``JSON.stringify`` do (:mod:`._jsvalues`): numbers written ``1e-7``, an object's
array-index keys first, a Buffer as ``{"type":"Buffer","data":[…]}``. A value that already is what
``action`` asks for passes unchanged, and so does a message without the property. A text that is
not JSON fails the message with V8's error message (``Unexpected token 'a', "abc" is not valid
JSON``), as Node-RED reports it.

Not implemented: validation against a JSON schema in ``msg.schema`` (Node-RED uses ajv); a
message carrying one fails with a message saying so, rather than passing unvalidated.
"""

from __future__ import annotations

from typing import Any

import attrs

from evflow.runtime.message import Message
from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseBool,
    Node,
    PropertyError,
    get_property,
    one_of,
    parse_property,
    set_property,
)

from ._jsvalues import json_parse, json_stringify, truthy


@attrs.frozen(kw_only=True)
class JsonConfig:
    # the msg property to convert (empty: payload)
    property: str = "payload"
    # "": convert either way; "str": always to a JSON text; "obj": always to a value
    action: str = attrs.field(default="", validator=one_of("", "str", "obj"))
    # indent the JSON text (4 spaces)
    pretty: LooseBool = False


class Json(Node[JsonConfig]):
    """Converts ``property`` (``payload`` by default) between a JSON text and its value.

    A text (or Buffer) is parsed into its value; an object, array, number, boolean or null becomes
    its JSON text (indented with ``pretty``). ``action: "str"`` only ever makes texts, ``"obj"``
    only values: a property that already is one passes unchanged, as does a message without the
    property. A text that is not JSON fails the message (``catch`` gets JavaScript's error text).
    """

    type = "json"
    Config = JsonConfig
    inline = True

    def __init__(self, context: Any, config: JsonConfig) -> None:
        super().__init__(context, config)
        self._parts = parse_property(config.property or "payload")
        self._indent = 4 if config.pretty else 0
        self._to_value = config.action in ("", "obj")
        self._to_text = config.action in ("", "str")

    @classmethod
    def check(cls, config: JsonConfig) -> list[ConfigWarning]:
        try:
            parse_property(config.property or "payload")
        except PropertyError as exc:
            raise ValueError(f"{exc} @ $.property") from None
        return []

    async def receive(self, msg: Message) -> None:
        if msg.props and truthy(msg.props.get("schema", UNDEFINED)):
            raise ValueError("JSON Schema validation (msg.schema) is not supported by evflow")
        value = get_property(msg, self._parts)
        if value is UNDEFINED:
            await self.send(msg)
            return
        if isinstance(value, str | bytes | bytearray):
            if self._to_value:
                msg = set_property(msg, self._parts, json_parse(value))
        elif self._to_text:
            try:
                text = json_stringify(value, self._indent)
            except TypeError:
                raise ValueError("Failed to convert payload") from None
            msg = set_property(msg, self._parts, text)
        await self.send(msg)
