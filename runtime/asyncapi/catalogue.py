"""The APIs a run can speak: found by file name on a search path, each read when first used.

``ApiCatalogue.api("powermeter")`` reads ``powermeter_API.yaml`` (and what its ``$ref``\\ s name),
makes its types, and keeps them; node types are named ``<api>/<operation>`` after the document's own
operation names (``powermeter/receive_request_start_transaction``), so that a flow file says which
API a node belongs to and only the APIs a flow uses are read.
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ..codec import CodecError, load_json, structure, unstructure
from ..protocol.api import Operation
from .documents import DocumentError, DocumentSet, api_docs_path
from .model import ApiDescription, ApiOperation, MessageShape, OperationKind, describe_api
from .schemas import TypeBuilder

__all__ = ["ApiCatalogue", "LoadedApi", "check_payload"]

_SUFFIXES = (".yaml", ".yml", ".json")


def _api_name_of(path: Path) -> str:
    """``powermeter_API.yaml`` (as EVerest names them), ``powermeter_API.asyncapi.yaml``, ``powermeter.yaml``."""
    return path.stem.removesuffix(".asyncapi").removesuffix("_API")


def check_payload(shape: MessageShape, value: Any, path: str = "$") -> Any:
    """``value`` (plain JSON data, typed, or a mix: a list of typed items) as the shape's type, or
    :class:`CodecError` with a JSON path. A value already of its attrs type was checked when it was made."""
    kind = shape.type
    if not (isinstance(kind, type) and attrs.has(kind) and type(value) is kind):
        value = structure(plain_json(value), kind, path)
    if shape.check is not None and value is not None:
        problem = shape.check(value)
        if problem is not None:
            raise CodecError([f"{problem} @ {path}"])
    return value


def plain_json(value: Any) -> Any:
    """JSON data for a value that may hold typed parts (attrs values, enums, tuples), as they come
    from another node; plain data is walked and kept."""
    kind = type(value)
    if kind is dict:
        return {key: plain_json(item) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [plain_json(item) for item in value]
    if attrs.has(kind):
        return unstructure(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _secrets_in(value: Any) -> Iterable[str]:
    """The values of fields marked secret (a ``password``), anywhere in a typed value."""
    if attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            item = getattr(value, field.name)
            if field.metadata.get("evflow_secret") and isinstance(item, str) and item:
                yield item
            elif item is not None:
                yield from _secrets_in(item)
    elif isinstance(value, tuple):
        for item in value:
            yield from _secrets_in(item)


@attrs.define
class LoadedApi:
    """One API read from its document: its description and, per request operation, the protocol
    core's :class:`Operation` (what the request client sends and how it reads the reply)."""

    description: ApiDescription
    # Every file read to make it: its own and those its $refs name.
    read_paths: tuple[Path, ...] = ()
    requests: dict[str, Operation[Any, Any]] = attrs.field(factory=dict)
    # for the node factory's own use (nodes/everest_operations.py keeps the config classes it shares here)
    node_cache: dict[Any, Any] = attrs.field(factory=dict)

    @property
    def name(self) -> str:
        return self.description.name

    def request(self, operation: ApiOperation) -> Operation[Any, Any]:
        made = self.requests.get(operation.id)
        if made is None:
            made = self.requests[operation.id] = _request_operation(self.name, operation)
        return made


def _request_operation(api_name: str, operation: ApiOperation) -> Operation[Any, Any]:
    from ..apis.quirks import REPLY_DECODERS  # EVerest's wire quirks, where it differs from its documents

    reply = operation.reply
    assert reply is not None
    decode = REPLY_DECODERS.get((api_name, operation.name))
    if decode is None:
        def decode(data: bytes, reply: MessageShape = reply) -> Any:
            return check_payload(reply, load_json(data))

    # The request node checks the payload against the document (check_payload) before it asks: the
    # client takes it as it is (`object`), as it does a value of the hand-written operations' types.
    return Operation(
        operation.name, object, decode, doc=operation.description,
        secrets_of=_secrets_in if attrs.has(reply.type) else None,
        address=operation.address,
    )


class ApiCatalogue:
    """APIs by name, from the documents on a search path (files and directories; the first file of a
    name wins, as on a shell's PATH)."""

    def __init__(self, search_path: Sequence[Path]) -> None:
        self.search_path = tuple(search_path)
        self._index: dict[str, Path] | None = None
        self._missing: list[Path] = []
        self._apis: dict[str, LoadedApi] = {}

    @classmethod
    def default(cls, given: Iterable[str | Path] = ()) -> ApiCatalogue:
        """``given`` (``--api-docs``), then ``$EVFLOW_API_DOCS``, then an EVerest installation's."""
        return cls(api_docs_path(given))

    def index(self) -> Mapping[str, Path]:
        """API name → document, from the file names (``powermeter_API.yaml`` → ``powermeter``)."""
        if self._index is None:
            index: dict[str, Path] = {}
            for place in self.search_path:
                if place.is_dir():
                    files = sorted(p for p in place.iterdir() if p.suffix in _SUFFIXES and p.is_file())
                elif place.is_file():
                    files = [place]
                else:  # said when an API is looked for and not found: a flow that uses none goes on
                    self._missing.append(place)
                    continue
                for file in files:
                    index.setdefault(_api_name_of(file), file)
            self._index = index
        return self._index

    def names(self) -> list[str]:
        return sorted(self.index())

    def __contains__(self, name: object) -> bool:
        return name in self.index()

    def api(self, name: str) -> LoadedApi:
        loaded = self._apis.get(name)
        if loaded is not None:
            return loaded
        path = self.index().get(name)
        if path is None:
            raise DocumentError(self.unknown_api(name))
        # The parsed documents live only while the types are made (a document another API refers to
        # is read again then): the types are what is kept.
        documents = DocumentSet()
        builder = TypeBuilder(documents, f"evflow.runtime.models.asyncapi.{name}")
        try:
            description = describe_api(documents, path, builder, name)
        except DocumentError:
            raise
        except (AttributeError, TypeError, ValueError, KeyError, RecursionError) as exc:
            # A shape the checks above did not foresee: still the document's fault, and said as such.
            raise DocumentError(f"{path}: cannot be used as an AsyncAPI document ({type(exc).__name__}: {exc})") from None
        if description.name != name:
            raise DocumentError(f"{path}: its file name says API {name!r}, its server pathname "
                                f"({description.pathname}) says {description.name!r}")
        loaded = self._apis[name] = LoadedApi(description, tuple(documents.paths))
        return loaded

    def load_all(self) -> tuple[list[LoadedApi], dict[str, str]]:
        """Every API that reads, and the error of each that does not."""
        apis, errors = [], {}
        for name in self.names():
            try:
                apis.append(self.api(name))
            except DocumentError as exc:
                errors[name] = str(exc)
        return apis, errors

    def unknown_api(self, name: str) -> str:
        if not self.search_path:
            return (f"no API documents to find {name!r} in: give a file or directory with --api-docs or "
                    "$EVFLOW_API_DOCS (EVerest installs them in <prefix>/share/everest/EVerest_API)")
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        places = ", ".join(map(str, self.search_path))
        missing = f" ({', '.join(map(str, self._missing))}: no such file or directory)" if self._missing else ""
        return f"no document of API {name!r} in {places}{missing}{hint}; found: {', '.join(known) or 'none'}"

    # ---- node types ---------------------------------------------------------------------------

    def node_type_names(self, api: LoadedApi) -> list[str]:
        names = []
        for operation in api.description.operations.values():
            names.append(f"{api.name}/{operation.id}")
            if operation.kind is OperationKind.HANDLER:
                names.append(f"{api.name}/{reply_node_id(operation)}")
        return names

    def operation_of(self, type_name: str) -> tuple[LoadedApi, ApiOperation, bool]:
        """For the node type ``<api>/<operation>``: its API, its operation, and whether it is the answer
        node of a question; :class:`DocumentError` saying what is wrong."""
        api_name, _, op_id = type_name.partition("/")
        api = self.api(api_name)
        operations = api.description.operations
        operation = operations.get(op_id)
        if operation is not None:
            return api, operation, False
        for candidate in operations.values():
            if candidate.kind is OperationKind.HANDLER and reply_node_id(candidate) == op_id:
                return api, candidate, True
        why = api.description.left_out.get(op_id)
        if why is not None:
            raise DocumentError(f"{api.description.path}: operation {op_id!r} makes no node type: {why}")
        close = difflib.get_close_matches(op_id, [n.partition("/")[2] for n in self.node_type_names(api)], n=1)
        hint = f" (did you mean {api_name}/{close[0]}?)" if close else ""
        raise DocumentError(f"{api.description.path}: API {api_name!r} has no operation {op_id!r}{hint}")


def reply_node_id(operation: ApiOperation) -> str:
    """The node type that answers a handler's requests: the document's name for the reply operation
    (``send_reply_start_transaction``), else the handler's name and ``_reply``."""
    return operation.reply_id or f"{operation.id}_reply"
