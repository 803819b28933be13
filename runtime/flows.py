"""Flow files in, a checked plan out: load → substitute ``${VAR}`` → validate, every problem at once."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import EvflowError
from .flowfile import FlowProblem, load_flow_files
from .registry import Registry
from .validate import FlowPlan, plan_flow

__all__ = ["FlowInvalid", "load_plan"]


class FlowInvalid(EvflowError):
    """The flow does not validate; ``problems`` holds every error (and warning) found."""

    def __init__(self, problems: Sequence[FlowProblem]) -> None:
        self.problems = tuple(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        super().__init__(f"{len(errors)} problem(s) in the flow:\n" + "\n".join(f"  {p}" for p in self.problems))


def load_plan(
    paths: Sequence[str | Path],
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
) -> FlowPlan:
    """The validated plan of these flow files (warnings in ``plan.warnings``), or :class:`FlowInvalid`."""
    records, problems = load_flow_files(paths, os.environ if env is None else env)
    registry = Registry.from_entry_points() if registry is None else registry
    plan, found = plan_flow(records, registry)
    problems.extend(found)
    if plan is None or any(p.severity == "error" for p in problems):
        raise FlowInvalid(problems)
    return plan
