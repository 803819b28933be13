"""``evflow schema``: the JSON Schema of flow files for the node types installed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..registry import Registry
from ..schema import flow_schema


def run(args: argparse.Namespace) -> int:
    text = json.dumps(flow_schema(Registry.from_entry_points()), indent=2) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            print(f"evflow schema: error: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0
