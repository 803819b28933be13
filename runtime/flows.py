"""Flow files in, a checked plan out: load → substitute ``${VAR}`` → validate, every problem at once."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import redaction
from .errors import EvflowError
from .flowfile import FlowProblem, load_flow_files
from .registry import Registry
from .validate import FlowPlan, plan_flow

__all__ = ["CredentialsError", "FlowInvalid", "load_credentials", "load_plan"]


class CredentialsError(EvflowError):
    """The credentials file cannot be used; the message names the line (never a value)."""


def load_credentials(path: str | Path) -> dict[str, str]:
    """``NAME=value`` lines (``#`` comments, blank lines) for ``${NAME}`` in flow files.

    Every value is a secret: it is registered so that no log line shows it. The file should be
    readable by its owner only; a looser mode is reported.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read the credentials file {file}: {getattr(exc, 'strerror', None) or exc}") from None
    credentials: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = stripped.partition("=")
        name = name.strip()
        if not equals or not name.isidentifier():
            raise CredentialsError(f"{file}:{number}: expected NAME=value")
        credentials[name] = value.strip()
        redaction.add(credentials[name])
    if mode & 0o077:
        logging.getLogger("evflow.flows").warning(
            "credentials file %s is readable by others (mode %o): chmod 600 it", file, mode & 0o777
        )
    return credentials


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
    credentials: str | Path | None = None,
) -> FlowPlan:
    """The validated plan of these flow files (warnings in ``plan.warnings``), or :class:`FlowInvalid`.

    ``${NAME}`` comes from ``env`` (default: the environment), then from the ``credentials`` file
    (:func:`load_credentials`; :class:`CredentialsError` when it cannot be used).
    """
    env = os.environ if env is None else env
    if credentials is not None:
        env = {**env, **load_credentials(credentials)}
    records, problems = load_flow_files(paths, env)
    registry = Registry.from_entry_points() if registry is None else registry
    plan, found = plan_flow(records, registry)
    problems.extend(found)
    if plan is None or any(p.severity == "error" for p in problems):
        raise FlowInvalid(problems)
    return plan
