"""An AsyncAPI 3.0 document of EVerest as a table of operations, each of one of four kinds.

EVerest's documents pair every exchange with a reply: the side that asks has an operation with a
``reply`` (its request channel, and a reply channel without an address, answered on the request's
``headers.replyTo``); the reply channel has an operation of its own, which is the same exchange seen
from the other end and needs no node of its own. What is left are four kinds, seen from the client
(evflow's side):

* ``request``: ``send`` with a reply: the client asks EVerest (``is_ca_certificate_installed``);
* ``send``: a variable the client publishes to EVerest (``powermeter_values``);
* ``receive``: a variable EVerest publishes (``session_event``);
* ``handler``: ``receive`` with a reply: EVerest asks the client (``start_transaction``).

EVerest's heartbeat and communication check, in every document, are taken by the ``heartbeat`` and
``keepalive`` nodes, which work for any API.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .documents import DocumentError, DocumentSet, Location
from .schemas import Constraint, TypeBuilder

__all__ = ["ApiDescription", "ApiOperation", "MessageShape", "OperationKind", "describe_api"]

_STANDARD_PATHNAME = re.compile(r"everest_api/(\d+)/([^/{}+#]+)/\{module_id\}")
LIVENESS = {"e2m/heartbeat": "heartbeat", "m2e/communication_check": "keepalive"}


class OperationKind(enum.StrEnum):
    REQUEST = "request"
    SEND = "send"
    RECEIVE = "receive"
    HANDLER = "handler"


@attrs.frozen
class MessageShape:
    """One message's payload: its Python type, its schema (for ``evflow schema``), a check for
    what a type cannot say about a scalar (``maximum``: the type is ``int``), and its examples."""

    type: Any
    schema: Any
    check: Constraint | None = None
    examples: tuple[Any, ...] = ()
    # where `schema` is written: its $refs are relative to that file
    location: Location | None = None


@attrs.frozen
class ApiOperation:
    """One node type's worth of an API: ``id`` is the document's operation name."""

    id: str
    kind: OperationKind
    # The channel's address below the server's pathname: "m2e/powermeter_values", "Cert/{telemetry_id}/status".
    address: str
    title: str
    description: str
    # What goes out (request, send) or comes in (receive, handler); None for a request without payload.
    payload: MessageShape | None
    # The answer: EVerest's (request) or the flow's (handler).
    reply: MessageShape | None = None
    # {name} parts of the address (a receive subscribes with `+` for each).
    parameters: tuple[str, ...] = ()
    # A handler's: the document's operation that sends its reply (`send_reply_start_transaction`).
    reply_id: str | None = None

    @property
    def name(self) -> str:
        """The address below its direction: what EVerest calls the operation (``start_transaction``,
        ``session_info/get``: several operations of an API may end in the same level)."""
        direction, slash, rest = self.address.partition("/")
        return rest if slash and direction in ("m2e", "e2m") else self.address


@attrs.frozen
class ApiDescription:
    name: str
    version: str
    # everest_api/{topic_version}/{name}/{module_id} for every API but the entrypoint and telemetry
    pathname: str
    topic_version: int | None
    title: str
    description: str
    path: Path
    operations: Mapping[str, ApiOperation]
    # Operations not made into node types, and why (the liveness pair, orphan reply channels).
    left_out: Mapping[str, str]


def _text(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def describe_api(documents: DocumentSet, path: Path, builder: TypeBuilder, name_hint: str) -> ApiDescription:
    """Read the document at ``path``: its operations with their types made by ``builder``."""
    root = Location(path.resolve())
    document = documents.read(path)
    version = str(document.get("asyncapi", ""))
    if not version.startswith("3."):
        raise DocumentError(f"{root}: not an AsyncAPI 3 document (asyncapi: {version or 'missing'})")
    info = document.get("info") or {}
    if not isinstance(info, dict):
        raise DocumentError(f"{root.child('info')}: expected a mapping")
    pathname, topic_version, api_name = _pathname(document, root, name_hint)
    operations: dict[str, ApiOperation] = {}
    left_out: dict[str, str] = {}
    channel_of: dict[str, str] = {}  # operation id → its channel's pointer, to pair handlers with their replies
    reply_channel_of: dict[str, str] = {}
    raw_operations = document.get("operations") or {}
    if not isinstance(raw_operations, dict):
        raise DocumentError(f"{root.child('operations')}: expected a mapping")
    for op_id, raw in raw_operations.items():
        where = root.child("operations", op_id)
        if not isinstance(raw, dict):
            raise DocumentError(f"{where}: expected a mapping")
        action = raw.get("action")
        if action not in ("send", "receive"):
            raise DocumentError(f"{where.child('action')}: expected send or receive, got {action!r}")
        channel, channel_where = _follow(documents, raw.get("channel"), where.child("channel"))
        channel_of[op_id] = str(channel_where)
        address = channel.get("address")
        if address is None:
            left_out[op_id] = "the reply half of an exchange (no address of its own)"
            continue
        if not isinstance(address, str) or not address:
            raise DocumentError(f"{channel_where.child('address')}: expected a topic, got {address!r}")
        if address in LIVENESS:
            left_out[op_id] = f"EVerest's liveness: use the {LIVENESS[address]} node"
            continue
        message, message_where = _message(documents, channel, channel_where)
        reply_spec = raw.get("reply")
        if reply_spec is not None and topic_version is None:
            # Requests and questions go over an API module's own topics (everest_api/<v>/<api>/<module>);
            # the entrypoint's discovery has replies from every module at once: `evflow discover`.
            left_out[op_id] = ("a request outside everest_api/<version>/<api>/<module_id>: use evflow discover, "
                               "or discover: true on an everest-api node")
            continue
        hint = _hint(op_id)
        if reply_spec is not None:
            if not isinstance(reply_spec, dict):
                raise DocumentError(f"{where.child('reply')}: expected a mapping with a channel")
            reply_channel, reply_where = _follow(documents, reply_spec.get("channel"), where.child("reply", "channel"))
            reply_channel_of[op_id] = str(reply_where)
            reply_message, reply_message_where = _message(documents, reply_channel, reply_where)
            payload = _request_payload(builder, message, message_where, hint)
            reply = _shape(builder, reply_message, reply_message_where, f"{hint}Reply")
            if reply is None:
                raise DocumentError(f"{reply_message_where}: a reply must have a payload schema")
            kind = OperationKind.REQUEST if action == "send" else OperationKind.HANDLER
        else:
            payload = _shape(builder, message, message_where, hint)
            reply = None
            kind = OperationKind.SEND if action == "send" else OperationKind.RECEIVE
        operations[op_id] = ApiOperation(
            id=op_id, kind=kind, address=address,
            title=_text(raw.get("title")) or _text(raw.get("summary")),
            description=_text(raw.get("description")) or _text(message.get("summary")),
            payload=payload, reply=reply, parameters=tuple(re.findall(r"\{([^}]+)\}", address)),
        )
    for op_id, reply_channel in reply_channel_of.items():
        answering = [other for other, channel in channel_of.items() if channel == reply_channel and other != op_id]
        if answering and operations[op_id].kind is OperationKind.HANDLER:
            operations[op_id] = attrs.evolve(operations[op_id], reply_id=answering[0])
    return ApiDescription(
        name=api_name, version=str(info.get("version", "")), pathname=pathname, topic_version=topic_version,
        title=_text(info.get("title")), description=_text(info.get("description")), path=root.path,
        operations=operations, left_out=left_out,
    )


def _hint(op_id: str) -> str:
    for prefix in ("send_request_", "receive_request_", "send_", "receive_"):
        if op_id.startswith(prefix):
            return op_id[len(prefix):]
    return op_id


def _pathname(document: Mapping[str, Any], root: Location, name_hint: str) -> tuple[str, int | None, str]:
    servers = document.get("servers") or {}
    pathnames = {s.get("pathname") for s in servers.values() if isinstance(s, dict)} if isinstance(servers, dict) else set()
    pathnames.discard(None)
    if len(pathnames) != 1:
        raise DocumentError(f"{root.child('servers')}: expected one server pathname, found {sorted(map(str, pathnames))}")
    pathname = str(pathnames.pop()).strip("/")
    match = _STANDARD_PATHNAME.fullmatch(pathname)
    if match:
        return pathname, int(match.group(1)), match.group(2)
    return pathname, None, name_hint


def _follow(documents: DocumentSet, value: Any, where: Location) -> tuple[dict[str, Any], Location]:
    if isinstance(value, dict) and "$ref" in value:
        target, target_where = documents.resolve(value["$ref"], where.child("$ref"))
    else:
        target, target_where = value, where
    if not isinstance(target, dict):
        raise DocumentError(f"{where}: expected a mapping or a $ref to one")
    return target, target_where


def _message(documents: DocumentSet, channel: Mapping[str, Any], where: Location) -> tuple[dict[str, Any], Location]:
    messages = channel.get("messages")
    if not isinstance(messages, dict) or len(messages) != 1:
        count = len(messages) if isinstance(messages, dict) else 0
        raise DocumentError(f"{where.child('messages')}: expected exactly one message, found {count}")
    (key, value), = messages.items()
    return _follow(documents, value, where.child("messages", key))


def _examples(message: Mapping[str, Any]) -> tuple[Any, ...]:
    examples = message.get("examples") or []
    if not isinstance(examples, list):
        return ()  # examples are documentation: a malformed list only means there are none to use
    return tuple(e["payload"] for e in examples if isinstance(e, dict) and "payload" in e)


def _shape(builder: TypeBuilder, message: Mapping[str, Any], where: Location, hint: str) -> MessageShape | None:
    """None for a message without a payload (EVerest sends and expects an empty one: ``cp_state_X1``)."""
    if "payload" not in message:
        return None
    schema = message["payload"]
    payload_type = builder.type_of(schema, where.child("payload"), hint)
    return MessageShape(payload_type, schema, _scalar_check(builder, schema, where.child("payload")), _examples(message),
                        where.child("payload"))


def _scalar_check(builder: TypeBuilder, schema: Any, where: Location) -> Constraint | None:
    """A top-level schema's own ranges (an attrs class checks its fields itself)."""
    return builder.constraint_for(schema, where)


def _request_payload(builder: TypeBuilder, message: Mapping[str, Any], where: Location, hint: str) -> MessageShape | None:
    """A request's message is the envelope ``{"headers": {"replyTo": …}, "payload": …}``: the type
    is that of its ``payload`` (None when the envelope has none, as the entrypoint's discover)."""
    envelope = message.get("payload")
    envelope_where = where.child("payload")
    while isinstance(envelope, dict) and "$ref" in envelope:
        envelope, envelope_where = builder.documents.resolve(envelope["$ref"], envelope_where.child("$ref"))
    if not isinstance(envelope, dict) or "headers" not in (envelope.get("properties") or {}):
        raise DocumentError(f"{envelope_where}: a request's message must be an envelope object with headers.replyTo")
    inner = envelope["properties"].get("payload")
    if inner is None:
        return None
    inner_where = envelope_where.child("properties", "payload")
    examples = tuple(e["payload"] for e in _examples(message) if isinstance(e, dict) and "payload" in e)
    return MessageShape(builder.type_of(inner, inner_where, hint), inner, _scalar_check(builder, inner, inner_where),
                        examples, inner_where)
