"""``evflow nodes``: the node types installed (built-in and plugins), with their properties."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from typing import Any

from ..configdoc import fields_of
from ..nodeapi import ConfigNode
from ..registry import Registry


def describe(registry: Registry) -> list[dict[str, Any]]:
    classes, errors = registry.load_all()  # the API documents' types included, each document read once
    described = []
    installed = registry.names()
    from_documents = [name for name in [*classes, *errors] if name not in registry.sources]
    for name in [*installed, *from_documents]:
        sources = registry.sources.get(name)
        if sources is not None:
            provided_by = ", ".join(s.distribution for s in sources)
        else:  # an API document's node type (or a document that does not read, by its API's name)
            assert registry.apis is not None
            path = registry.apis.index().get(name.partition("/")[0])
            provided_by = f"API document {path}"
        entry: dict[str, Any] = {"type": name, "provided_by": provided_by}
        node_class = classes.get(name)
        if node_class is None:
            entry["error"] = errors[name]
        else:
            entry["kind"] = "config" if issubclass(node_class, ConfigNode) else "node"
            entry["doc"] = inspect.getdoc(node_class) or ""
            entry["properties"] = fields_of(node_class.Config)
        described.append(entry)
    return described


def run(args: argparse.Namespace) -> int:
    described = describe(Registry.from_entry_points())
    if args.format == "json":
        json.dump(described, sys.stdout, indent=2, default=str)
        print()
        return 0
    for entry in described:
        header = f"{entry['type']}  [{entry.get('kind', 'unavailable')}, from {entry['provided_by']}]"
        print(header)
        if "error" in entry:
            print(f"    cannot be used: {entry['error']}")
            continue
        if entry["doc"]:
            print("    " + entry["doc"].splitlines()[0])
        for prop in entry["properties"]:
            detail = "required" if prop.get("required") else f"default {json.dumps(prop['default'], default=str)}"
            marks = "".join(
                [f", names a {prop['references']} node" if "references" in prop else "", ", secret: ${VAR} only" if prop.get("secret") else ""]
            )
            doc = f": {prop['doc']}" if "doc" in prop else ""
            print(f"    {prop['name']} ({prop['type']}, {detail}{marks}){doc}")
        print()
    return 0
