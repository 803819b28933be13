"""EVerest's side of any API read from its AsyncAPI document: for testing a client without EVerest.

Like EVerest's API modules (``ApiHelper``, ``AsyncApiRequestReply``):

* a request (``request``) arrives as ``{"headers": {"replyTo": T}, "payload": …}`` and is answered
  with the bare reply on prefix + ``T``: the answer configured for it, else the document's first
  example that fits the reply schema, else a value made from that schema. A request that does not
  fit its schema gets no answer (EVerest logs "Invalid data: Deserialization failed.");
* a variable the client publishes (``send``) is checked and recorded (:meth:`received`,
  :meth:`next_sent`); one that does not fit is counted, not recorded;
* :meth:`publish` sends a variable of EVerest's (``receive``) after checking it;
* :meth:`ask` asks the client (``handler``) on a fresh reply topic and waits for one reply, as
  EVerest does for ``cfg_request_reply_to_s`` before it goes on with its own default;
* the heartbeat, the communication-check watchdog and, for APIs under ``everest_api/{version}``,
  the entrypoint's discovery answer for this module.

Every message from the client goes through one ordered inbox, so the order the broker delivered
them in is the order they are handled in (a test can send a bad request, then a good one, and know
the bad one was handled once the good one is answered).
"""

from __future__ import annotations

import collections
import difflib
import logging
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import trio

from ..asyncapi.catalogue import LoadedApi, check_payload
from ..asyncapi.documents import DocumentSet
from ..asyncapi.examples import ExampleError, bad_examples, example_of
from ..asyncapi.model import ApiOperation, MessageShape, OperationKind
from ..codec import CodecError, dump_json, load_json, unstructure
from ..errors import EvflowError, MqttError
from ..models.evse_security import U64_MAX
from ..protocol.api import COMMUNICATION_CHECK, HEARTBEAT
from ..protocol.envelope import NO_PAYLOAD, read_envelope
from ..protocol.topics import (
    SAFE_LEVEL,
    TopicError,
    address_filter,
    api_base,
    validate_publish_topic,
    validate_topic_level,
)
from ..ratelimit import RateLimitedLog
from ..transport import MqttClient, MqttMessage
from .liveness import EverestLiveness
from .watchdog import CommunicationCheckWatchdog

__all__ = ["BadAnswer", "BadReply", "GenericApiSimulator", "NoReply", "SimulatorError", "api_base", "decode_envelope"]

log = logging.getLogger("evflow.simulator.generic")

# Messages from the client waiting to be handled; beyond this they are dropped and counted (the
# connection's reader never waits for the simulator).
INBOX_SIZE = 256
# Where EVerest's requests to the client ask for their replies (below the external prefix).
REPLY_BASE = "evflow_simulator/reply"


class SimulatorError(EvflowError):
    """The simulator was set up or used wrongly (an answer that breaks its schema, an unknown
    operation), or the client did not answer as the document says."""


class BadAnswer(SimulatorError):
    """An answer given for a request that is not one, or breaks the reply schema; ``detail`` says
    which and how, for a caller that names where the answers came from."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"answers: {detail}")


class NoReply(SimulatorError):
    """The client did not answer EVerest's request in time (EVerest goes on with its own default)."""


class BadReply(SimulatorError):
    """The client's answer breaks the reply schema; ``problems`` name each with its JSON path."""

    def __init__(self, message: str, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(message)


# ---- pure: topics and envelopes ------------------------------------------------------------------


def fill_address(address: str, parameters: Mapping[str, str]) -> str:
    """The address with its ``{parameter}``\\ s replaced; each value must be a single topic level."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in parameters:
            raise SimulatorError(f"address {address!r} needs a value for {{{name}}}")
        return validate_topic_level(str(parameters[name]), f"parameter {name}")

    return re.sub(r"\{([^}]+)\}", replace, address)


def decode_envelope(data: bytes, has_payload: bool) -> tuple[str | None, Any]:
    """``(replyTo or None, plain payload)`` of a request envelope, or :class:`CodecError` for what
    EVerest could not decode. Without a payload schema the payload is not looked at."""
    reply_to, payload = read_envelope(data)
    if has_payload and payload is NO_PAYLOAD:
        raise CodecError(["required key missing @ $.payload"])
    return reply_to, None if payload is NO_PAYLOAD else payload


def encode_envelope(reply_to: str, payload: Any, has_payload: bool) -> bytes:
    """EVerest's request to the client. As EVerest (AsyncApiRequestReply: ``if (not payload.empty())``),
    a payload that is null, an empty object or an empty array is left out."""
    envelope: dict[str, Any] = {"headers": {"replyTo": reply_to}}
    if has_payload and payload not in (None, {}, []):
        envelope["payload"] = payload
    return dump_json(envelope)


def body_of(shape: MessageShape | None, value: Any) -> bytes:
    """A variable's message: its JSON, or empty when the document gives it no payload."""
    return b"" if shape is None else dump_json(value)


# ---- the simulator -------------------------------------------------------------------------------


class GenericApiSimulator:
    def __init__(
        self,
        mqtt: MqttClient,
        api: LoadedApi,
        module_id: str,
        *,
        external_prefix: str = "",
        heartbeat_interval_ms: int = 1000,  # <= 0: no heartbeat, as in EVerest
        heartbeat_start: int = 0,
        comm_check_timeout_s: float = 5.0,  # <= 0: no watchdog, as in EVerest
        answers: Mapping[str, Any] | None = None,
        reply_timeout_s: float = 5.0,
        discovery: bool = True,
        documents: DocumentSet | None = None,
    ) -> None:
        if not 0 <= heartbeat_start <= U64_MAX:
            raise SimulatorError(f"heartbeat start must be in 0..2^64-1, got {heartbeat_start}")
        if not reply_timeout_s > 0:
            raise SimulatorError(f"reply timeout must be positive, got {reply_timeout_s}")
        self.mqtt = mqtt
        self.api = api
        self.module_id = module_id
        self.external_prefix = external_prefix
        self.base = api_base(api.description.pathname, module_id, external_prefix)
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.heartbeat_start = heartbeat_start
        self.reply_timeout_s = reply_timeout_s
        self.discovery = discovery
        self.operations = api.description.operations
        self.liveness = EverestLiveness(mqtt, f"{self.base}/e2m/{HEARTBEAT}", interval_ms=heartbeat_interval_ms,
                                        start=heartbeat_start, comm_check_timeout_s=comm_check_timeout_s)
        self._documents = documents if documents is not None else DocumentSet()
        self._replies, self.unanswerable = self._prepare_replies(dict(answers or {}))
        # EVerest's own documents carry examples that break their own schemas: never served.
        self.bad_examples = bad_examples(api)
        for problem in self.bad_examples:
            log.info("%s: skipping an example that breaks its schema: %s", api.name, problem)
        self._sent: dict[str, list[Any]] = {op_id: [] for op_id, op in self.operations.items()
                                             if op.kind is OperationKind.SEND}
        self._taken: collections.Counter[str] = collections.Counter()
        self._sent_arrived = trio.Event()
        self.answered: collections.Counter[str] = collections.Counter()
        self.invalid_requests: collections.Counter[str] = collections.Counter()
        self.invalid_sent: collections.Counter[str] = collections.Counter()
        self.dropped = 0
        self.replies_lost = 0
        self._log_invalid = RateLimitedLog(log)
        self._log_lost = RateLimitedLog(log)
        self._log_dropped = RateLimitedLog(log)
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[ApiOperation | None, MqttMessage]](INBOX_SIZE)

    # ---- set-up ----------------------------------------------------------------------------------

    def _prepare_replies(self, answers: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, str]]:
        """Each request's reply, encoded once: the answer given, else an example; and the requests
        nothing could be made for (left unanswered, said once here)."""
        requests = {op_id: op for op_id, op in self.operations.items() if op.kind is OperationKind.REQUEST}
        for op_id in answers:
            if op_id not in requests:
                raise BadAnswer(self._unknown(op_id, requests, "request"))
        replies: dict[str, bytes] = {}
        unanswerable: dict[str, str] = {}
        for op_id, operation in requests.items():
            reply = operation.reply
            assert reply is not None  # the loader refuses a request without a reply schema
            if op_id in answers:
                try:
                    check_payload(reply, answers[op_id])
                except CodecError as exc:
                    raise BadAnswer(f"the answer to {op_id} breaks its reply schema: {'; '.join(exc.problems)}") from None
                replies[op_id] = dump_json(unstructure(answers[op_id]))
                continue
            try:
                replies[op_id] = dump_json(example_of(reply, self._documents))
            except ExampleError as exc:
                unanswerable[op_id] = str(exc)
                log.warning("%s: requests to %s will get no reply: %s", self.api.name, op_id, exc)
        return replies, unanswerable

    def _unknown(self, op_id: str, candidates: Mapping[str, ApiOperation], kind: str) -> str:
        operation = self.operations.get(op_id)
        if operation is not None:
            return f"{op_id} is a {operation.kind} operation, not a {kind} one"
        close = difflib.get_close_matches(op_id, list(candidates), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        known = ", ".join(sorted(candidates)) or "none"
        return f"API {self.api.name} has no {kind} operation {op_id!r}{hint}; its {kind} operations: {known}"

    def _operation(self, op_id: str, kind: OperationKind) -> ApiOperation:
        operation = self.operations.get(op_id)
        if operation is None or operation.kind is not kind:
            of_kind = {i: op for i, op in self.operations.items() if op.kind is kind}
            raise SimulatorError(self._unknown(op_id, of_kind, str(kind)))
        return operation

    def topic_of(self, operation: ApiOperation, parameters: Mapping[str, str] | None = None) -> str:
        return f"{self.base}/{fill_address(operation.address, parameters or {})}"

    # ---- running ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[GenericApiSimulator] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribe, then report started; serve until cancelled."""
        subscriptions = []
        try:
            for operation in self.operations.values():
                if operation.kind in (OperationKind.REQUEST, OperationKind.SEND):
                    topic = f"{self.base}/{address_filter(operation.address)}"
                    subscriptions.append(await self.mqtt.subscribe_callback(topic, self._taker(operation)))
            check_topic = f"{self.base}/m2e/{COMMUNICATION_CHECK}"
            subscriptions.append(await self.mqtt.subscribe_callback(check_topic, self._taker(None)))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.liveness.run)
                nursery.start_soon(self._serve_inbox)
                if self.discovery and self.api.description.topic_version is not None:
                    await nursery.start(self._serve_discovery)
                task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                for subscription in subscriptions:
                    await subscription.aclose()

    def _taker(self, operation: ApiOperation | None) -> Any:
        def take(message: MqttMessage) -> None:
            try:
                self._inbox_send.send_nowait((operation, message))
            except trio.WouldBlock:
                self.dropped += 1
                self._log_dropped("inbox full (%d messages): dropped a message on %s, %d dropped so far",
                                  INBOX_SIZE, message.topic, self.dropped)

        return take

    async def _serve_discovery(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from ..models.entrypoint import ApiParameter, CommunicationParameters
        from .entrypoint import serve_entrypoint

        description = self.api.description
        assert description.topic_version is not None
        timeout = self.watchdog.timeout
        monitoring = CommunicationParameters(
            heartbeat_period_ms=self.heartbeat_interval_ms if self.heartbeat_interval_ms > 0 else None,
            communication_check_period_s=math.ceil(timeout) if timeout > 0 else None,
            request_reply_timeout_s=math.ceil(self.reply_timeout_s),
        )
        apis = [ApiParameter(type=description.name, module_id=self.module_id, version=description.topic_version,
                             communication_monitoring=monitoring)]
        await serve_entrypoint(self.mqtt, apis, external_prefix=self.external_prefix, task_status=task_status)

    @property
    def watchdog(self) -> CommunicationCheckWatchdog:
        return self.liveness.watchdog

    @property
    def heartbeats_lost(self) -> int:
        return self.liveness.heartbeats_lost

    async def _serve_inbox(self) -> None:
        async for operation, message in self._inbox:
            if operation is None:
                self.liveness.communication_check(message.payload)
            elif operation.kind is OperationKind.REQUEST:
                await self._request(operation, message)
            else:
                self._record(operation, message)

    async def _request(self, operation: ApiOperation, message: MqttMessage) -> None:
        try:
            reply_to, payload = decode_envelope(message.payload, operation.payload is not None)
            if operation.payload is not None:
                check_payload(operation.payload, payload, "$.payload")
            if reply_to is not None:
                validate_publish_topic(self.external_prefix + reply_to)
        except (CodecError, TopicError) as exc:
            self.invalid_requests[operation.id] += 1
            self._log_invalid("Invalid data: Deserialization failed (%s: %s); no reply", operation.id, exc)
            return
        body = self._replies.get(operation.id)
        if reply_to is None or body is None:
            return  # EVerest accepts a request without replyTo and answers nothing
        try:
            await self.mqtt.publish(self.external_prefix + reply_to, body)
        except MqttError as exc:
            self.replies_lost += 1
            self._log_lost("reply to %s lost: %s", operation.id, exc)
            return
        self.answered[operation.id] += 1
        log.debug("answered %s on %s", operation.id, reply_to)

    def _record(self, operation: ApiOperation, message: MqttMessage) -> None:
        value = None
        try:
            if operation.payload is not None:
                value = load_json(message.payload)
                check_payload(operation.payload, value)
        except CodecError as exc:
            self.invalid_sent[operation.id] += 1
            self._log_invalid("Invalid data: %s does not fit its schema (%s); ignored", operation.id, exc)
            return
        self._sent[operation.id].append(value)
        self._sent_arrived.set()
        self._sent_arrived = trio.Event()
        log.info("received %s: %s", operation.id, message.payload[:200].decode("utf-8", "replace"))

    # ---- what tests and the command line use -----------------------------------------------------

    def received(self, op_id: str) -> list[Any]:
        """Every valid value the client sent for ``op_id`` (a ``send`` operation), oldest first."""
        self._operation(op_id, OperationKind.SEND)
        return list(self._sent[op_id])

    async def next_sent(self, op_id: str) -> Any:
        """The oldest value of ``op_id`` not yet returned here, waiting for one if there is none."""
        self._operation(op_id, OperationKind.SEND)
        while self._taken[op_id] >= len(self._sent[op_id]):
            await self._sent_arrived.wait()
        value = self._sent[op_id][self._taken[op_id]]
        self._taken[op_id] += 1
        return value

    async def publish(self, op_id: str, value: Any = None, *, parameters: Mapping[str, str] | None = None) -> None:
        """Publish EVerest's variable ``op_id`` (a ``receive`` operation) after checking ``value``
        against its schema (:class:`CodecError` with JSON paths if it does not fit)."""
        operation = self._operation(op_id, OperationKind.RECEIVE)
        if operation.payload is not None:
            check_payload(operation.payload, value)
            value = unstructure(value)
        elif value is not None:
            raise CodecError([f"{op_id} has no payload in the document: publish it without a value @ $"])
        await self.mqtt.publish(self.topic_of(operation, parameters), body_of(operation.payload, value))

    async def ask(self, op_id: str, payload: Any = None, *, timeout: float | None = None,
                  parameters: Mapping[str, str] | None = None) -> Any:
        """Ask the client (``op_id``, a ``handler`` operation) as EVerest does: the request on a fresh
        reply topic, then the first reply within ``timeout`` (default ``reply_timeout_s``), checked
        against the reply schema and returned as plain JSON. :class:`NoReply` or :class:`BadReply`
        otherwise (EVerest would go on with its own default)."""
        operation = self._operation(op_id, OperationKind.HANDLER)
        has_payload = operation.payload is not None
        if has_payload:
            check_payload(operation.payload, payload, "$.payload")  # type: ignore[arg-type]
            payload = unstructure(payload)
        elif payload is not None:
            raise CodecError([f"{op_id} has no payload in the document: ask without one @ $.payload"])
        wait = self.reply_timeout_s if timeout is None else timeout
        reply_to = f"{REPLY_BASE}/{_level(self.api.name)}/{uuid.uuid4().hex}"
        replies = await self.mqtt.subscribe(self.external_prefix + reply_to, max_buffer=4)
        async with replies:
            await self.mqtt.publish(self.topic_of(operation, parameters), encode_envelope(reply_to, payload, has_payload))
            message = None
            with trio.move_on_after(wait):
                message = await replies.receive()
        if message is None:
            raise NoReply(f"no reply to {op_id} within {wait:g} s (EVerest goes on with its own default)")
        assert operation.reply is not None  # the loader refuses a handler without a reply schema
        try:
            value = load_json(message.payload)
            check_payload(operation.reply, value)
        except CodecError as exc:
            raise BadReply(f"the reply to {op_id} breaks its schema: {'; '.join(exc.problems)} "
                           "(EVerest goes on with its own default)", exc.problems) from None
        return value

def _level(name: str) -> str:
    """``name`` as one safe topic level (some brokers refuse ``.`` or spaces)."""
    return name if SAFE_LEVEL.fullmatch(name) else re.sub(r"[^A-Za-z0-9_-]", "_", name) or "api"
