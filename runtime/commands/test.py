"""``evflow test TESTFILE…``: run declarative flow tests; exit 0 when every case passed."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..flows import FlowInvalid
from ..flowtest import TestFileError, run_test_file, summarize
from ._running import run_trio


async def run_all(paths: list[Path]) -> int:
    results = []
    for path in paths:
        try:
            file_results = await run_test_file(path)
        except (TestFileError, FlowInvalid) as exc:
            print(f"ERROR {path}: {exc}")
            return 1
        for result in file_results:
            results.append(result)
            print(f"{'PASS' if result.passed else 'FAIL'} {path.name}: {result.name}"
                  + ("" if result.passed else f": {result.detail}"))
    print(summarize(results))
    return 0 if all(r.passed for r in results) else 1


def run(args: argparse.Namespace) -> int:
    return run_trio("test", run_all, [Path(p) for p in args.tests])
