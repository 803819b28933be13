"""Node-RED's messages against evflow's, and a diff a person can read.

A message is compared by topic, QoS, retain flag and payload. The payload is compared byte for byte
(the default: what a subscriber gets), or with ``"compare": "json"`` as parsed JSON where both sides
parse (key order and number spelling aside; true is not 1). Messages are compared in order per topic
(the default: the order across topics is the timing of separate publishers), in order across all
topics (``"order": "global"``), or as a multiset (``"order": "none"``).
"""

from __future__ import annotations

import base64
import difflib
import json
import re
from typing import Any

from corpus import Case, Output

_CONTROL = re.compile(r"[\x00-\x1f\x7f\\`]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\", "`": "\\`"}


def _canonical(payload: bytes) -> str | None:
    """The payload's JSON value written one way (keys sorted, 1.0 as 1), or None when it is not JSON."""

    def normal(value: Any) -> Any:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, list):
            return [normal(item) for item in value]
        if isinstance(value, dict):
            return {key: normal(item) for key, item in value.items()}
        return value

    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return json.dumps(normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def show_payload(payload: bytes) -> str:
    """The payload between backquotes as text, control characters escaped; base64 when not UTF-8.
    Never shortened: two payloads that differ anywhere are shown differently."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(payload).decode("ascii")
    return "`" + _CONTROL.sub(lambda m: _ESCAPES.get(m.group(), f"\\x{ord(m.group()):02x}"), text) + "`"


def _line(output: Output, compare: str) -> str:
    """The message as one line; two messages are the same when their lines are."""
    flags = f"qos={output.qos}{' retain' if output.retain else ''}"
    if compare == "json":
        canonical = _canonical(output.payload)
        if canonical is not None:
            return f"{output.topic}  {flags}  json {canonical}"
    return f"{output.topic}  {flags}  {show_payload(output.payload)}"


def _groups(case: Case, outputs: list[Output]) -> dict[str, list[Output]]:
    """The messages by what is compared in order: each topic, or all of them (``order: global``)."""
    groups: dict[str, list[Output]] = {}
    for output in outputs:
        groups.setdefault("all topics" if case.order == "global" else output.topic, []).append(output)
    if case.order == "none":
        return {key: sorted(group, key=lambda o: _line(o, case.compare)) for key, group in groups.items()}
    return groups


def _same_json_notes(expected: list[Output], actual: list[Output], labels: tuple[str, str]) -> list[str]:
    """Messages in the same place whose payloads differ in bytes only (JSON spacing, key order, 1.0)."""
    notes = []
    for want, got in zip(expected, actual):
        if want.payload != got.payload:
            canonical = _canonical(want.payload)
            if canonical is not None and canonical == _canonical(got.payload):
                notes.append(f"  note: the same JSON value written differently: {show_payload(want.payload)} "
                             f"({labels[0]}) vs {show_payload(got.payload)} ({labels[1]})")
    return notes


def diff(case: Case, expected: list[Output], actual: list[Output],
         labels: tuple[str, str] = ("Node-RED", "evflow")) -> list[str]:
    """An empty list when evflow published what Node-RED did; else diff lines (- Node-RED, + evflow)."""
    want, got = _groups(case, expected), _groups(case, actual)
    lines: list[str] = []
    for key in sorted(set(want) | set(got)):
        a = [_line(output, case.compare) for output in want.get(key, [])]
        b = [_line(output, case.compare) for output in got.get(key, [])]
        if a == b:
            continue
        lines.append(f"{key}: {labels[0]} {len(a)} message(s), {labels[1]} {len(b)}")
        lines += ["  " + line.rstrip() for line in difflib.ndiff(a, b) if line[:1] in "-+?"]
        lines += _same_json_notes(want.get(key, []), got.get(key, []), labels)
    return lines
