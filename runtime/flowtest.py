"""Declarative flow tests (``evflow test``): inputs and expected outputs per flow file, as JSON.

    {
      "flow": "../flows/certificate-check.json",          (relative to this file)
      "env": {"NAME": "value"},                            (optional)
      "everest": {"pki": {"expired_leaf": true}},          (optional: a private broker and the
                                                            simulator; sets EVFLOW_BROKER and
                                                            EVEREST_MODULE_ID for the flow)
      "cases": [
        {"name": "the SECC leaf is usable",
         "inject": {"node": "v2g-leaf", "payload": null},  (optional: else the flow's own sources)
         "expect": [{"node": "leaf-accepted", "port": 0, "timeout": 5,
                     "payload": {"status": "Accepted"}}]}  (payload: a subset of the JSON form;
      ]                                                     or "error": a fragment of msg.error)
    }

Each case runs on a fresh run of the flow. A payload expectation matches when every key it names has
that value in the message's payload (typed payloads compared in their JSON form), recursively;
lists and other values compare equal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from .codec import CodecError, structure, unstructure

__all__ = ["CaseResult", "load_test_file", "run_test_file"]


@attrs.frozen(kw_only=True)
class Inject:
    node: str
    payload: Any = None
    topic: str = ""


@attrs.frozen(kw_only=True)
class Expect:
    node: str
    port: int = 0
    timeout: float = 5.0
    payload: Any = None
    topic: str | None = None
    # a fragment that msg.error.message must contain
    error: str | None = None


@attrs.frozen(kw_only=True)
class Case:
    name: str
    inject: tuple[Inject, ...] = ()
    expect: tuple[Expect, ...] = ()


@attrs.frozen(kw_only=True)
class EverestSetup:
    module_id: str = "evse_security_api"
    pki: dict[str, bool] = attrs.field(factory=dict)
    strict: bool = False


@attrs.frozen(kw_only=True)
class TestFile:
    flow: str
    cases: tuple[Case, ...]
    env: dict[str, str] = attrs.field(factory=dict)
    everest: EverestSetup | None = None


@attrs.frozen
class CaseResult:
    name: str
    passed: bool
    detail: str = ""


class TestFileError(ValueError):
    pass


def load_test_file(path: Path) -> TestFile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TestFileError(f"{path}: cannot read: {exc}") from None
    except ValueError as exc:
        raise TestFileError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict):  # an inject or expect may be written as one object instead of a list
        for case in data.get("cases", []) if isinstance(data.get("cases"), list) else []:
            for key in ("inject", "expect"):
                if isinstance(case, dict) and isinstance(case.get(key), dict):
                    case[key] = [case[key]]
    try:
        return structure(data, TestFile)
    except CodecError as exc:
        raise TestFileError(f"{path}: " + "; ".join(exc.problems)) from None


def matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and matches(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


async def run_case(test: TestFile, case: Case, flow_path: Path, env: dict[str, str]) -> CaseResult:
    from .testing import run_flow

    async with run_flow([flow_path], env=env) as flow:
        for item in case.inject:
            await flow.inject(item.node, item.payload, item.topic)
        for expected in case.expect:
            try:
                msg = await flow.expect(expected.node, expected.port, expected.timeout)
            except trio.TooSlowError:
                return CaseResult(case.name, False, f"nothing from {expected.node!r} port {expected.port} "
                                                    f"within {expected.timeout:g} s")
            payload = unstructure(msg.payload)
            if expected.payload is not None and not matches(expected.payload, payload):
                return CaseResult(case.name, False, f"{expected.node!r} port {expected.port} sent payload "
                                                    f"{json.dumps(payload, default=str)}, expected {json.dumps(expected.payload)}")
            if expected.topic is not None and msg.topic != expected.topic:
                return CaseResult(case.name, False, f"{expected.node!r} sent topic {msg.topic!r}, expected {expected.topic!r}")
            if expected.error is not None and (msg.error is None or expected.error not in msg.error.message):
                got = msg.error.message if msg.error else "no error"
                return CaseResult(case.name, False, f"{expected.node!r} error {got!r} does not contain {expected.error!r}")
    return CaseResult(case.name, True)


async def run_test_file(path: Path) -> list[CaseResult]:
    from .testing import everest_simulator

    test = load_test_file(path)
    flow_path = (path.parent / test.flow).resolve()
    results = []
    if test.everest is None:
        for case in test.cases:
            results.append(await run_case(test, case, flow_path, dict(test.env)))
        return results
    setup = test.everest
    async with everest_simulator(module_id=setup.module_id, pki=setup.pki, strict=setup.strict,
                                 heartbeat_interval_ms=200) as everest:
        for case in test.cases:
            results.append(await run_case(test, case, flow_path, {**test.env, **everest.env}))
    return results


def summarize(results: Sequence[CaseResult]) -> str:
    passed = sum(r.passed for r in results)
    return f"{passed} passed, {len(results) - passed} failed"
