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
Node-RED's JSON form of a Buffer, ``{"type": "Buffer", "data": [...]}``, and come back as bytes; a
typed (attrs) value crosses as its JSON form.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.resources
import json
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
def _prelude() -> str:
    return importlib.resources.files("evflow.nodes").joinpath("_function_prelude.js").read_text("utf-8")


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


# JavaScript's JSON.parse takes no NaN or Infinity: refused here, with the reason.
_ENCODER = json.JSONEncoder(default=_json_form, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def to_json(value: Any, what: str = "the value") -> str:
    """``value`` as JSON text for JavaScript; :class:`JavaScriptError` for what JSON cannot carry."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise JavaScriptError(f"{what} cannot be handed to JavaScript: {exc}") from None


def from_json(text: str) -> Any:
    """JSON text from JavaScript as Python values (Buffers as bytes; integral numbers are ints)."""
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
            self._context.eval(_prelude())
            self._context.get("__evflow_install")(to_json(info, "the node's environment"))
        except self._errors as exc:
            raise self._failure(exc) from None
        self._compile = self._context.get("__evflow_compile")
        self._call = self._context.get("__evflow_call")
        self._settle = self._context.get("__evflow_settle")

    def compile(self, kind: str, source: str) -> str | None:
        """Make ``source`` the code of ``kind`` ("body", "setup" or "cleanup"): None, or its syntax
        error as Node-RED words it, with the line and column in ``source``."""
        try:
            error: str | None = self._compile(kind, source)
        except self._errors as exc:
            raise self._failure(exc) from None
        return error

    def run(self, kind: str, request: str) -> Outcome:
        """Run the code of ``kind`` on ``request`` (JSON: ``msg``, ``stores``). Raises
        :class:`JavaScriptTimeout` or :class:`JavaScriptOutOfMemory` when a limit stopped it (then
        nothing it did is carried out), or :class:`JavaScriptError` when the engine failed."""
        try:
            text = self._call(kind, request)
            if text is None:  # the code returned a promise: run what it waits for, within the limit
                started = time.perf_counter()
                while self._context.execute_pending_job():
                    if time.perf_counter() - started > self.time_limit:
                        raise self._timeout()
                text = self._settle()
        except self._errors as exc:
            raise self._failure(exc) from None
        outcome = from_json(text)
        failure = outcome.get("failure")
        if failure is None:
            return Outcome(outcome["effects"])
        lost = outcome.get("lost")  # why the effects could not be handed back
        if _is_out_of_memory(failure) or (lost is not None and _is_out_of_memory(lost)):
            raise self._out_of_memory()  # thrown, and caught by the prelude
        if lost is not None:
            failure += f" (and what it did cannot be carried out: {lost})"
        return Outcome(outcome["effects"], JavaScriptError(failure))

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
