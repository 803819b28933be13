"""Finding and reading AsyncAPI documents, and following ``$ref`` within and across them.

A document is read once, when something asks for it: a flow that uses one API reads that API's file
(and the files its schemas refer to), not the whole directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from ..errors import EvflowError

__all__ = ["DEFAULT_DIRECTORIES", "DocumentError", "DocumentSet", "Location", "api_docs_path"]

# Where an EVerest installation puts the documents: `${CMAKE_INSTALL_DATADIR}/everest/EVerest_API`
# (EVerest's cmake/everest-generate.cmake installs docs/source/reference/EVerest_API there).
DEFAULT_DIRECTORIES = (
    Path("/usr/local/share/everest/EVerest_API"),
    Path("/usr/share/everest/EVerest_API"),
)
ENVIRONMENT_VARIABLE = "EVFLOW_API_DOCS"


class DocumentError(EvflowError):
    """A document that cannot be read or used; the message names the file and the place in it."""


@attrs.frozen
class Location:
    """A place in a document: its file and a JSON pointer (``/components/schemas/Powermeter``)."""

    path: Path
    pointer: str = ""

    def child(self, *parts: str | int) -> Location:
        escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in parts)
        return Location(self.path, "/".join((self.pointer, *escaped)))

    def __str__(self) -> str:
        return f"{self.path}#{self.pointer}" if self.pointer else str(self.path)


def api_docs_path(given: Iterable[str | os.PathLike[str]] = (), environ: Mapping[str, str] = os.environ) -> list[Path]:
    """The files and directories to look for API documents in: those given (``--api-docs``), then
    those of ``$EVFLOW_API_DOCS`` (separated by ``os.pathsep``), then an EVerest installation's."""
    paths = [Path(p) for p in given]
    paths += [Path(p) for p in environ.get(ENVIRONMENT_VARIABLE, "").split(os.pathsep) if p]
    paths += [d for d in DEFAULT_DIRECTORIES if d.is_dir()]
    return paths


def _load_yaml(path: Path) -> Any:
    import yaml  # only a run that reads a document pays for it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ten times faster where built
    try:
        with path.open("rb") as stream:
            return yaml.load(stream, Loader=loader)  # noqa: S506 (a safe loader)
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise DocumentError(f"{path}{where}: not valid YAML: {problem}") from None


class DocumentSet:
    """Documents by path, each read at most once; ``$ref`` resolution within and across them."""

    def __init__(self) -> None:
        self._documents: dict[Path, Any] = {}

    def read(self, path: Path) -> Mapping[str, Any]:
        path = path.resolve()
        document = self._documents.get(path)
        if document is None:
            document = _load_yaml(path)
            if not isinstance(document, dict):
                raise DocumentError(f"{path}: not an AsyncAPI document (the top level is not a mapping)")
            self._documents[path] = document
        return document  # type: ignore[no-any-return]

    @property
    def paths(self) -> list[Path]:
        return list(self._documents)

    def get(self, location: Location) -> Any:
        """The value at ``location``; a :class:`DocumentError` naming it when there is none."""
        value: Any = self.read(location.path)
        for part in _pointer_parts(location.pointer):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise DocumentError(f"{location}: no such place in the document")
        return value

    def resolve(self, ref: Any, where: Location) -> tuple[Any, Location]:
        """The target of ``$ref`` found at ``where``: ``#/pointer`` in the same file, or
        ``other.yaml#/pointer`` relative to its directory."""
        if not isinstance(ref, str):
            raise DocumentError(f"{where}: $ref must be a string, got {ref!r}")
        file_part, _, pointer = ref.partition("#")
        path = (where.path.parent / file_part).resolve() if file_part else where.path
        if file_part and not path.is_file():
            raise DocumentError(f"{where}: $ref {ref!r} names {path}, which does not exist")
        target = Location(path, pointer)
        return self.get(target), target


def _pointer_parts(pointer: str) -> Iterator[str]:
    for part in pointer.split("/")[1:]:
        yield part.replace("~1", "/").replace("~0", "~")
