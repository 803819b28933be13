"""``evflow graph``: a picture of the flow files, as Mermaid or Graphviz DOT text, or SVG through ``dot``."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

from ..flows import CredentialsError, FlowInvalid, load_plan
from ..graph import to_dot, to_mermaid

# Generous: dot lays out flows of hundreds of nodes in well under a second.
DOT_TIMEOUT = 60.0
NO_DOT = ("--format svg needs Graphviz's dot program, which is not on PATH: install graphviz "
          "(apt-get install graphviz) or use --format dot and render it elsewhere")


def _error(message: str) -> int:
    print(f"evflow graph: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.flows, credentials=args.credentials)
    except CredentialsError as exc:
        return _error(str(exc))
    except FlowInvalid as invalid:
        for problem in invalid.problems:  # as `evflow validate` prints them
            print(problem, file=sys.stderr)
        return 1
    for warning in plan.warnings:  # on stderr: stdout is the picture
        print(warning, file=sys.stderr)

    if args.format == "mermaid":
        data = to_mermaid(plan).encode("utf-8")
    elif args.format == "dot":
        data = to_dot(plan).encode("utf-8")
    else:
        dot = shutil.which("dot")
        if dot is None:
            return _error(NO_DOT)
        try:
            done = subprocess.run([dot, "-Tsvg"], input=to_dot(plan).encode("utf-8"), capture_output=True,
                                  timeout=DOT_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return _error(f"running {dot} failed: {exc}")
        if done.returncode != 0:
            return _error(f"{dot} -Tsvg failed (exit {done.returncode}): {done.stderr.decode(errors='replace').strip()}")
        data = done.stdout

    # Bytes, not text: names may hold any character, whatever the terminal's encoding.
    if args.output:
        try:
            with open(args.output, "wb") as file:
                file.write(data)
        except OSError as exc:
            return _error(f"cannot write {args.output}: {exc.strerror or exc}")
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0
