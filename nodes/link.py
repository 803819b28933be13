"""``link in``, ``link out`` and ``link call``: wires without lines, as Node-RED's link nodes.

``link out`` with ``mode: "link"`` sends each message to the ``link in`` nodes in its ``links`` (ids,
on any tab): the engine wires them to its port 0 when the flow is loaded, so a missing or disabled
target is a validation error. ``link in`` passes on what it receives. Its own ``links`` (the link out
nodes that send to it) is the editor's record: the link out's ``links`` is what counts.

``link call`` calls a ``link in`` as a subroutine: the message goes to the link in named by ``links``
(``linkType: "static"``) or by ``msg.target`` (``"dynamic"``: a link in's id, else its name, on this
tab first, else on any tab), and comes back out of the link call when the flow behind the link in
reaches a ``link out`` with ``mode: "return"``. As in Node-RED, the way back is a stack of calls in
``msg._linkSource`` (``{"id", "node"}`` entries), so calls nest; it is removed once empty. A call
with no return within ``timeout`` seconds (30 by default) fails with the message as it was sent, with
Node-RED's text, "timeout" (routed to ``catch`` nodes). A return after that still comes out of the
link call, as in Node-RED. A message for a link in that does not exist fails with Node-RED's text
(``target link-in node 'x' not found``, ``Multiple link-in nodes named 'x' found``).

A return-mode link out with no ``msg._linkSource`` (nobody called) logs Node-RED's warning, "Missing
return node information", and drops the message. Like Node-RED, a link out sets ``msg._event``
(``node:<its id>``).

Node-RED looks link in nodes up in a process-wide table; evflow keeps one per running flow (its
global context store identifies the flow), filled by the link in nodes as they are built.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import trio

from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseStr,
    Message,
    Node,
    NodeContext,
    field_check,
)
from evflow.runtime.ratelimit import RateLimitedLog

from ._jsvalues import to_number, to_string, truthy

# The key in msg.meta of a message a return-mode link out hands back to its link call: (the link
# call's id, the call's id). The link call removes it before sending the message on.
_RETURN = "evflow.link_return"


def _blank_is(default: str) -> Callable[[str], str]:
    return lambda value: value or default


def find_link_in(context: NodeContext, target: Any, by_name: bool) -> str:
    """The id of the link in node ``target`` names: its id; with ``by_name`` also its name (one on
    this tab first), as Node-RED's link call looks it up."""
    key = to_string(target) if target is not None and target is not UNDEFINED else ""
    link_ins = context.nodes("link in")
    if any(node.id == key for node in link_ins):
        return key
    if by_name and truthy(target):
        named = [node for node in link_ins if (node.name or node.id) == key]
        here = [node for node in named if node.tab == context.tab]
        if len(here) == 1:
            return here[0].id
        if len(named) == 1:
            return named[0].id
        if named:
            raise LookupError(f"Multiple link-in nodes named '{key}' found")
    raise LookupError(f"target link-in node '{key if truthy(target) else ''}' not found")


# ---- link in ----------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LinkInConfig:
    # the link out nodes that send here (the editor's record; the link out's `links` is what counts)
    links: tuple[str, ...] = ()


class LinkIn(Node[LinkInConfig]):
    """Passes on what link out nodes send it (and link call nodes call it with)."""

    type = "link in"
    Config = LinkInConfig
    inline = True

    async def receive(self, msg: Message) -> None:
        await self.send(msg)


# ---- link out ---------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LinkOutConfig:
    # "link": send to the link in nodes in `links`; "return": back to the link call that called
    mode: str = attrs.field(default="link", converter=_blank_is("link"))
    # mode "link": ids of the link in nodes to send to
    links: tuple[str, ...] = ()


class LinkOut(Node[LinkOutConfig]):
    """Sends to its link in nodes, or returns to the calling link call (see the module docstring)."""

    type = "link out"
    Config = LinkOutConfig
    inline = True

    def __init__(self, context: NodeContext, config: LinkOutConfig) -> None:
        super().__init__(context, config)
        self._event = f"node:{context.node_id}"
        self._warn = RateLimitedLog(context.log)

    @classmethod
    def check(cls, config: LinkOutConfig) -> list[ConfigWarning]:
        if config.mode not in ("link", "return"):
            raise ValueError(f"mode must be 'link' or 'return', got {config.mode!r} @ $.mode")
        return []

    @classmethod
    def links(cls, config: LinkOutConfig) -> tuple[str, ...]:
        return config.links if config.mode == "link" else ()

    async def receive(self, msg: Message) -> None:
        props = {**msg.props, "_event": self._event}
        if self.config.mode == "link":
            await self.send(msg.with_props(props))
            return
        stack = props.get("_linkSource")
        call = stack[-1] if isinstance(stack, list) and stack else None
        link_call = call.get("node") if isinstance(call, dict) else None
        if not isinstance(link_call, str) or not any(node.id == link_call for node in self.context.nodes("link call")):
            self._warn("Missing return node information")
            return
        props["_linkSource"] = stack[:-1]
        meta = MappingProxyType({**msg.meta, _RETURN: (link_call, call.get("id"))})
        await self.context.send_to(link_call, Message(msg.payload, msg.topic, msg.msg_id, meta, msg.error, props))


# ---- link call --------------------------------------------------------------------------------------


def _check_links(value: Any) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ValueError("links is a list of link in node ids (or one id)")


@attrs.frozen(kw_only=True)
class LinkCallConfig:
    # linkType "static": the link in to call, as a list of one id (or the id)
    links: Any = attrs.field(default=(), validator=field_check(_check_links))
    # "static": call `links`; "dynamic": call the link in msg.target names (its id or its name)
    linkType: str = attrs.field(default="static", converter=_blank_is("static"))
    # seconds to wait for the return before the message fails with "timeout"
    timeout: LooseStr = "30"


def _static_target(config: LinkCallConfig) -> str | None:
    links = config.links
    if isinstance(links, str):
        return links or None
    return links[0] if links else None


def _timeout(config: LinkCallConfig) -> float:
    """``parseFloat(timeout || "30")``; 30 for what is not a number, as in Node-RED."""
    seconds = to_number(config.timeout or "30")
    return 30.0 if math.isnan(seconds) else float(seconds)


@attrs.define(eq=False)
class _Call:
    deadline: float
    msg: Message  # as it was called, for the timeout's failure


class LinkCall(Node[LinkCallConfig]):
    """Calls a link in and sends on what comes back (see the module docstring)."""

    type = "link call"
    Config = LinkCallConfig
    # Its timeouts run in `run`, started once the flow is ready; it takes input as well.
    is_source = True
    inline = True

    def __init__(self, context: NodeContext, config: LinkCallConfig) -> None:
        super().__init__(context, config)
        self._dynamic = config.linkType == "dynamic"
        self._target = _static_target(config)
        self._timeout = _timeout(config)
        # Calls waiting for their return, oldest first: with one timeout for all, also soonest due first.
        self._calls: dict[str, _Call] = {}
        self._called = trio.Event()

    @classmethod
    def check(cls, config: LinkCallConfig) -> list[ConfigWarning]:
        if config.linkType not in ("static", "dynamic"):
            raise ValueError(f"linkType must be 'static' or 'dynamic', got {config.linkType!r} @ $.linkType")
        if config.linkType == "static" and _static_target(config) is None:
            raise ValueError("a static link call needs the id of the link in node to call @ $.links")
        if config.timeout and math.isnan(to_number(config.timeout)):
            raise ValueError(f"timeout must be a number of seconds, got {config.timeout!r} @ $.timeout")
        if _timeout(config) <= 0:
            return [ConfigWarning("$.timeout", "a timeout of 0 seconds fails every call that does not return at once")]
        return []

    async def start(self) -> None:
        if not self._dynamic:
            try:
                find_link_in(self.context, self._target, by_name=False)
            except LookupError as exc:
                self.context.log.warning("%s: every message will fail", exc)

    async def run(self) -> None:
        """Fail the calls that did not return in time."""
        while True:
            if not self._calls:
                await self._called.wait()
                self._called = trio.Event()
                continue
            call_id, call = next(iter(self._calls.items()))
            await trio.sleep_until(call.deadline)
            if self._calls.get(call_id) is call:
                del self._calls[call_id]
                await self.context.error("timeout", call.msg)

    async def receive(self, msg: Message) -> None:
        returned = msg.meta.get(_RETURN)
        if returned is not None and returned[0] == self.context.node_id:
            await self._returned(returned[1], msg)
            return
        target = find_link_in(
            self.context, msg.props.get("target", UNDEFINED) if self._dynamic else self._target, self._dynamic
        )
        stack = msg.props.get("_linkSource")
        stack = list(stack) if isinstance(stack, list) else []
        called = msg.with_props({**msg.props, "_linkSource": stack})
        call_id = secrets.token_hex(14)
        self._calls[call_id] = _Call(trio.current_time() + self._timeout, called.copy())
        self._called.set()
        stack.append({"id": call_id, "node": self.context.node_id})
        await self.context.send_to(target, called)

    async def _returned(self, call_id: Any, msg: Message) -> None:
        props = dict(msg.props)
        if props.get("_linkSource") == []:
            del props["_linkSource"]
        meta: Mapping[str, Any] = {key: value for key, value in msg.meta.items() if key != _RETURN}
        self._calls.pop(call_id, None)  # gone when it timed out: sent on all the same, as in Node-RED
        await self.send(Message(msg.payload, msg.topic, msg.msg_id, MappingProxyType(meta), msg.error, props))
