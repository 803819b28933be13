"""``evflow import-nodered``: what of a Node-RED flows file evflow runs, what it does not, and why.

The file is not converted: ``evflow run`` reads Node-RED's own file. The report says how:
directly, or with ``--skip-unsupported`` (and which wires that cuts), or not at all (the errors).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any

from ..flowfile import FlowProblem
from ..flows import CredentialsError, FlowInvalid, load_plan
from ..validate import STRUCTURAL_TYPES, UNSUPPORTED, FlowPlan


def _node_types(path: str) -> collections.Counter[str]:
    """How many nodes of each type the file holds (the structural ones aside)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return collections.Counter()  # load_plan reports why
    if not isinstance(document, list):
        return collections.Counter()
    return collections.Counter(node["type"] for node in document
                               if isinstance(node, dict) and isinstance(node.get("type"), str)
                               and node["type"] not in STRUCTURAL_TYPES)


def report(args: argparse.Namespace) -> tuple[list[str], bool]:
    """The report's lines, and whether the flow runs."""
    options: dict[str, Any] = {"credentials": args.credentials, "node_red_credentials": args.node_red_credentials}
    lines = [f"# {args.flows}", ""]
    types = _node_types(args.flows)
    plan: FlowPlan | None = None
    problems: tuple[FlowProblem, ...] = ()
    try:
        plan = load_plan([args.flows], skip_unsupported=True, **options)
        problems = plan.warnings
    except FlowInvalid as invalid:
        problems = invalid.problems
    unsupported: dict[str, list[str]] = collections.defaultdict(list)
    cut = []
    for problem in problems:
        if problem.message.startswith(UNSUPPORTED) and problem.path.endswith(".type") and problem.node_type:
            unsupported[problem.node_type].append(problem.node_id or "?")
            if "wires to" in problem.message:  # the wires out of a node left out
                cut.append(problem)
        elif UNSUPPORTED in problem.message:
            cut.append(problem)
    runs = plan is not None
    supported = {kind: count for kind, count in types.items() if kind not in unsupported}
    if runs and not unsupported:
        lines.append(f"Runs as it is: `evflow run {args.flows}`.")
    elif runs:
        lines.append(f"Runs without its unsupported nodes: `evflow run --skip-unsupported {args.flows}`.")
    else:
        lines.append("Does not run: fix the errors below.")
    lines += ["", f"## Will run: {sum(supported.values())} node(s)", ""]
    lines += [f"- {kind}: {count}" for kind, count in sorted(supported.items())]
    if unsupported:
        lines += ["", f"## Will not run: {sum(map(len, unsupported.values()))} node(s) of unsupported types", "",
                  "No installed package provides these types (Node-RED's dashboard, contributed nodes): "
                  "`--skip-unsupported` leaves them out."]
        lines += [f"- {kind} ({len(ids)}): {', '.join(ids)}" for kind, ids in sorted(unsupported.items())]
    if cut:
        lines += ["", f"## Wires cut by --skip-unsupported: {len(cut)}", ""]
        lines += [f"- node {p.node_id!r} ({p.node_type}) at {p.path}: {p.message}" for p in cut]
    errors = [p for p in problems if p.severity == "error"]
    others = [p for p in problems if p.severity == "warning" and UNSUPPORTED not in p.message]
    if errors:
        lines += ["", f"## Errors: {len(errors)}", ""] + [f"- {_located(p)}" for p in errors]
    if others:
        lines += ["", f"## Warnings: {len(others)}", ""] + [f"- {_located(p)}" for p in others]
    return lines, runs


def _located(problem: FlowProblem) -> str:
    where = f"node {problem.node_id!r} ({problem.node_type}) at {problem.path}" if problem.node_id else problem.path
    return f"{where}: {problem.message}"


def run(args: argparse.Namespace) -> int:
    try:
        lines, runs = report(args)
    except CredentialsError as exc:
        print(f"evflow import-nodered: error: {exc}", file=sys.stderr)
        return 1
    text = "\n".join(lines) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"evflow import-nodered: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0 if runs else 1
