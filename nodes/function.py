"""``function``: runs the flow's own JavaScript on each message, as Node-RED 4's function node
(nodes/core/function/10-function.js), in a sandboxed QuickJS engine (the extra ``evflow[function]``;
without it a flow with a function node fails validation, saying so).

Node-RED 4's properties: ``func`` (the code, the body of a function of ``msg``), ``outputs``,
``timeout`` (seconds per call; 0: evflow's default limit), ``initialize`` and ``finalize`` (code run
when the flow starts and stops), ``noerr`` (the editor's count of problems it saw in the code: a
warning when not 0; evflow checks the syntax itself, at validation) and ``libs`` (npm modules:
refused, naming them).

What the code has, as in Node-RED: ``msg`` (a copy of the message as JSON: ``payload``, ``topic``,
``_msgid`` and every other property; bytes as a ``Buffer``, a typed payload in its JSON form);
``return msg``, ``return [msg1, [msg2, msg3], null]`` (one entry per output), ``return null``;
``node.send(msg|array)`` (order kept, before what the code returns), ``node.error(err, msg)``
(routed like a failure, to ``catch`` nodes), ``node.done(err)``, ``node.warn/log/error/debug/trace``
(the log), ``node.status``, ``node.id/name/outputCount``; ``context``, ``flow`` and ``global`` with
``get/set/keys`` (arrays of keys and callbacks too) on the node's context stores; ``env.get`` (with
``NR_NODE_ID/NAME``, ``NR_FLOW_ID/NAME``, ``NR_GROUP_ID/NAME``); ``RED.util.cloneMessage/generateId``;
``console.log/warn/error``; ``Buffer`` (Node.js's, the common part: see the prelude); and
``setTimeout``, ``setInterval``, ``clearTimeout``, ``clearInterval``. A thrown error fails the
message (``TypeError: …``, routed to ``catch`` nodes). The message sent keeps the ``msg_id`` of the
one received; ``_msgid`` is not copied into it.

Timers: the callbacks stay in JavaScript, the deadlines here, in the node's one background task (it
is a source that also takes input, as ``delay``: its ``run`` starts when the flow is ready and stops
first on shutdown). A due callback runs under the same limits as a message's call, and what it does
is carried out the same way; what it sends keeps the ``msg_id`` of the message whose call set the
timer, as in Node-RED. A callback that throws (or is stopped by a limit) is a node error with no
message, as Node-RED's ``node.error(err, {})``; ``node.done(err)`` in it fails that message. A
message's code that awaits a timer (``await new Promise(r => setTimeout(r, 100))``) goes on when it
fires, and what it returns is sent then. At most 10,000 timers are set at once (beyond, setTimeout
throws); all are cleared when the node closes (after the cleanup code) and when its JavaScript starts
afresh.

Limits: each call may run ``timeout`` seconds of CPU (else ``EVFLOW_FUNCTION_TIMEOUT``, 1 s: Node-RED
has none by default, but an endless loop must not stop the flow) and use ``EVFLOW_FUNCTION_MEMORY_MB``
(64) MiB of JavaScript heap; past either the call is stopped and the message fails (nothing the call
did is carried out), and the node goes on with the next. Calls run synchronously in the trio loop,
so a call holds the flow for as long as it runs (at most its time limit).

Not supported, and why: modules (``libs``, ``require``, ``import()``) and Node.js (``process``,
``util``, ``setImmediate``, the file system, the network): the code stays in its sandbox;
``node.send`` from the setup code and ``node.on``. Values cross between JavaScript and Python as
JSON: an object got from a context store and changed in place is written back when the call ends
(as Node-RED's memory store keeps it), but the code's objects are never shared with other nodes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from evflow.runtime.errors import EvflowError
from evflow.runtime.nodeapi import (
    UNDEFINED,
    ConfigWarning,
    LooseInt,
    LooseStr,
    Message,
    Node,
    NodeContext,
    PropertyError,
    error_object,
    msg_id_text,
    new_message,
)

from ._sandbox import (
    EngineMissing,
    JavaScriptError,
    JavaScriptOutOfMemory,
    JavaScriptTimeout,
    Outcome,
    Sandbox,
    to_json,
)
from .delay import Timers, next_tick

__all__ = ["Function", "FunctionConfig", "FunctionLib"]

# A call's time limit when the node sets none (`timeout` 0): seconds, from the environment
# (Node-RED's `globalFunctionTimeout`, which is unset by default: evflow always has a limit).
TIME_LIMIT_VARIABLE = "EVFLOW_FUNCTION_TIMEOUT"
DEFAULT_TIME_LIMIT = 1.0
# The JavaScript heap of each function node: MiB, from the environment.
MEMORY_LIMIT_VARIABLE = "EVFLOW_FUNCTION_MEMORY_MB"
DEFAULT_MEMORY_LIMIT_MB = 64
# Node-RED's editor's upper bound for `timeout` (Node.js's longest timer, in seconds).
MAX_TIMEOUT = 4294967

# The kinds of code, the properties that hold them, and Node-RED's names for them.
_CODE = (("body", "func"), ("setup", "initialize"), ("cleanup", "finalize"))
# Names of the code's context stores and environment: their values go into the sandbox only for
# code that names them (a word in the code, even in a comment, is enough); `context.flow` and
# `context.global` name the other two stores.
_NAMED = re.compile(r"\b(?:context\s*\.\s*)?(context|flow|global|env)\b")
# The variables env.get reads besides the process environment.
_NODE_VARIABLES = ("NR_NODE_ID", "NR_NODE_NAME", "NR_FLOW_ID", "NR_FLOW_NAME", "NR_GROUP_ID", "NR_GROUP_NAME")
# The effects that set and clear timers (see _function_prelude.js).
_TIMER_EFFECTS = frozenset({"timer", "interval", "clear"})


@attrs.frozen(kw_only=True)
class FunctionLib:
    # the variable the module would be given as
    var: str = ""
    # the npm module
    module: str = ""


@attrs.frozen(kw_only=True)
class FunctionConfig:
    # the JavaScript run on each message: the body of a function of `msg` that returns the message to
    # send, an array with one entry per output (a message, an array of messages, or null), or null
    func: str = "\nreturn msg;"
    # number of output ports
    outputs: LooseInt = 1
    # seconds of CPU a call may take before it is stopped and the message fails; 0 or empty: the
    # default limit (EVFLOW_FUNCTION_TIMEOUT, 1 s)
    timeout: LooseStr = "0"
    # the number of problems Node-RED's editor saw in the code (warned about when not 0)
    noerr: LooseInt = 0
    # JavaScript run once when the flow starts (Node-RED's "On Start")
    initialize: str = ""
    # JavaScript run once when the flow stops (Node-RED's "On Stop"); it cannot send
    finalize: str = ""
    # npm modules the code would load: refused, the sandbox loads no modules
    libs: tuple[FunctionLib, ...] = ()


class FunctionStartError(EvflowError):
    """The node's sandbox could not be set up."""


@attrs.frozen
class _Timer:
    """A timer the code set (its callback stays in JavaScript)."""

    # the message whose call set it: what its callback sends keeps that message's id, as Node-RED's
    # node.send in a callback does (None: set by the setup code)
    origin: Message | None
    # an interval's period, in seconds; None: it fires once
    every: float | None


def _seconds(text: str) -> float:
    text = text.strip()
    try:
        seconds = float(text) if text else 0.0
    except ValueError:
        raise ValueError(f"timeout must be a number of seconds, got {text!r} @ $.timeout") from None
    if not 0 <= seconds <= MAX_TIMEOUT:
        raise ValueError(f"timeout must be 0 to {MAX_TIMEOUT} seconds, got {text!r} @ $.timeout")
    return seconds


def _positive_setting(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"the environment variable {name} must be a number above 0, got {text!r} @ $")
    return value


def _limits(config: FunctionConfig) -> tuple[float, int]:
    """The time limit of a call (seconds) and the memory limit (bytes) of the node's sandbox."""
    seconds = _seconds(config.timeout) or _positive_setting(TIME_LIMIT_VARIABLE, DEFAULT_TIME_LIMIT)
    megabytes = _positive_setting(MEMORY_LIMIT_VARIABLE, DEFAULT_MEMORY_LIMIT_MB)
    return seconds, int(megabytes * 2**20)


def _code(config: FunctionConfig) -> list[tuple[str, str, str]]:
    """(kind, property, source) of each piece of code the node has; the body always."""
    return [
        (kind, field, getattr(config, field))
        for kind, field in _CODE
        if kind == "body" or getattr(config, field).strip()
    ]


class Function(Node[FunctionConfig]):
    """Runs the flow's JavaScript on each message, as Node-RED's function node (see the module)."""

    type = "function"
    Config = FunctionConfig
    # The code's timers run in `run`, started once the flow is ready; it takes input as well.
    is_source = True
    inline = True

    def __init__(self, context: NodeContext, config: FunctionConfig) -> None:
        super().__init__(context, config)
        self._time_limit, self._memory_limit = _limits(config)
        named = set(_NAMED.findall(" ".join(source for _, _, source in _code(config))))
        every_store = {"context": context.context, "flow": context.flow, "global": context.global_context}
        # the stores the code names, whose snapshot goes in with each call
        self._stores = {scope: store for scope, store in every_store.items() if scope in named}
        self._uses_env = "env" in named
        # the deadlines of the code's timers, by id, and what each timer is
        self.timers: Timers[int] = Timers()
        self._timers_set: dict[int, _Timer] = {}
        self._sandbox: Sandbox | None = None
        self._setup_failure: str | None = None
        self._status_shown = False
        self._timed_out = 0
        self._out_of_memory = 0

    @classmethod
    def outputs(cls, config: FunctionConfig) -> int:
        return config.outputs

    @classmethod
    def check(cls, config: FunctionConfig) -> list[ConfigWarning]:
        if config.libs:
            names = ", ".join(repr(lib.module or lib.var) for lib in config.libs)
            raise ValueError(f"evflow's function node loads no modules: {names} cannot be used @ $.libs")
        if config.outputs < 0:
            raise ValueError(f"outputs must be 0 or more, got {config.outputs} @ $.outputs")
        time_limit, memory_limit = _limits(config)
        try:
            sandbox = Sandbox({"id": "", "name": "", "outputs": config.outputs, "env": None},
                              time_limit=time_limit, memory_limit=memory_limit)
            for kind, field, source in _code(config):
                error = sandbox.compile(kind, source)
                if error is not None:
                    raise ValueError(f"{error} @ $.{field}")
        except EngineMissing as exc:
            raise ValueError(f"{exc} @ $") from None
        except JavaScriptError as exc:
            raise ValueError(f"the JavaScript sandbox cannot start: {exc} @ $") from None
        if config.noerr:
            return [ConfigWarning("$.noerr", f"Node-RED's editor saw {config.noerr} problem(s) in this node's code")]
        return []

    async def start(self) -> None:
        await self._start_sandbox()

    async def run(self) -> None:
        while True:
            await self.timers.wait()
            while (due := self.timers.pop_due(trio.current_time())) is not None:
                await self._fire(*due)

    async def receive(self, msg: Message) -> None:
        if self._setup_failure is not None:
            raise JavaScriptError(f"not run: the setup code (initialize) failed: {self._setup_failure}")
        try:
            outcome = self._run("body", msg)
        except JavaScriptOutOfMemory:
            await self._start_afresh_if_full()
            raise
        await self._carry_out(outcome, msg)

    async def close(self) -> None:
        if self._sandbox is None:
            return  # it never started
        if self.config.finalize.strip():
            try:
                await self._carry_out(self._run("cleanup", None), None)
            except JavaScriptError as exc:
                self.context.log.error("the cleanup code (finalize) failed: %s", exc)
        self._clear_timers()  # as Node-RED clears them, after the cleanup code (its own too)
        if self._status_shown:
            self.context.status({})  # as Node-RED clears a status the code set

    async def _start_sandbox(self) -> None:
        """A sandbox with the node's code; then its setup code runs."""
        self._clear_timers()  # their callbacks were in the JavaScript started afresh
        info = {
            "id": self.context.node_id,
            "name": self.context.name,
            "outputs": self.config.outputs,
            "env": self._environment() if self._uses_env else None,
        }
        try:
            self._sandbox = Sandbox(info, time_limit=self._time_limit, memory_limit=self._memory_limit)
            for kind, field, source in _code(self.config):
                error = self._sandbox.compile(kind, source)
                if error is not None:
                    raise FunctionStartError(f"{field}: {error}")
        except JavaScriptError as exc:
            raise FunctionStartError(f"the JavaScript sandbox cannot start: {exc}") from None
        self._setup_failure = None
        if self.config.initialize.strip():
            try:
                await self._carry_out(self._run("setup", None), None)
            except JavaScriptError as exc:
                # Node-RED logs it, and the node handles no message from then on
                self._setup_failure = str(exc)
                self.context.log.error("the setup code (initialize) failed: %s", exc)

    async def _start_afresh_if_full(self) -> None:
        """After running out of memory: when the code still holds most of it (in its globals, say),
        every later message would fail too, so its JavaScript starts afresh, as at the flow's start."""
        if self._sandbox is None:
            return
        held = self._sandbox.memory_used()
        if held > self._memory_limit // 2:
            self.context.log.warning("the code holds %.1f MiB of its %.1f MiB after running out of memory: "
                                     "its JavaScript starts afresh (and its setup code runs again)",
                                     held / 2**20, self._memory_limit / 2**20)  # fmt: skip
            await self._start_sandbox()

    def stats(self) -> Mapping[str, int]:
        return {"timed_out": self._timed_out, "out_of_memory": self._out_of_memory}

    # ---- timers -------------------------------------------------------------------------------

    def _set_timers(self, effects: list[list[Any]], origin: Message | None) -> None:
        """Arm and clear the timers a call set and cleared (["timer"|"interval", id, ms], ["clear", id])."""
        for effect in effects:
            kind = effect[0]
            if kind == "timer" or kind == "interval":
                seconds = effect[2] / 1000
                self._timers_set[effect[1]] = _Timer(origin, seconds if kind == "interval" else None)
                self.timers.set(effect[1], trio.current_time() + seconds)
            elif kind == "clear":
                self._timers_set.pop(effect[1], None)
                self.timers.cancel(effect[1])

    def _clear_timers(self) -> None:
        self.timers.clear()
        self._timers_set.clear()

    async def _fire(self, timer_id: int, deadline: float) -> None:
        """A timer is due: its callback runs, and what it did is carried out as for a message."""
        timer = self._timers_set.get(timer_id)
        if timer is None:
            return
        if timer.every is None:
            del self._timers_set[timer_id]
        else:
            self.timers.set(timer_id, next_tick(deadline, timer.every, trio.current_time()))
        try:
            outcome = self._run("timer", None, timer_id)
        except JavaScriptError as exc:
            # stopped by a limit (or its context could not be handed over): as a callback that threw
            if isinstance(exc, JavaScriptOutOfMemory):
                await self._start_afresh_if_full()
            await self.context.error(exc)
            return
        try:
            await self._carry_out(outcome, timer.origin)
        except JavaScriptError as exc:
            # node.done(err) in the callback, or the code of the message that set the timer failed
            # after it waited for it: that message's failure, as in Node-RED
            await self.context.error(exc, timer.origin)

    # ---- into JavaScript and back -------------------------------------------------------------

    def _run(self, kind: str, msg: Message | None, timer_id: int | None = None) -> Outcome:
        """Run the code of ``kind`` on ``msg``; with ``timer_id`` ("timer"), that timer's callback."""
        request: dict[str, Any] = {}
        if msg is not None:
            request["msg"] = self._js_message(msg)
        if self._stores:
            request["stores"] = {
                scope: {key: store.get(key) for key in store.keys()} for scope, store in self._stores.items()
            }
        if self._sandbox is None:
            raise FunctionStartError("the node has not started")
        try:
            if timer_id is not None:
                return self._sandbox.fire(timer_id, to_json(request, "a context value"))
            return self._sandbox.run(kind, to_json(request, "the message or a context value"))
        except JavaScriptTimeout:
            self._timed_out += 1
            raise
        except JavaScriptOutOfMemory:
            self._out_of_memory += 1
            raise

    @staticmethod
    def _js_message(msg: Message) -> dict[str, Any]:
        """The message as the code's ``msg`` (its JSON form; bytes as a Buffer's)."""
        data: dict[str, Any] = {"_msgid": msg_id_text(msg)}
        if msg.payload is not UNDEFINED:
            data["payload"] = msg.payload
        if msg.topic is not UNDEFINED:
            data["topic"] = msg.topic
        data.update(msg.props)
        if msg.error is not None:
            data["error"] = error_object(msg)
        return data

    @staticmethod
    def _message(data: dict[str, Any], origin: Message | None) -> Message:
        """A message the code sent (a JSON object), as the one it answers to, with its id."""
        payload = data.pop("payload", UNDEFINED)
        topic = data.pop("topic", UNDEFINED)
        data.pop("_msgid", None)
        if origin is None:
            return new_message(payload, topic).with_props(data)
        error = None
        if origin.error is not None and data.get("error") == error_object(origin):
            del data["error"]  # the error it came with, untouched: kept as it was
            error = origin.error
        return Message(payload, topic, origin.msg_id, origin.meta, error, data)

    async def _carry_out(self, outcome: Outcome, origin: Message | None) -> None:
        """Do what the code did, in its order (see ``_function_prelude.js``); then fail when it failed.
        Its timers first: they are set in JavaScript already, and must be in Python too even when
        one of its other effects fails."""
        self._set_timers(outcome.effects, origin)
        for effect in outcome.effects:
            kind = effect[0]
            if kind == "send":
                await self.send(self._message(effect[2], origin), effect[1])
            elif kind == "log":
                self._log(effect[1], effect[2])
            elif kind == "error":
                # (no message: a timer's callback threw, which Node-RED reports with none)
                failed = None if effect[2] is None else self._message(effect[2], origin)
                await self.context.error(effect[1], failed)
            elif kind == "status":
                self._status_shown = True
                self.context.status(effect[1])
            elif kind == "set":
                # ["set", scope, key, value], or without a value: delete
                try:
                    self._stores[effect[1]].set(effect[2], effect[3] if len(effect) > 3 else UNDEFINED)
                except PropertyError as exc:
                    raise JavaScriptError(f"Error: {exc}") from None
            elif kind not in _TIMER_EFFECTS:  # (those are set already)
                raise JavaScriptError(f"evflow cannot carry out {effect!r}")
        if outcome.failure is not None:
            raise outcome.failure

    def _log(self, level: str, text: str) -> None:
        log = self.context.log
        if level == "warn":
            log.warning("%s", text)
        elif level == "error":
            log.error("%s", text)
        elif level in ("debug", "trace"):
            log.debug("%s", text)
        else:
            log.info("%s", text)

    def _environment(self) -> dict[str, str]:
        """What ``env.get`` finds: the process environment and the node's own variables."""
        names = [*os.environ, *_NODE_VARIABLES]
        found = {name: self.context.env(name) for name in names}
        return {name: value for name, value in found.items() if value is not None}
