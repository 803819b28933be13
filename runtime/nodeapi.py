"""The public API for writing node types: built-in nodes use exactly this, and so do plugins.

A node type is a class with a ``type`` name, an attrs ``Config`` class (its properties in the flow
file) and a few coroutines the engine calls::

    @attrs.frozen(kw_only=True)
    class DoubleConfig:
        factor: int = 2

    class Double(Node[DoubleConfig]):
        '''Multiplies a numeric payload.'''

        type = "double"
        Config = DoubleConfig

        async def receive(self, msg: Message) -> None:
            await self.send(msg.with_payload(msg.payload * self.config.factor))

Lifecycle, each step a barrier for all nodes of a flow:

1. config nodes :meth:`ConfigNode.serve` (connect to a broker…) in dependency order;
2. every node :meth:`Node.start` (subscribe…): the flow is *ready* when all returned;
3. sources :meth:`Node.run` (inject, heartbeat, mqtt in) start only then, and messages flow
   through :meth:`Node.receive`;
4. on shutdown: sources are stopped (each between two sends), messages in flight drain,
   :meth:`Node.close` runs (the keepalive node says goodbye here), then config nodes close, one
   at a time, each before the config nodes it names.

An exception raised by ``receive`` is routed by the engine (error port, else ``catch`` nodes of the
tab, else the log) and the node goes on with its next message.

Register a plugin's node types through the entry-point group ``evflow.nodes``
(``my-node = "my_package.module:MyNode"``); set ``api_version`` to :data:`API_VERSION`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import attrs
import trio

from .context import ContextStore
from .errors import EvflowError
from .message import Message, NodeError, new_message
from .models.loose import LooseBool, LooseFloat, LooseInt, LooseStr
from .models.validators import FieldValueError, field_check, number_range, one_of
from .properties import (
    UNDEFINED,
    PropertyError,
    delete_property,
    error_object,
    get_property,
    msg_id_text,
    parse_property,
    set_property,
)
from .protocol.requests import OperationStats
from .typedinput import TypedValue, TypedValueError

__all__ = [
    "API_VERSION",
    "UNDEFINED",
    "LooseBool",
    "LooseFloat",
    "LooseInt",
    "LooseStr",
    "PropertyError",
    "TypedValue",
    "TypedValueError",
    "delete_property",
    "error_object",
    "get_property",
    "msg_id_text",
    "parse_property",
    "set_property",
    "FieldValueError",
    "field_check",
    "number_range",
    "one_of",
    "ConfigNode",
    "Message",
    "Node",
    "NodeContext",
    "NodeError",
    "NodeInfo",
    "ConfigWarning",
    "OperationStats",
    "Readiness",
    "ErrorScope",
    "Scope",
    "new_message",
    "ref",
    "renamed",
    "run_service",
    "secret",
]

# The version of this API. A node type declaring another is refused with a clear message.
API_VERSION = 1

ConfigT = TypeVar("ConfigT")


def ref(kind: str, **field_options: Any) -> Any:
    """A config field naming another node (by id) that must exist and be of type ``kind``."""
    metadata = {**field_options.pop("metadata", {}), "evflow_ref": kind}
    return attrs.field(metadata=metadata, **field_options)


def renamed(new_form: str) -> Any:
    """A config field that evflow had and that now has another name or form (usually Node-RED's):
    a flow that still sets it gets a validation error saying ``new_form``."""
    return attrs.field(default=None, metadata={"evflow_renamed": new_form}, repr=False)


def secret(**field_options: Any) -> Any:
    """A config field holding a secret: it must come from the environment (``${VAR}``), never
    literally from the flow file, and it is never logged."""
    metadata = {**field_options.pop("metadata", {}), "evflow_secret": True}
    field_options.setdefault("default", None)
    field_options.setdefault("repr", False)
    return attrs.field(metadata=metadata, **field_options)


@attrs.frozen
class Scope:
    """Whose events a node receives as input (Node-RED's ``catch``, ``status`` and ``complete``): those
    of the nodes listed in ``node_ids``; else, with ``group``, of every node in the watching node's
    group; else of every node on its tab. ``uncaught`` (failures only): those no other catching node
    took."""

    node_ids: frozenset[str] | None = None
    uncaught: bool = False
    group: bool = False


# The name under which node API version 1 first offered it, for failures.
ErrorScope = Scope


@attrs.frozen
class Readiness:
    """Whether a node does its part of the job now, for ``/ready`` and systemd's watchdog (see
    :meth:`Node.readiness`): a broker connection is up, EVerest's heartbeat comes, the
    communication check went out in time. ``reason`` says what is missing when not ``ready``;
    ``since`` is when that became so, in trio's clock (``trio.current_time()``), when known."""

    ready: bool
    reason: str = ""
    since: float | None = None


@attrs.frozen
class NodeInfo:
    """Another node of the running flow, as :meth:`NodeContext.nodes` tells of it."""

    id: str
    type: str
    name: str
    tab: str


@attrs.frozen
class ConfigWarning:
    """A validation finding that does not stop the flow (e.g. a keepalive slower than EVerest's timeout).
    ``path`` is the JSON path within the node, e.g. ``$.interval``."""

    path: str
    message: str


class NodeContext(Protocol):
    """What the engine gives each node: its identity, its wires, and the rest of the flow."""

    node_id: str
    node_type: str
    name: str
    tab: str
    # the Node-RED group (``g``) the node is in, or ""
    group: str
    log: logging.Logger
    # Node-RED's context stores: the node's own, its tab's (``flow``) and the global one
    context: ContextStore
    flow: ContextStore
    global_context: ContextStore

    def env(self, name: str) -> str | None:
        """An environment variable as Node-RED's ``env.get`` reads it: ``NR_NODE_ID``,
        ``NR_NODE_NAME``, ``NR_FLOW_ID``, ``NR_FLOW_NAME`` (the tab's label), ``NR_GROUP_ID``,
        ``NR_GROUP_NAME`` (the name of the node's group, when it is in one), else the process
        environment."""

    def status(self, status: Mapping[str, Any]) -> None:
        """Show a short status (Node-RED's ``node.status``: ``fill``, ``shape``, ``text``); it goes
        to the ``status`` nodes whose scope covers this node. An empty mapping clears it."""

    async def send(self, msg: Message, port: int = 0) -> None:
        """Deliver ``msg`` to every node wired to ``port``, in order; waits while a receiver's queue
        is full (a receiver with a drop policy drops instead).

        The first receiver gets ``msg``, every other one a copy whose payload it may change freely.
        A receiver declared ``inline`` may run in the caller's task, under its cancel scopes: do
        not put a timeout or a cancel scope around ``send``, it would cut that node's work short.
        Cancellation is checked, but other tasks get a turn only when it has to wait. A source's
        ``run`` is stopped between two sends, never during one."""

    def send_nowait(self, msg: Message, port: int = 0) -> bool:
        """Deliver ``msg`` at once if every node wired to ``port`` can queue it now (room in its
        queue, or a drop policy); otherwise deliver it to none of them and return False.

        For code that cannot wait, such as a transport callback: on False, hand the message to a
        task that ``await``\\ s :meth:`send`, and keep later messages behind it to keep their order.
        It never runs a node's ``receive``, so it returns False for a port wired to an inline node
        (see :meth:`can_send_nowait`)."""

    def can_send_nowait(self, port: int = 0) -> bool:
        """Whether :meth:`send_nowait` can ever deliver on ``port``: False when an inline node is
        wired to it (:meth:`send` runs such a node in the sender's task instead, which is cheaper)."""

    async def error(self, error: BaseException | str, msg: Message | None = None) -> None:
        """Report a failure on ``msg``: routed like an exception raised by ``receive``."""

    def config_node(self, node_id: str) -> ConfigNode[Any]:
        """The running config node with this id (already validated to exist and be of the right type)."""

    def nodes(self, node_type: str) -> tuple[NodeInfo, ...]:
        """The running nodes of ``node_type``, in flow-file order (Node-RED's ``link call`` finds
        its target by name among the ``link in`` nodes)."""

    async def send_to(self, node_id: str, msg: Message) -> None:
        """Deliver ``msg`` to the input of the node ``node_id``, as a wire would (Node-RED's ``link``
        nodes: a ``link call`` and the ``link out`` that returns to it). ``ValueError`` when there
        is no such node taking input."""


class Node(Generic[ConfigT]):
    """Base of a node type. Subclasses set ``type`` and ``Config`` and override what they need."""

    type: ClassVar[str]
    Config: ClassVar[type[Any]]
    api_version: ClassVar[int] = API_VERSION
    # A source brings messages in from outside (inject, heartbeat, mqtt in): its `run` starts only
    # once the whole flow is ready, and is the first thing stopped on shutdown.
    is_source: ClassVar[bool] = False
    # Whether the node takes input (has an input port in the editor's sense).
    has_input: ClassVar[bool] = True
    # How many messages the node may work on at once (its `receive` runs in this many tasks).
    concurrency: ClassVar[int] = 1
    # True when `receive` only computes and sends: no network round trips, sleeps or other waits but
    # `send`'s backpressure. The engine may then run it in the sending node's task whenever it is idle,
    # which saves a task switch per message; it still gets one message at a time, in order.
    inline: ClassVar[bool] = False
    # The port the engine routes this node's failures to, when it has one and it is wired.
    error_port: ClassVar[int | None] = None

    def __init__(self, context: NodeContext, config: ConfigT) -> None:
        self.context = context
        self.config = config

    @classmethod
    def outputs(cls, config: ConfigT) -> int:
        """Number of output ports for this configuration."""
        return 1

    @classmethod
    def check(cls, config: ConfigT) -> list[ConfigWarning]:
        """Cross-field checks of a valid config: raise ValueError for an error, return warnings."""
        return []

    @classmethod
    def takes_input(cls, config: ConfigT) -> bool:
        """Whether this node, so configured, takes input (default: ``has_input``; ``mqtt in`` takes
        it with ``inputs: 1``, for its subscriptions)."""
        return cls.has_input

    @classmethod
    def links(cls, config: ConfigT) -> tuple[str, ...]:
        """Ids of nodes wired to output port 0 by the config rather than by ``wires`` (Node-RED's
        ``link out``: its ``links``); checked and delivered to like wires."""
        return ()

    @classmethod
    def concurrency_of(cls, config: ConfigT) -> int:
        """How many messages this node may work on at once (default: the ``concurrency`` attribute)."""
        return cls.concurrency

    @classmethod
    def error_scope(cls, config: ConfigT) -> Scope | None:
        """For a node that catches failures of others (``catch``): which. None for every other node."""
        return None

    @classmethod
    def status_scope(cls, config: ConfigT) -> Scope | None:
        """For a node that receives the status changes of others (``status``): whose."""
        return None

    @classmethod
    def complete_scope(cls, config: ConfigT) -> Scope | None:
        """For a node that receives the messages others finished handling (``complete``): whose."""
        return None

    async def send(self, msg: Message, port: int = 0) -> None:
        await self.context.send(msg, port)

    async def start(self) -> None:
        """Get ready (subscribe, check a connection…); the flow starts when every node returned."""

    async def run(self) -> None:
        """A source's loop (``is_source``); cancelled at shutdown."""

    async def receive(self, msg: Message) -> None:
        """Handle one input message."""
        raise NotImplementedError(f"{self.type} takes no input")

    async def close(self) -> None:
        """Last words at shutdown, after messages in flight drained (bounded by the engine)."""

    def stats(self) -> Mapping[str, int]:
        """Counters worth reporting (logged when the flow stops): received, invalid, dropped…"""
        return {}

    def readiness(self) -> Readiness | None:
        """For a node whose work is part of the flow being *ready* (a heartbeat, a keepalive): whether
        it does it now. None, the default, for a node that says nothing either way. Called when asked
        (``/ready``, the watchdog's tick), never per message: keep it a look at state already kept."""
        return None


class ConfigNode(Generic[ConfigT]):
    """Base of a config node type: a shared resource (a broker connection, an API client) that
    other nodes reference by id. No wires."""

    type: ClassVar[str]
    Config: ClassVar[type[Any]]
    api_version: ClassVar[int] = API_VERSION

    def __init__(self, context: NodeContext, config: ConfigT) -> None:
        self.context = context
        self.config = config

    @classmethod
    def check(cls, config: ConfigT) -> list[ConfigWarning]:
        return []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bring the resource up, call ``task_status.started()`` when it is usable, keep it up until
        cancelled. The default has nothing to keep up."""
        task_status.started()

    async def close(self) -> None:
        """Release the resource cleanly (called before ``serve`` is cancelled)."""

    def stats(self) -> Mapping[str, int]:
        """Counters worth reporting (logged when the flow stops)."""
        return {}

    def readiness(self) -> Readiness | None:
        """As :meth:`Node.readiness`: a broker connection says whether it is up."""
        return None

    def request_stats(self) -> Mapping[str, OperationStats]:
        """For a config node that is a client of an EVerest API: per operation, the latency of its
        answered requests and its timeouts (``/metrics``). Empty for every other."""
        return {}


async def run_service(
    service: Callable[..., Awaitable[Any]], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """For a :meth:`ConfigNode.serve`: start ``service`` (a trio service that calls
    ``task_status.started()`` once usable, as ``MqttClient.run`` does), report started once it has,
    and keep it running until cancelled. An :class:`EvflowError` it raises before it started comes
    out as it is, not inside an exception group, so that the engine can say which node did not start."""
    failed: EvflowError | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(service)
        except EvflowError as exc:
            failed = exc  # raised below, outside the nursery
        else:
            task_status.started()
    if failed is not None:
        raise failed


NodeClass = type[Node[Any]] | type[ConfigNode[Any]]
