"""Node classes for registry tests: one written for another node API version."""

from __future__ import annotations

import attrs

from evflow.runtime.nodeapi import Node


@attrs.frozen
class NoConfig:
    pass


class FromTheFuture(Node[NoConfig]):
    type = "from-the-future"
    Config = NoConfig
    api_version = 2


class NamedWrongly(Node[NoConfig]):
    type = "something-else"
    Config = NoConfig
