"""Flow files in, a checked plan out: load → substitute ``${VAR}`` → validate, every problem at once."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from . import redaction
from .errors import EvflowError
from .flowfile import FlowProblem, NodeRecord, load_flow_files
from .registry import Registry
from .validate import FlowPlan, plan_flow

__all__ = ["CredentialsError", "FlowInvalid", "load_credentials", "load_node_red_credentials", "load_plan"]


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


def _with_credentials(record: NodeRecord, values: Mapping[str, Any] | None) -> NodeRecord:
    """The record with Node-RED's credentials merged into its ``credentials`` (not into ``raw``: they
    are not written in the flow file, so they need no ``${NAME}``)."""
    if not values:
        return record
    merged = {**record.data, "credentials": {**record.data.get("credentials", {}), **values}}
    return attrs.evolve(record, data=merged)


class FlowInvalid(EvflowError):
    """The flow does not validate; ``problems`` holds every error (and warning) found."""

    def __init__(self, problems: Sequence[FlowProblem]) -> None:
        self.problems = tuple(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        super().__init__(f"{len(errors)} problem(s) in the flow:\n" + "\n".join(f"  {p}" for p in self.problems))


def load_node_red_credentials(path: str | Path) -> dict[str, dict[str, Any]]:
    """Node-RED's ``flows_cred.json``, decrypted: node id to that node's credentials (``user``,
    ``password``, ``passphrase``…). Every value but a user name is registered as a secret. An
    encrypted file (Node-RED's ``credentialSecret``) is refused, saying how to decrypt it."""
    file = Path(path)
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read Node-RED's credentials file {file}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:
        raise CredentialsError(f"{file} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CredentialsError(f"{file}: Node-RED's credentials file is a JSON object of node ids")
    if set(document) == {"$"}:
        raise CredentialsError(
            f"{file} is encrypted (Node-RED's credentialSecret): decrypt it first (e.g. with the "
            "node-red-admin tools, or credentialSecret: false and a redeploy), or give the secrets as ${NAME}")
    for node_id, values in document.items():
        if not isinstance(values, dict):
            raise CredentialsError(f"{file}: the credentials of node {node_id!r} are not an object")
        for key, value in values.items():
            if isinstance(value, str) and value and key not in ("user", "username"):
                redaction.add(value)
    return document


def load_plan(
    paths: Sequence[str | Path],
    *,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
    credentials: str | Path | None = None,
    node_red_credentials: str | Path | None = None,
    skip_unsupported: bool = False,
) -> FlowPlan:
    """The validated plan of these flow files (warnings in ``plan.warnings``), or :class:`FlowInvalid`.

    ``${NAME}`` comes from ``env`` (default: the environment), then from the ``credentials`` file
    (:func:`load_credentials`; :class:`CredentialsError` when it cannot be used). Node-RED's
    decrypted ``flows_cred.json`` (``node_red_credentials``) gives nodes their ``credentials``.
    With ``skip_unsupported``, nodes of types no installed package provides are left out, with the
    wires to and from them (each a warning).
    """
    env = os.environ if env is None else env
    if credentials is not None:
        env = {**env, **load_credentials(credentials)}
    records, problems = load_flow_files(paths, env)
    if node_red_credentials is not None:
        by_node = load_node_red_credentials(node_red_credentials)
        records = [_with_credentials(record, by_node.get(record.id)) for record in records]
    registry = Registry.from_entry_points() if registry is None else registry
    plan, found = plan_flow(records, registry, skip_unsupported=skip_unsupported)
    problems.extend(found)
    if plan is None or any(p.severity == "error" for p in problems):
        raise FlowInvalid(problems)
    return plan
