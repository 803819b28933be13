"""The JavaScript engine of the ``function`` node: a QuickJS context per node, with limits.

QuickJS comes with the optional extra ``evflow[function]`` (the ``quickjs-ng`` package, whose
module is ``quickjs``). Each :class:`Sandbox` is one QuickJS runtime with a memory limit (bytes of
JavaScript heap) and a time limit (seconds of CPU, per call: QuickJS interrupts the code when it is
exceeded, so an endless loop ends). The node's code runs in it next to ``_function_prelude.js``,
which gives the code Node-RED's ``node``, ``context``, ``flow``, ``global``, ``env`` and ``RED``.

A call runs synchronously, in the caller's thread: QuickJS is not to be shared between threads, and
handing each call to a worker thread would cost far more than the call (see docs/function-node.md).

QuickJS forbids calls from JavaScript into Python while a time limit is set, so values cross only as
JSON text, once in and once out per call: Python sends the message (and the context stores the code
names), and gets back what the code did, in order (the prelude's "effects"). Bytes cross as
Node-RED's JSON form of a Buffer, ``{"type": "Buffer", "data": [...]}``, which the prelude makes a
Buffer, and come back as bytes; NaN and ±Infinity, which JSON has no form for, as marked strings
(``"\uffffnumber:NaN"``), made numbers again on each side; a typed (attrs) value crosses as its
JSON form.

Timers: the prelude keeps the callbacks; the node keeps the deadlines and calls :meth:`Sandbox.fire`
when one is due.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import json
import math
import re
import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import attrs

from evflow.runtime.codec import unstructure
from evflow.runtime.errors import EvflowError
from evflow.runtime.properties import UNDEFINED

__all__ = [
    "EXTRA",
    "EngineMissing",
    "JavaScriptError",
    "JavaScriptOutOfMemory",
    "JavaScriptTimeout",
    "Outcome",
    "Sandbox",
    "from_json",
    "load_engine",
    "to_json",
]

# What to install for the function node.
EXTRA = "evflow[function]"

_OUT_OF_MEMORY = "InternalError: out of memory"
# What else QuickJS throws when it runs out of memory while making the error itself: null, or no
# value at all. (A thrown null is so reported too: Node-RED cannot report one either, it fails on it.)
_OUT_OF_MEMORY_TOO = frozenset({"null", "[uninitialized]"})
_INTERRUPTED = "InternalError: interrupted"
_BUFFER_MARK = '"type":"Buffer"'
# Where the prelude's Buffer part begins, and code that names Buffer (and so needs it).
_BUFFER_PART = "// ==== evflow: Buffer ===="
_NAMES_BUFFER = re.compile(r"\bBuffer\b")
# NaN and ±Infinity as a marked string: the mark, then the number's JavaScript text. U+FFFF is a
# noncharacter (Unicode's own for internal use), which JSON writes as it is and `in` finds at once
# (a text with no character past U+00FF cannot hold it, and is not read). The pattern takes a marked
# string only as a whole value (a quote after ":", "," or "[" opens a string: within one, a quote is
# escaped), never as a piece of a longer text.
_MARK_CHARACTER = "\uffff"
_NUMBER_MARK = _MARK_CHARACTER + "number:"
_MARKED_NUMBER = re.compile(r'(?<=[:,\[])"' + _NUMBER_MARK + r'(NaN|-?Infinity)"')


class EngineMissing(EvflowError):
    """The JavaScript engine is not installed."""


class JavaScriptError(Exception):
    """A failure of the node's code, worded as Node-RED words it: ``TypeError: …``."""


class JavaScriptTimeout(JavaScriptError):
    """The code ran past its time limit (an endless loop, say) and was stopped."""


class JavaScriptOutOfMemory(JavaScriptError):
    """The code needed more memory than its limit allows."""


def load_engine() -> ModuleType:
    """The QuickJS module, or :class:`EngineMissing` saying what to install."""
    try:
        import quickjs
    except ImportError:
        raise EngineMissing(
            f"the function node needs a JavaScript engine, which is not installed: pip install '{EXTRA}'"
        ) from None
    if not _is_quickjs_ng():
        # The archived `quickjs` package has a module of the same name, whose context stays broken
        # once its code ran out of memory.
        raise EngineMissing(
            f"the module quickjs is not quickjs-ng's: pip uninstall quickjs, then pip install '{EXTRA}'"
        )
    return quickjs


@functools.cache
def _is_quickjs_ng() -> bool:
    try:
        importlib.metadata.distribution("quickjs-ng")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@functools.cache
def _prelude() -> tuple[str, str]:
    """The prelude, and its Buffer part (evaluated only when wanted: see ``_function_prelude.js``)."""
    text = importlib.resources.files("evflow.nodes").joinpath("_function_prelude.js").read_text("utf-8")
    main, marker, buffer = text.partition(_BUFFER_PART)
    return main, marker + buffer


# ---- JSON across the boundary -------------------------------------------------------------------


def _json_form(value: Any) -> Any:
    """The JSON form of what the json module cannot write itself."""
    if isinstance(value, bytes | bytearray):
        return {"type": "Buffer", "data": list(value)}
    if attrs.has(type(value)):
        return unstructure(value)
    if isinstance(value, set | frozenset):
        return list(value)
    if value is UNDEFINED:
        return None
    raise TypeError(f"a {type(value).__name__} is not JSON")


def _marked(value: Any) -> Any:
    """``value`` with NaN and ±Infinity as marked strings, all the way down."""
    kind = type(value)
    if kind is float and not math.isfinite(value):
        return _NUMBER_MARK + ("NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity")
    if kind is dict:
        return {key: _marked(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_marked(item) for item in value]
    return value


# JavaScript's JSON.parse takes no NaN or Infinity: refused by the first encoder, written marked by
# the second (only then: the marking costs a walk through the whole value).
_ENCODER = json.JSONEncoder(default=_json_form, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_MARKING_ENCODER = json.JSONEncoder(
    default=lambda value: _marked(_json_form(value)), ensure_ascii=False, separators=(",", ":"), allow_nan=False
)


def to_json(value: Any, what: str = "the value") -> str:
    """``value`` as JSON text for JavaScript; :class:`JavaScriptError` for what JSON cannot carry."""
    try:
        try:
            return _ENCODER.encode(value)
        except ValueError as exc:
            if "Out of range float" not in str(exc):
                raise
            return _MARKING_ENCODER.encode(_marked(value))
    except (TypeError, ValueError, RecursionError) as exc:
        raise JavaScriptError(f"{what} cannot be handed to JavaScript: {exc}") from None


def from_json(text: str) -> Any:
    """JSON text from JavaScript as Python values (Buffers as bytes, marked numbers as NaN and
    ±Infinity; integral numbers are ints)."""
    if _MARK_CHARACTER in text:
        text = _MARKED_NUMBER.sub(r"\1", text)  # json reads NaN, Infinity and -Infinity
    value = json.loads(text)
    return _buffers(value) if _BUFFER_MARK in text else value


def _buffers(value: Any) -> Any:
    if type(value) is dict:
        data = value.get("data")
        if len(value) == 2 and value.get("type") == "Buffer" and type(data) is list:
            try:
                return bytes(data)
            except (TypeError, ValueError):
                pass  # not bytes after all: an object like any other
        return {key: _buffers(item) for key, item in value.items()}
    if type(value) is list:
        return [_buffers(item) for item in value]
    return value


def _is_out_of_memory(failure: str) -> bool:
    return failure.startswith(_OUT_OF_MEMORY) or failure in _OUT_OF_MEMORY_TOO


# ---- the sandbox --------------------------------------------------------------------------------


@attrs.frozen
class Outcome:
    """What one call did: its effects in order (see ``_function_prelude.js``) and, when the code
    failed (threw, or called ``node.done(err)``), why."""

    effects: list[list[Any]]
    failure: JavaScriptError | None = None


class Sandbox:
    """One QuickJS context with the prelude, the node's code and its limits.

    ``info`` is what the code may read of its node: ``id``, ``name``, ``outputs`` and ``env`` (a
    mapping of the environment variables ``env.get`` finds, or None).
    """

    def __init__(self, info: Mapping[str, Any], *, time_limit: float, memory_limit: int) -> None:
        quickjs = load_engine()
        self._errors: tuple[type[Exception], ...] = (quickjs.JSException,)
        self.time_limit = time_limit
        self.memory_limit = memory_limit
        self._context = quickjs.Context()
        self._context.set_memory_limit(memory_limit)
        self._context.set_time_limit(time_limit)
        try:
            self._context.eval(_prelude()[0])
            self._context.get("__evflow_install")(to_json(info, "the node's environment"))
        except self._errors as exc:
            raise self._failure(exc) from None
        self._compile = self._context.get("__evflow_compile")
        self._call = self._context.get("__evflow_call")
        self._fire = self._context.get("__evflow_fire")
        self._settle = self._context.get("__evflow_settle")
        self._marked_outcome = self._context.get("__evflow_marked_outcome")
        self._abandon = self._context.get("__evflow_abandon")
        self._has_buffer = False

    def compile(self, kind: str, source: str) -> str | None:
        """Make ``source`` the code of ``kind`` ("body", "setup" or "cleanup"): None, or its syntax
        error as Node-RED words it, with the line and column in ``source``."""
        try:
            if _NAMES_BUFFER.search(source):
                self._install_buffer()
            error: str | None = self._compile(kind, source)
        except self._errors as exc:
            raise self._failure(exc) from None
        return error

    def run(self, kind: str, request: str) -> Outcome:
        """Run the code of ``kind`` on ``request`` (JSON: ``msg``, ``stores``). Raises
        :class:`JavaScriptTimeout` or :class:`JavaScriptOutOfMemory` when a limit stopped it (then
        nothing it did is carried out), or :class:`JavaScriptError` when the engine failed."""
        return self._outcome(self._call, kind, request, self._needs_reviving(request))

    def fire(self, timer_id: int, request: str) -> Outcome:
        """Run the callback of the timer ``timer_id``, which is due, on ``request`` (JSON:
        ``stores``), under the same limits as :meth:`run`."""
        return self._outcome(self._fire, timer_id, request, self._needs_reviving(request))

    def _needs_reviving(self, request: str) -> bool:
        """Whether JavaScript must read ``request`` with the prelude's reviver: it may hold a Buffer's
        JSON form (then Buffer must be there) or a marked number. Python finds out far faster than
        JavaScript would."""
        if _BUFFER_MARK in request:
            try:
                self._install_buffer()
            except self._errors as exc:
                raise self._failure(exc) from None
            return True
        return _MARK_CHARACTER in request

    def _install_buffer(self) -> None:
        if not self._has_buffer:
            self._context.eval(_prelude()[1])
            self._has_buffer = True

    def _outcome(self, call: Any, *args: Any) -> Outcome:
        try:
            text = self._text_of(call, *args)
            outcome = from_json(text)
            failure = outcome.get("failure")
            if failure is None:
                return Outcome(outcome["effects"])
            lost = outcome.get("lost")  # why the effects could not be handed back
            if _is_out_of_memory(failure) or (lost is not None and _is_out_of_memory(lost)):
                raise self._out_of_memory()  # thrown, and caught by the prelude
        except JavaScriptError:
            self._forget_call()
            raise
        if lost is not None:
            failure += f" (and what it did cannot be carried out: {lost})"
        return Outcome(outcome["effects"], JavaScriptError(failure))

    def _text_of(self, call: Any, *args: Any) -> str:
        try:
            text = call(*args)
            if text is None:  # a promise, or a timer's callback: run what it queued, within the limit
                started = time.perf_counter()
                while self._context.execute_pending_job():
                    if time.perf_counter() - started > self.time_limit:
                        raise self._timeout()
                text = self._settle()
            if "null" in text:  # perhaps NaN or ±Infinity, which JSON writes so (a scan costs more in JavaScript)
                text = self._marked_outcome()
        except self._errors as exc:
            raise self._failure(exc) from None
        return text  # type: ignore[no-any-return]

    def _forget_call(self) -> None:
        """Nothing the stopped call did is carried out: the timers it set or cleared are put back
        as they were on the JavaScript side too."""
        try:
            self._abandon()
        except self._errors:
            pass  # (out of memory still: a timer it set stays there, never due, until the node starts afresh)

    def memory_used(self) -> int:
        """Bytes of JavaScript heap in use."""
        return int(self._context.memory()["memory_used_size"])

    def _failure(self, exc: Exception) -> JavaScriptError:
        message = str(exc).partition("\n")[0]  # the stack follows
        if message.startswith(_INTERRUPTED):
            return self._timeout()
        if _is_out_of_memory(message):
            return self._out_of_memory()
        return JavaScriptError(message)

    def _timeout(self) -> JavaScriptTimeout:
        # Node-RED's words (those of Node.js's vm module)
        return JavaScriptTimeout(f"Error: Script execution timed out after {round(self.time_limit * 1000)}ms")

    def _out_of_memory(self) -> JavaScriptOutOfMemory:
        self._context.gc()  # what the stopped code held is garbage now
        return JavaScriptOutOfMemory(
            f"{_OUT_OF_MEMORY} (the limit of a function node is {self.memory_limit / 2**20:g} MiB)"
        )
