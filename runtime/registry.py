"""Node types by name, from the entry-point group ``evflow.nodes`` (built-ins included).

Listing reads only package metadata; a node type's module is imported when a flow uses it (or when
``evflow nodes`` describes it). A registry is a value: tests build their own with :meth:`of`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from .nodeapi import API_VERSION, ConfigNode, Node, NodeClass

if TYPE_CHECKING:
    from .asyncapi.catalogue import ApiCatalogue

__all__ = ["ENTRY_POINT_GROUP", "NodeTypeSource", "Registry", "RegistryError"]

ENTRY_POINT_GROUP = "evflow.nodes"
# The maker of node classes for the operations of EVerest's API documents.
API_NODES_GROUP = "evflow.api_nodes"


class RegistryError(Exception):
    """A node type that cannot be used; the message says which and why."""


@attrs.frozen
class NodeTypeSource:
    name: str
    target: str  # "module:Class"
    distribution: str  # the installed package providing it


@attrs.define
class Registry:
    sources: Mapping[str, tuple[NodeTypeSource, ...]]
    _loaded: dict[str, NodeClass] = attrs.field(factory=dict)
    # EVerest's APIs from their documents: node types `<api>/<operation>`, made when first asked for.
    apis: ApiCatalogue | None = None
    _factory: Any = None

    @classmethod
    def from_entry_points(cls, apis: ApiCatalogue | None = None) -> Registry:
        """The installed node types; with ``apis``, those of EVerest's API documents too (by default
        the documents of ``$EVFLOW_API_DOCS`` and an EVerest installation)."""
        found: dict[str, list[NodeTypeSource]] = {}
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            distribution = entry.dist.name if entry.dist is not None else "?"
            source = NodeTypeSource(entry.name, entry.value, distribution)
            same = found.setdefault(entry.name, [])
            if source not in same:  # an editable install can list one distribution twice
                same.append(source)
        if apis is None:
            from .asyncapi.catalogue import ApiCatalogue

            apis = ApiCatalogue.default()
        return cls({name: tuple(sources) for name, sources in found.items()}, apis=apis)

    @classmethod
    def of(cls, *classes: NodeClass) -> Registry:
        """A registry of exactly these classes (for tests and embedding)."""
        registry = cls({c.type: (NodeTypeSource(c.type, f"{c.__module__}:{c.__qualname__}", "(given)"),) for c in classes})
        registry._loaded.update({c.type: c for c in classes})
        return registry

    def with_types(self, *classes: NodeClass) -> Registry:
        """This registry and these classes as well (for tests and embedding); a given class takes
        the place of an installed type of the same name."""
        extra = Registry.of(*classes)
        registry = Registry({**self.sources, **extra.sources}, apis=self.apis)
        registry._loaded.update(self._loaded)
        registry._loaded.update(extra._loaded)
        return registry

    def names(self) -> list[str]:
        """The installed types (not those of API documents: listing those reads every document)."""
        return sorted(self.sources)

    def api_type_names(self) -> tuple[list[str], dict[str, str]]:
        """The node types of every API document found, and the error of each document that does not read."""
        if self.apis is None:
            return [], {}
        apis, errors = self.apis.load_all()
        return [name for api in apis for name in self.apis.node_type_names(api)], errors

    def __contains__(self, name: object) -> bool:
        if name in self.sources:
            return True
        return isinstance(name, str) and self._api_of(name) is not None

    def why_unknown(self, name: str) -> str | None:
        """For a name shaped like an API's node type whose API was not found: why (where evflow looked)."""
        api, slash, _ = name.partition("/")
        if not slash or self.apis is None or api in self.apis:
            return None
        return self.apis.unknown_api(api)

    def _api_of(self, name: str) -> str | None:
        """The API a node type name belongs to (``powermeter/send_powermeter_values``), if one is found."""
        api, slash, _ = name.partition("/")
        return api if slash and self.apis is not None and api in self.apis else None

    def load(self, name: str) -> NodeClass:
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        sources = self.sources.get(name)
        if not sources and self._api_of(name) is not None:
            from .asyncapi.documents import DocumentError

            assert self.apis is not None
            try:
                api, operation, answer = self.apis.operation_of(name)
            except DocumentError as exc:
                raise RegistryError(f"node type {name!r}: {exc}") from None
            node_class: NodeClass = self._api_node_factory()(name, api, operation, answer)
            self._loaded[name] = node_class
            return node_class
        if not sources:
            raise RegistryError(f"unknown node type {name!r}: no installed package provides it")
        if len(sources) > 1:
            providers = " and ".join(f"{s.distribution} ({s.target})" for s in sources)
            raise RegistryError(f"node type {name!r} is registered twice: by {providers}")
        source = sources[0]
        node_class = _import(source)
        self._loaded[name] = node_class
        return node_class

    def _api_node_factory(self) -> Any:
        """What makes the node class of an API's operation: the one entry of the group
        ``evflow.api_nodes`` (evflow's own, in ``evflow.nodes.everest_operations``), loaded as node
        types are, so that the runtime does not import a node module."""
        if self._factory is None:
            entries = list(importlib.metadata.entry_points(group=API_NODES_GROUP))
            if len(entries) != 1:
                found = ", ".join(f"{e.name} ({e.value})" for e in entries) or "none"
                raise RegistryError(f"expected one {API_NODES_GROUP} entry point (evflow's), found {found}: "
                                    "reinstall evflow")
            try:
                self._factory = entries[0].load()
            except Exception as exc:  # a broken install: said, not a traceback
                raise RegistryError(f"{API_NODES_GROUP} {entries[0].value} failed to load: {exc}") from None
        return self._factory

    def load_all(self) -> tuple[dict[str, NodeClass], dict[str, str]]:
        """Every type that loads, the API documents' included, and the error of each that does not
        (a document that does not read is one error, under its API's name)."""
        classes: dict[str, NodeClass] = {}
        api_types, errors = self.api_type_names()
        for name in [*self.names(), *api_types]:
            try:
                classes[name] = self.load(name)
            except RegistryError as exc:
                errors[name] = str(exc)
        return classes, errors


def _import(source: NodeTypeSource) -> NodeClass:
    where = f"node type {source.name!r} from {source.distribution} ({source.target})"
    module_name, _, attribute = source.target.partition(":")
    try:
        module: Any = importlib.import_module(module_name)
        node_class = module
        for part in attribute.split("."):
            node_class = getattr(node_class, part)
    except Exception as exc:  # a broken plugin must not take the registry down with it
        raise RegistryError(f"{where} failed to load: {type(exc).__name__}: {exc}") from None
    if not (isinstance(node_class, type) and issubclass(node_class, (Node, ConfigNode))):
        raise RegistryError(f"{where} is not a Node or ConfigNode class")
    version = getattr(node_class, "api_version", None)
    if version != API_VERSION:
        raise RegistryError(
            f"{where} is written for node API version {version!r}; this evflow provides version {API_VERSION}"
        )
    if getattr(node_class, "type", None) != source.name:
        raise RegistryError(f"{where} declares type {getattr(node_class, 'type', None)!r}, not {source.name!r}")
    if not attrs.has(getattr(node_class, "Config", None)):
        raise RegistryError(f"{where} has no attrs Config class")
    return node_class

