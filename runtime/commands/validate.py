"""``evflow validate``: every problem of the flow files at once; exit 0 when there is no error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..flowfile import FlowProblem
from ..flows import CredentialsError, FlowInvalid, load_plan
from ..validate import UNSUPPORTED


def unsupported_types(problems: Sequence[FlowProblem]) -> dict[str, list[str]]:
    """The nodes of unsupported types, by type: ids in file order."""
    found: dict[str, list[str]] = {}
    for problem in problems:
        if problem.message.startswith(UNSUPPORTED) and problem.node_type and problem.node_id:
            found.setdefault(problem.node_type, []).append(problem.node_id)
    return found


def run(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.flows, credentials=args.credentials, node_red_credentials=args.node_red_credentials,
                         skip_unsupported=args.skip_unsupported)
    except CredentialsError as exc:
        print(f"evflow validate: error: {exc}", file=sys.stderr)
        return 1
    except FlowInvalid as invalid:
        problems = invalid.problems
        valid = False
    else:
        problems = plan.warnings
        valid = True
    unsupported = unsupported_types(problems)
    if args.format == "json":
        json.dump({"valid": valid, "problems": [p.as_json() for p in problems], "unsupported": unsupported},
                  sys.stdout, indent=2)
        print()
    else:
        out = sys.stdout if valid else sys.stderr
        for problem in problems:
            print(problem, file=out)
        if unsupported:
            count = sum(map(len, unsupported.values()))
            print(f"unsupported: {count} node(s) of {len(unsupported)} type(s): "
                  + ", ".join(f"{kind} ({len(ids)})" for kind, ids in sorted(unsupported.items())), file=out)
        if valid:
            print(f"valid: {len(plan.nodes)} node(s)" + (f", {len(problems)} warning(s)" if problems else ""))
    return 0 if valid else 1
