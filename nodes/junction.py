"""``junction``: a point where wires meet, as Node-RED's node of the same name: it passes every
message on, unchanged, to everything wired to it."""

from __future__ import annotations

import attrs

from evflow.runtime.nodeapi import Message, Node


@attrs.frozen
class JunctionConfig:
    pass


class Junction(Node[JunctionConfig]):
    """Passes every message on."""

    type = "junction"
    Config = JunctionConfig
    inline = True

    async def receive(self, msg: Message) -> None:
        await self.send(msg)
