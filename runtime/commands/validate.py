"""``evflow validate``: every problem of the flow files at once; exit 0 when there is no error."""

from __future__ import annotations

import argparse
import json
import sys

from ..flows import CredentialsError, FlowInvalid, load_plan


def run(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.flows, credentials=args.credentials)
    except CredentialsError as exc:
        print(f"evflow validate: error: {exc}", file=sys.stderr)
        return 1
    except FlowInvalid as invalid:
        problems = invalid.problems
        valid = False
    else:
        problems = plan.warnings
        valid = True
    if args.format == "json":
        json.dump({"valid": valid, "problems": [p.as_json() for p in problems]}, sys.stdout, indent=2)
        print()
    else:
        for problem in problems:
            print(problem, file=sys.stdout if valid else sys.stderr)
        if valid:
            print(f"valid: {len(plan.nodes)} node(s)" + (f", {len(problems)} warning(s)" if problems else ""))
    return 0 if valid else 1
