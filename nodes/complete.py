"""``complete``: receives each message the nodes in its scope finished handling, as Node-RED's node
of the same name.

``scope`` lists the nodes (ids) to watch; the engine hands this node a copy of each message one of
them handled without failing (Node-RED's ``done()``), and it goes out on port 0. ``uncaught`` is in
Node-RED's editor but read by nothing: accepted and ignored.
"""

from __future__ import annotations

import attrs

from evflow.runtime.nodeapi import ConfigWarning, LooseBool, Message, Node, Scope


@attrs.frozen(kw_only=True)
class CompleteConfig:
    # ids of the nodes whose finished messages to receive
    scope: tuple[str, ...] | None = None
    # Node-RED's editor writes it; nothing reads it
    uncaught: LooseBool = False


class Complete(Node[CompleteConfig]):
    """Passes on the messages the nodes in ``scope`` finished handling."""

    type = "complete"
    Config = CompleteConfig
    inline = True

    @classmethod
    def check(cls, config: CompleteConfig) -> list[ConfigWarning]:
        if not config.scope:
            return [ConfigWarning("$.scope", "no nodes in scope: this complete node receives nothing")]
        for index, node_id in enumerate(config.scope):
            if not node_id:
                raise ValueError(f"a node id must not be empty @ $.scope[{index}]")
        return []

    @classmethod
    def complete_scope(cls, config: CompleteConfig) -> Scope:
        return Scope(node_ids=frozenset(config.scope or ()))

    async def receive(self, msg: Message) -> None:
        await self.send(msg)
