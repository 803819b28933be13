"""``keepalive``: EVerest's communication check, kept alive; ``false`` on a deliberate shutdown."""

from __future__ import annotations

import enum
import logging

import attrs
import trio

from evflow.runtime.client import ApiClient
from evflow.runtime.errors import MqttError
from evflow.runtime.message import Message
from evflow.runtime.nodeapi import ConfigWarning, Node, Readiness, number_range, ref
from evflow.runtime.ratelimit import RateLimitedLog


class KeepaliveMode(enum.StrEnum):
    TIMER = "timer"  # every `interval` seconds
    INPUT = "input"  # on each input message, at most once per `interval`
    BOTH = "both"


@attrs.frozen(kw_only=True)
class KeepaliveConfig:
    # id of an everest-api node
    api: str = ref("everest-api")
    # seconds between checks (drift-free); must be below EVerest's cfg_communication_check_to_s
    interval: float = attrs.field(default=2.0, validator=number_range(above=0))
    # when to send: "timer", "input" (each input message, at most once per interval) or "both"
    mode: KeepaliveMode = KeepaliveMode.TIMER
    # send `false` on a deliberate shutdown: EVerest then stops checking for good (until it restarts)
    stop_check_on_shutdown: bool = True
    # EVerest's cfg_communication_check_to_s, to warn about an interval that is too slow
    everest_timeout: float = attrs.field(default=5.0, validator=number_range(above=0))


class Keepalive(Node[KeepaliveConfig]):
    """Publishes ``communication_check`` ``true`` so that EVerest knows this side is alive, and
    ``false`` (acknowledged, QoS 1) when the flow is stopped on purpose."""

    type = "keepalive"
    Config = KeepaliveConfig
    is_source = True  # its timer starts when the flow is ready and stops first on shutdown

    @classmethod
    def outputs(cls, config: KeepaliveConfig) -> int:
        return 0

    @classmethod
    def check(cls, config: KeepaliveConfig) -> list[ConfigWarning]:
        if config.interval >= config.everest_timeout:
            return [ConfigWarning("$.interval", f"interval {config.interval:g} s is not below EVerest's "
                                  f"communication check timeout ({config.everest_timeout:g} s): EVerest will "
                                  "raise communication check failures")]
        return []

    def readiness(self) -> Readiness:
        # Ready while EVerest, counting from the last check that went out, still takes this side
        # for alive: the check's own timeout is what matters, not this node's interval.
        last_sent = getattr(self, "_last_sent", float("-inf"))
        if last_sent == float("-inf"):
            return Readiness(False, "no communication check sent yet")
        stale_at = last_sent + self.config.everest_timeout
        if trio.current_time() < stale_at:
            return Readiness(True)
        return Readiness(False, f"no communication check sent within EVerest's {self.config.everest_timeout:g} s",
                         stale_at)

    async def start(self) -> None:
        self.client: ApiClient = self.context.config_node(self.config.api).client  # type: ignore[attr-defined]
        self._last_sent = float("-inf")
        self._log_failure = RateLimitedLog(self.context.log, logging.WARNING)

    async def _check(self) -> None:
        try:
            await self.client.communication_check(True)
        except MqttError as exc:
            self._log_failure("communication check not sent: %s", exc)
            return
        self._last_sent = trio.current_time()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._resume_after_reconnect)
            if self.config.mode is not KeepaliveMode.INPUT:
                await self._timer()
            await trio.sleep_forever()

    async def _timer(self) -> None:
        interval = self.config.interval
        next_at = trio.current_time()
        while True:
            if trio.current_time() - self._last_sent >= interval * 0.5:  # an input-triggered one was recent
                await self._check()
            next_at += interval
            await trio.sleep_until(next_at)

    async def _resume_after_reconnect(self) -> None:
        """EVerest's timer ran on while the broker was away: check in the moment it is back."""
        mqtt = self.client.mqtt
        while True:
            await mqtt.wait_connection_lost()
            await mqtt.wait_connected()
            await self._check()

    async def receive(self, msg: Message) -> None:
        if self.config.mode is KeepaliveMode.TIMER:
            return
        if trio.current_time() - self._last_sent >= self.config.interval:
            await self._check()

    async def close(self) -> None:
        if not self.config.stop_check_on_shutdown:
            return
        try:
            await self.client.communication_check(False, qos=1)
        except MqttError as exc:
            self.context.log.error("final communication check (false) not delivered: %s", exc)
        else:
            self.context.log.info("communication check stopped (false sent and acknowledged)")
