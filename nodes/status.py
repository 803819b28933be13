"""``status``: receives the status changes of other nodes, as Node-RED's node of the same name.

Each change a node shows (``fill``, ``shape``, ``text``) arrives as a message whose ``msg.status`` is
``{fill, shape, text, source: {id, type, name}}`` (the engine builds it), and goes out on port 0;
``text`` is made text if a node gave something else, as Node-RED does. ``scope`` says whose changes:
null for every node of the status node's tab, a list of node ids, or ``"group"`` for the nodes of the
status node's group.
"""

from __future__ import annotations

from typing import Any

import attrs

from evflow.runtime.nodeapi import ConfigWarning, Message, Node, Scope, field_check

from ._jsvalues import to_string


def _check_scope(value: Any) -> None:
    if value is None or value == "group":
        return
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError('scope is null (the whole tab), "group", or a list of node ids')


@attrs.frozen(kw_only=True)
class StatusConfig:
    # whose status: null (every node of this tab), "group" (the nodes of this node's group), or node ids
    scope: Any = attrs.field(default=None, validator=field_check(_check_scope))


class Status(Node[StatusConfig]):
    """Passes on the status changes of the nodes in its scope (see the module docstring)."""

    type = "status"
    Config = StatusConfig
    inline = True

    @classmethod
    def check(cls, config: StatusConfig) -> list[ConfigWarning]:
        if config.scope == []:
            return [ConfigWarning("$.scope", "an empty list of nodes: this status node receives nothing")]
        return []

    @classmethod
    def status_scope(cls, config: StatusConfig) -> Scope:
        if config.scope is None:
            return Scope()
        if config.scope == "group":
            return Scope(group=True)
        return Scope(node_ids=frozenset(config.scope))

    async def receive(self, msg: Message) -> None:
        status = msg.props.get("status")
        if isinstance(status, dict) and "text" in status and not isinstance(status["text"], str):
            msg = msg.with_props({**msg.props, "status": {**status, "text": to_string(status["text"])}})
        await self.send(msg)
