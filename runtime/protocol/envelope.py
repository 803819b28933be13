"""Request envelopes out, replies in.

A request is ``{"headers": {"replyTo": topic}, "payload": ...}``; the reply is published bare to
``replyTo``, with no correlation id. The reply decoders accept both what EVerest's document says and
what its implementation sends (SPEC.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..codec import CodecError, decode_json, dump_json, load_json, structure, unstructure

T = TypeVar("T")


def encode_request(payload: Any, reply_to: str | None) -> bytes:
    """The request message; ``payload`` is a typed value or plain JSON data.

    Without ``reply_to`` EVerest accepts the request but sends no reply.
    """
    envelope: dict[str, Any] = {"payload": unstructure(payload)}
    if reply_to is not None:
        envelope["headers"] = {"replyTo": reply_to}
    return dump_json(envelope)


def decode_bool_reply(data: bytes) -> bool:
    """A JSON boolean. (EVerest publishes it twice; the correlation table drops the second copy.)"""
    value = load_json(data)
    if type(value) is not bool:
        raise CodecError([f"expected a boolean, got {data[:40]!r} @ $"])
    return value


def object_reply_decoder(cls: type[T]) -> Callable[[bytes], T]:
    """A JSON object structured to ``cls``; unknown keys are ignored."""

    def decode_object_reply(data: bytes) -> T:
        return decode_json(data, cls)

    decode_object_reply.__qualname__ = f"decode_{cls.__name__}"
    return decode_object_reply


def decode_path_reply(data: bytes) -> str | None:
    """A filesystem path: a JSON string (the document) or the raw text (EVerest's implementation).

    An empty payload, which EVerest sends when nothing of the asked type is installed, is ``None``.
    A raw path never starts with a quote, so a leading ``"`` tells the JSON form apart.
    """
    if not data:
        return None
    if data[:1] == b'"':
        value = load_json(data)
        if type(value) is not str:  # e.g. '"a" "b"' is not JSON; load_json raised already
            raise CodecError(["expected a string @ $"])
    else:
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError(["invalid UTF-8 @ $"]) from None
    if "\0" in value:
        raise CodecError(["a path must not contain NUL @ $"])
    return value or None


NO_PAYLOAD: Any = object()  # an envelope without "payload" (EVerest leaves out an empty one)


def read_envelope(data: bytes) -> tuple[str | None, Any]:
    """``(replyTo or None, plain payload or NO_PAYLOAD)`` of a request envelope, either way round (the
    client's requests to EVerest, EVerest's questions to the client); :class:`CodecError` for what
    does not decode."""
    envelope = load_json(data)
    if type(envelope) is not dict:
        raise CodecError(["expected an object {headers, payload} @ $"])
    headers = envelope.get("headers", {})
    if type(headers) is not dict:
        raise CodecError(["expected an object @ $.headers"])
    reply_to = headers.get("replyTo")
    if reply_to is not None and type(reply_to) is not str:
        raise CodecError(["expected a string @ $.headers.replyTo"])
    return reply_to, envelope.get("payload", NO_PAYLOAD)


def decode_request(data: bytes, request_type: type[T]) -> tuple[str | None, T]:
    """The EVerest side of :func:`encode_request`: ``(replyTo or None, typed payload)``.

    Raises :class:`CodecError` for anything EVerest could not decode (it would not answer those).
    """
    reply_to, payload = read_envelope(data)
    if payload is NO_PAYLOAD:
        raise CodecError(["required key missing @ $.payload"])
    return reply_to, structure(payload, request_type, "$.payload")
