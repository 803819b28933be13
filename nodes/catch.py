"""``catch``: receives the failures of other nodes, as Node-RED's catch node."""

from __future__ import annotations

from typing import Any

import attrs

from evflow.runtime.nodeapi import ConfigWarning, ErrorScope, LooseBool, Message, Node


@attrs.frozen(kw_only=True)
class CatchConfig:
    # ids of the nodes whose failures to catch (on any tab); "group": every node of this node's group;
    # not given (null): every node of this tab
    scope: Any = None
    # only failures no other (not `uncaught`) catch node took
    uncaught: LooseBool = False


class Catch(Node[CatchConfig]):
    """Receives the failures of the nodes of its tab (or of those in ``scope``) and passes them on.

    Each failure goes out on port 0 as the message that failed, with ``msg.error`` telling why:
    ``error.message``, ``error.source_id``, ``error.source_type``, ``error.source_name``,
    ``error.kind`` (the exception's class name, e.g. ``RequestTimeout``).

    Which failures: those of every node on the catch node's tab, or only of the nodes listed in
    ``scope`` (ids, on any tab). With ``uncaught: true`` it takes only the failures that no other
    catch node took — a tab's last resort. A failure of a node with an error port of its own goes
    there instead, and one that no catch node takes is logged. A failure without a message (a source
    that stopped) arrives with ``payload`` null.

    A catch node takes no wired input: a message wired into it (without ``msg.error``) is dropped
    with a warning.
    """

    type = "catch"
    Config = CatchConfig
    inline = True

    def __init__(self, context: Any, config: CatchConfig) -> None:
        super().__init__(context, config)
        self._warned = False

    @classmethod
    def check(cls, config: CatchConfig) -> list[ConfigWarning]:
        if config.scope == "group":
            return []
        if config.scope is not None:
            if not isinstance(config.scope, list) or not all(isinstance(item, str) for item in config.scope):
                raise ValueError('scope is a list of node ids, "group", or null @ $.scope')
            if not config.scope:
                raise ValueError("an empty scope catches nothing: leave `scope` out to catch the whole tab @ $.scope")
            for index, node_id in enumerate(config.scope):
                if not node_id:
                    raise ValueError(f"a node id must not be empty @ $.scope[{index}]")
        return []

    @classmethod
    def error_scope(cls, config: CatchConfig) -> ErrorScope:
        if config.scope == "group":
            return ErrorScope(uncaught=config.uncaught, group=True)
        return ErrorScope(None if config.scope is None else frozenset(config.scope), config.uncaught)

    async def receive(self, msg: Message) -> None:
        if msg.error is None:
            if not self._warned:
                self._warned = True
                self.context.log.warning("a catch node takes no wired input: dropped message(s) without an error")
            return
        await self.send(msg)
