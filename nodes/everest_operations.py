"""Node types made at run time from an EVerest API's AsyncAPI document, one per operation.

``<api>/<operation>``, named after the document's operations:

* a **request** (``send_request_*``: the flow asks EVerest): input → port 0 the typed reply, port 1
  the failures (timeout, not connected, invalid request or reply), as the evse_security request nodes;
* a **send** (``send_*``: a variable the flow publishes): input → published, after its payload was
  checked against the document's schema (a payload that breaks it fails the message, not the flow);
* a **receive** (``receive_*``: a variable EVerest publishes): a source of typed values;
* a **question** (``receive_request_*``: EVerest asks the flow) and its **answer** node (the document's
  ``send_reply_*``), as Node-RED's ``http in`` and ``http response``: the question node emits EVerest's
  request with the question on ``msg.meta["everest_question"]``; the answer node sends ``msg.payload``
  to EVerest's ``replyTo``. A question left unanswered for ``timeout`` seconds is answered with
  ``default_reply`` (``unanswered: reply``) or reported (``unanswered: report``), before EVerest's own
  timeout makes it go on with a default of its own.

Every class is written with the public node API, as a plugin's would be.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import attrs
import trio

from evflow.runtime.asyncapi.catalogue import LoadedApi, check_payload
from evflow.runtime.asyncapi.model import ApiOperation, MessageShape, OperationKind
from evflow.runtime.asyncapi.schemas import class_name
from evflow.runtime.client import ApiClient
from evflow.runtime.codec import CodecError, dump_json, load_json, unstructure
from evflow.runtime.errors import EvflowError, InvalidPayload, InvalidRequest, MqttError
from evflow.runtime.message import Message, new_message
from evflow.runtime.nodeapi import ConfigWarning, Node, number_range, one_of, ref
from evflow.runtime.protocol.answers import AnswerLedger, AnswerOutcome, Question
from evflow.runtime.protocol.envelope import NO_PAYLOAD, read_envelope
from evflow.runtime.protocol.topics import TopicError, address_filter, api_base, validate_publish_topic
from evflow.runtime.ratelimit import RateLimitedLog
from evflow.runtime.transport import Overflow

__all__ = ["QUESTION", "node_class_for"]

# Where a question node puts EVerest's question on the messages it emits.
QUESTION = "everest_question"

_positive = number_range(above=0)


class OperationNodeError(EvflowError):
    """A message this node cannot handle (not a question, answered already, no replyTo)."""


def _field(kind: Any, doc: str, **options: Any) -> Any:
    # `doc`: what `evflow nodes` and `evflow schema` say of the field (a made class has no source comments)
    return attrs.field(type=kind, metadata={"evflow_doc": doc, **options.pop("metadata", {})}, **options)


def _api_ref(api: LoadedApi) -> Any:
    # The everest-api node must speak this node's API, in the version of its topics (checked by `evflow validate`).
    must = {"api": api.name}
    if api.description.topic_version is not None:
        must["api_version"] = api.description.topic_version
    return ref("everest-api", type=str, metadata={"evflow_ref_fields": must,
                                                  "evflow_doc": f"id of an everest-api node of API {api.name}"})


def _payload_field(shape: MessageShape | None, what: str) -> dict[str, Any]:
    if shape is None:
        return {}
    return {"payload": _field(shape.type | None, what, default=None)}


def node_class_for(type_name: str, api: LoadedApi, operation: ApiOperation, reply: bool) -> type[Node[Any]]:
    """The node class of one operation (``reply``: the answer node of a question)."""
    if reply:
        base: type[_OperationNode] = Answer
        fields = {"api": _api_ref(api), **_payload_field(
            operation.reply, "the answer; when not set, msg.payload (checked against the document's schema)")}
        doc = f"Answers EVerest's {operation.name} question (from {api.name}/{operation.id}) on its replyTo."
    else:
        base = _BASES[operation.kind]
        fields = base.config_fields(api, operation)
        doc = operation.title or operation.name
    if operation.description and not reply:
        doc = f"{doc}. {operation.description}" if operation.description != doc else doc
    config = _config_class(api, base, fields)
    return type(class_name(type_name), (base,), {
        "__doc__": doc, "__module__": __name__, "type": type_name, "Config": config,
        "api": api, "operation": operation,
    })


def _config_class(api: LoadedApi, base: type[_OperationNode], fields: dict[str, Any]) -> type:
    """One config class per API, kind and field types: the sources of an API (half its operations)
    share one, as their configs differ in nothing. Each class costs code (``__init__``, ``__eq__``…)."""
    key = (base, *((name, field.type) for name, field in fields.items()))
    made = api.node_cache.get(key)
    if made is None:
        name = class_name(f"{api.name}_{base.__name__}") + f"Config{len(api.node_cache) + 1}"
        made = attrs.make_class(name, fields, frozen=True, kw_only=True, match_args=False)
        made.__module__ = __name__
        api.node_cache[key] = made
    return made


class _OperationNode(Node[Any]):
    api: ClassVar[LoadedApi]
    operation: ClassVar[ApiOperation]

    @classmethod
    def config_fields(cls, api: LoadedApi, operation: ApiOperation) -> dict[str, Any]:
        return {"api": _api_ref(api)}

    @classmethod
    def check(cls, config: Any) -> list[ConfigWarning]:
        shape = cls.fixed_payload_shape()
        payload = getattr(config, "payload", None)
        if shape is not None and payload is not None:
            try:
                check_payload(shape, payload, "$.payload")
            except CodecError as exc:
                raise ValueError(exc.problems[0]) from None
        return []

    @classmethod
    def fixed_payload_shape(cls) -> MessageShape | None:
        return cls.operation.payload

    async def start(self) -> None:
        self.client: ApiClient = self.context.config_node(self.config.api).client  # type: ignore[attr-defined]
        topics = self.client.topics
        description = self.api.description
        # `evflow validate` says so first; a flow built in code, or a module found by discovery, may not
        if self.client.api.name != self.api.name:
            raise EvflowError(f"{self.type}: everest-api node {self.config.api!r} speaks {self.client.api.name}, "
                              f"not {self.api.name}")
        if description.topic_version is not None and topics.api_version != description.topic_version:
            raise EvflowError(f"{self.type}: everest-api node {self.config.api!r} speaks version {topics.api_version} "
                              f"of {self.api.name}, its document version {description.topic_version}")
        root = api_base(description.pathname, topics.module_id, topics.external_prefix)
        self.topic = f"{root}/{address_filter(self.operation.address)}"
        # A configured payload is checked once, here (and by `evflow validate`), not per message.
        shape = self.fixed_payload_shape()
        fixed = getattr(self.config, "payload", None)
        self.fixed_payload = check_payload(shape, fixed) if shape is not None and fixed is not None else None
        self._fixed_body = None if self.fixed_payload is None else dump_json(unstructure(self.fixed_payload))

    def body_of(self, msg: Message, shape: MessageShape | None) -> bytes:
        """What goes on the wire: the configured payload as encoded at start, else ``msg.payload``
        checked and encoded; empty for a message the document gives no payload."""
        if shape is None:
            return b""
        if self._fixed_body is not None:
            return self._fixed_body
        return dump_json(unstructure(self.payload_of(msg, shape)))

    def payload_of(self, msg: Message, shape: MessageShape | None) -> Any:
        """The configured payload, else ``msg.payload``, as the document's type (``InvalidPayload``
        naming the operation and the JSON path when it does not fit)."""
        if shape is None:
            return None
        if self.fixed_payload is not None:
            return self.fixed_payload
        try:
            return check_payload(shape, msg.payload, "$.payload")
        except CodecError as exc:
            raise InvalidPayload(self.topic, exc.problems) from None


class Request(_OperationNode):
    """The flow asks EVerest and gets its reply."""

    error_port = 1

    @classmethod
    def config_fields(cls, api: LoadedApi, operation: ApiOperation) -> dict[str, Any]:
        return {
            **super().config_fields(api, operation),
            **_payload_field(operation.payload, "the request; when not set, msg.payload"),
            "timeout": _field(float | None, "seconds to wait for the reply (default: the everest-api node's "
                              "request_timeout)", default=None, validator=_positive),
            "max_in_flight": _field(int, "requests this node keeps in flight at once", default=32,
                                    validator=number_range(1)),
            "when_disconnected": _field(str, 'while the broker is away: "fail" at once, or "wait" for it within '
                                        "the timeout", default="fail", validator=one_of("fail", "wait")),
        }

    @classmethod
    def outputs(cls, config: Any) -> int:
        return 2

    @classmethod
    def concurrency_of(cls, config: Any) -> int:
        return config.max_in_flight

    async def start(self) -> None:
        await super().start()
        self.request = self.api.request(self.operation)

    async def receive(self, msg: Message) -> None:
        try:
            payload = self.payload_of(msg, self.operation.payload)
        except InvalidPayload as exc:
            raise InvalidRequest(self.operation.name, exc.problems) from None
        reply = await self.client.request(
            self.request, payload, timeout=self.config.timeout,
            wait_for_connection=self.config.when_disconnected == "wait",
        )
        await self.send(msg.with_payload(reply))


class Send(_OperationNode):
    """The flow publishes a variable to EVerest."""

    @classmethod
    def config_fields(cls, api: LoadedApi, operation: ApiOperation) -> dict[str, Any]:
        return {
            **super().config_fields(api, operation),
            **_payload_field(operation.payload, "the value; when not set, msg.payload"),
            "qos": _field(int, "1: the broker acknowledges each message before the next is taken", default=0,
                          validator=one_of(0, 1)),
        }

    @classmethod
    def outputs(cls, config: Any) -> int:
        return 0

    async def receive(self, msg: Message) -> None:
        await self.client.mqtt.publish(self.topic, self.body_of(msg, self.operation.payload), self.config.qos)


class _Source(_OperationNode):
    is_source = True
    has_input = False

    @classmethod
    def config_fields(cls, api: LoadedApi, operation: ApiOperation) -> dict[str, Any]:
        return {
            **super().config_fields(api, operation),
            "qos": _field(int, "QoS of the subscription: 1 when no message may be lost between the broker and "
                          "evflow", default=0, validator=one_of(0, 1)),
        }

    @classmethod
    def fixed_payload_shape(cls) -> MessageShape | None:
        return None

    def stats(self) -> dict[str, int]:
        return {"received": self.received, "invalid": self.invalid} if hasattr(self, "received") else {}

    async def start(self) -> None:
        await super().start()
        self.received = self.invalid = 0
        self.subscription = await self.client.mqtt.subscribe(self.topic, qos=self.config.qos, overflow=Overflow.BLOCK)

    async def run(self) -> None:
        # The subscription outlives a run: the engine restarts a source that failed, on the same one.
        while True:
            message = await self.subscription.receive()
            self.received += 1
            try:
                await self.take(message.topic, message.payload)
            except InvalidPayload as exc:
                self.invalid += 1
                await self.context.error(exc)

    async def close(self) -> None:
        if hasattr(self, "subscription"):
            await self.subscription.aclose()

    async def take(self, topic: str, data: bytes) -> None:
        raise NotImplementedError

    def decode(self, topic: str, data: Any, shape: MessageShape | None) -> Any:
        if shape is None:
            return None
        try:
            return check_payload(shape, data)
        except CodecError as exc:
            raise InvalidPayload(topic, exc.problems) from None


class Receive(_Source):
    """A variable EVerest publishes, typed; ``msg.topic`` is the topic it came on."""

    async def take(self, topic: str, data: bytes) -> None:
        if self.operation.payload is None:
            value = None  # an event without data: EVerest publishes an empty message
        else:
            try:
                value = self.decode(topic, load_json(data), self.operation.payload)
            except CodecError as exc:
                raise InvalidPayload(topic, exc.problems) from None
        await self.send(new_message(value, topic))


class Handler(_Source):
    """EVerest asks the flow: each request goes out on port 0 with the question on
    ``msg.meta["everest_question"]``, for an answer node of the same operation."""

    @classmethod
    def config_fields(cls, api: LoadedApi, operation: ApiOperation) -> dict[str, Any]:
        assert operation.reply is not None
        return {
            **super().config_fields(api, operation),
            "timeout": _field(float, "seconds the flow has to answer before the unanswered policy acts",
                              default=10.0, validator=_positive),
            "unanswered": _field(str, 'a question not answered within timeout: "report" it (an error for catch '
                                 "nodes and the log; EVerest goes on with its own default after its timeout), or "
                                 '"reply" with default_reply', default="report", validator=one_of("report", "reply")),
            "default_reply": _field(operation.reply.type | None, "the answer of unanswered: reply (checked against "
                                    "the document's schema)", default=None),
            "everest_timeout": _field(float, "EVerest's cfg_request_reply_to_s for this API module (a timeout "
                                      "beyond it is warned of)", default=550.0, validator=_positive),
        }

    @classmethod
    def check(cls, config: Any) -> list[ConfigWarning]:
        shape = cls.operation.reply
        assert shape is not None
        if config.unanswered == "reply":
            if config.default_reply is None:
                raise ValueError("unanswered is \"reply\", but no default_reply is given @ $.default_reply")
            try:
                check_payload(shape, config.default_reply, "$.default_reply")
            except CodecError as exc:
                raise ValueError(exc.problems[0]) from None
        if config.timeout >= config.everest_timeout:
            return [ConfigWarning("$.timeout", f"timeout {config.timeout:g} s is not below EVerest's "
                                  f"{config.everest_timeout:g} s: EVerest gives up first, with a default of its own")]
        return []

    def stats(self) -> dict[str, int]:
        if not hasattr(self, "ledger"):
            return {}
        ledger = self.ledger
        return {**super().stats(), "asked": ledger.asked, "answered": ledger.answered, "unanswered": ledger.expired,
                "late_answers": ledger.late, "duplicate_answers": ledger.duplicates}

    async def start(self) -> None:
        await super().start()
        self.ledger = AnswerLedger(self.operation.id, self.config.timeout)
        self._deadline_changed = trio.Event()
        self._log_unanswered = RateLimitedLog(self.context.log, logging.WARNING)
        default = self.config.default_reply
        self._default_body = dump_json(unstructure(default)) if self.config.unanswered == "reply" else None

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._act_on_unanswered)
            await super().run()

    async def take(self, topic: str, data: bytes) -> None:
        try:
            reply_to, payload = read_envelope(data)
        except CodecError as exc:
            raise InvalidPayload(topic, exc.problems) from None
        if not reply_to:
            raise InvalidPayload(topic, ["no replyTo to answer on @ $.headers.replyTo"])
        try:  # checked now: an answer, or the policy's default, must be able to go there
            validate_publish_topic(self.client.topics.external_prefix + reply_to)
        except TopicError as exc:
            raise InvalidPayload(topic, [f"{exc} @ $.headers.replyTo"]) from None
        shape = self.operation.payload
        if shape is None:
            value = None
        elif payload is NO_PAYLOAD:
            value = self._empty_payload(topic, shape)
        else:
            value = self.decode(topic, payload, shape)
        was_idle = self.ledger.open_count == 0
        question = self.ledger.ask(reply_to, trio.current_time(), owner=self)
        if was_idle:
            self.deadlines_changed()
        await self.send(new_message(value, topic, **{QUESTION: question}))

    def _empty_payload(self, topic: str, shape: MessageShape) -> Any:
        """EVerest leaves out a payload that is empty (null, {} or []: AsyncApiRequestReply): the one
        of those that the schema takes."""
        for empty in (None, {}, []):
            try:
                return check_payload(shape, empty)
            except CodecError:
                continue
        raise InvalidPayload(topic, ["no payload, and no empty one (null, {}, []) fits the schema @ $.payload"])

    def deadlines_changed(self) -> None:
        """A question opened while none was, or one came back (its answer did not go out)."""
        self._deadline_changed.set()

    async def _act_on_unanswered(self) -> None:
        while True:
            deadline = self.ledger.next_deadline
            if deadline is None:
                await self._deadline_changed.wait()
                self._deadline_changed = trio.Event()
                continue
            with trio.move_on_at(deadline):
                await self._deadline_changed.wait()  # an earlier deadline may come back
                self._deadline_changed = trio.Event()
                continue
            for question in self.ledger.expire(trio.current_time()):
                await self._unanswered(question)

    async def _unanswered(self, question: Question, why: str = "") -> None:
        what = why or f"{self.operation.name} from EVerest not answered within {self.config.timeout:g} s"
        if self._default_body is None:
            await self.context.error(OperationNodeError(f"{what}; EVerest uses its own default after its timeout"))
            return
        question.defaulted = True  # before the publish: an answer that comes meanwhile must not go too
        try:
            await self.client.mqtt.publish(self.client.topics.external_prefix + question.reply_to, self._default_body)
        except MqttError as exc:
            question.defaulted = False
            await self.context.error(OperationNodeError(f"{what}; the default reply was not sent: {exc}"))
            return
        self._log_unanswered("%s: answered with the default reply", what)

    async def close(self) -> None:
        """Questions still open when the flow stops: the policy acts on them now (EVerest would wait)."""
        if hasattr(self, "ledger"):
            for question in self.ledger.expire(math.inf):  # all of them, closed: no answer may follow
                await self._unanswered(question, f"{self.operation.name} from EVerest still open at shutdown")
        await super().close()


class Answer(_OperationNode):
    """Sends ``msg.payload`` (or the configured answer) to the replyTo of the question the message
    carries, once, after checking it against the document's schema."""

    @classmethod
    def outputs(cls, config: Any) -> int:
        return 0

    @classmethod
    def fixed_payload_shape(cls) -> MessageShape | None:
        return cls.operation.reply

    def stats(self) -> dict[str, int]:
        return {"answered": self.answered} if hasattr(self, "answered") else {}

    async def start(self) -> None:
        await super().start()
        self.answered = 0

    async def receive(self, msg: Message) -> None:
        question = msg.meta.get(QUESTION)
        source = f"{self.api.name}/{self.operation.id}"
        if not isinstance(question, Question):
            raise OperationNodeError(f"the message carries no question from EVerest (it must come from a {source} node)")
        if question.operation != self.operation.id:
            raise OperationNodeError(f"the message carries a {question.operation} question, not one of {source}")
        asker: Handler = question.owner
        if asker.client is not self.client:
            raise OperationNodeError(f"the question came through everest-api {asker.config.api!r}, this node answers "
                                     f"through {self.config.api!r}: the answer would go to another module")
        body = self.body_of(msg, self.operation.reply)
        ledger = question.ledger
        outcome = ledger.claim(question)
        if outcome is AnswerOutcome.DUPLICATE:
            raise OperationNodeError(f"{self.operation.name} was answered already; this answer is not sent")
        if outcome is AnswerOutcome.DEFAULTED:
            raise OperationNodeError(f"{self.operation.name} was answered with the default reply after "
                                     f"{ledger.timeout:g} s; this answer is not sent")
        try:
            await self.client.mqtt.publish(self.client.topics.external_prefix + question.reply_to, body)
        except BaseException:
            ledger.release(question)  # it may be answered again, or the policy acts on it
            asker.deadlines_changed()
            raise
        ledger.settle(question)
        self.answered += 1


_BASES: dict[OperationKind, type[_OperationNode]] = {
    OperationKind.REQUEST: Request,
    OperationKind.SEND: Send,
    OperationKind.RECEIVE: Receive,
    OperationKind.HANDLER: Handler,
}
