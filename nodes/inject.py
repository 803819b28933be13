"""``inject``: a message at start (``once``), every ``interval`` seconds, at most ``repeat`` times."""

from __future__ import annotations

from typing import Any

import attrs
import trio

from evflow.runtime.message import copy_value, new_message
from evflow.runtime.nodeapi import Node, number_range


@attrs.frozen(kw_only=True)
class InjectConfig:
    # any JSON value, sent as msg.payload
    payload: Any = None
    topic: str = ""
    # send once as soon as the flow is ready
    once: bool = False
    # then every `interval` seconds (0: no repetition); drift-free
    interval: float = attrs.field(default=0.0, validator=number_range(0))
    # at most this many messages in all (None: no limit)
    repeat: int | None = attrs.field(default=None, validator=number_range(1))


class Inject(Node[InjectConfig]):
    """Starts flows: sends ``payload`` once at start and/or every ``interval`` seconds."""

    type = "inject"
    Config = InjectConfig
    is_source = True
    has_input = False

    @classmethod
    def check(cls, config: InjectConfig) -> list[Any]:
        if not config.once and config.interval == 0:
            raise ValueError("an inject that is neither `once` nor has an `interval` never sends @ $.interval")
        return []

    async def run(self) -> None:
        config = self.config
        sent = 0
        next_at = trio.current_time()
        if not config.once:
            next_at += config.interval
            await trio.sleep_until(next_at)
        while config.repeat is None or sent < config.repeat:
            # Each message gets a payload of its own: a node that changes it must not change the next.
            await self.send(new_message(copy_value(config.payload), config.topic))
            sent += 1
            if config.interval == 0:
                return
            next_at += config.interval
            await trio.sleep_until(next_at)
