"""``inject``: starts flows, as Node-RED's node of the same name.

Node-RED 4's properties: ``props`` (the message's properties, each ``p`` with a typed value ``v``/``vt``;
a ``payload`` or ``topic`` entry without ``v`` takes ``payload``/``payloadType`` or ``topic``), ``once``
(send ``onceDelay`` seconds after the start, 0.1 s when not given), ``repeat`` (then every so many
seconds) or ``crontab`` (Node-RED's five-field cron lines, in local time). A file without ``props``
is read as Node-RED reads an old one: ``payload`` with ``payloadType``, and ``topic``. evflow's own:
``limit``, how many messages to send at most. Each message gets values of its own: a node that
changes one does not change the next.

evflow's ``interval`` (now ``repeat``) and its old ``repeat`` count (now ``limit``) are refused with
the new form.
"""

from __future__ import annotations

import datetime
from typing import Any

import attrs
import trio

from evflow.runtime.message import copy_value
from evflow.runtime.nodeapi import (
    ConfigWarning,
    LooseBool,
    LooseStr,
    Node,
    PropertyError,
    TypedValue,
    TypedValueError,
    new_message,
    number_range,
    parse_property,
    renamed,
    set_property,
)


@attrs.frozen(kw_only=True)
class InjectProperty:
    # the message property to set, e.g. "payload", "topic", "reading.unit"
    p: str
    # its value, of type `vt` (str num bool json date env msg flow global re bin); not given for
    # payload (then `payload`/`payloadType`) and for topic (then `topic`)
    v: Any = None
    vt: str | None = None


@attrs.frozen(kw_only=True)
class InjectConfig:
    props: tuple[InjectProperty, ...] | None = None
    # seconds between messages; empty: no repetition
    repeat: LooseStr = ""
    # Node-RED's cron line (minute hour day month weekday, local time); empty: none
    crontab: str = ""
    # send once onceDelay seconds after the start
    once: LooseBool = False
    onceDelay: LooseStr = "0.1"
    topic: str = ""
    payload: Any = ""
    payloadType: str | None = None
    # at most this many messages in all (evflow's; not given: no limit)
    limit: int | None = attrs.field(default=None, validator=number_range(1))
    interval: Any = renamed("write Node-RED's `repeat` (seconds between messages), and `limit` for a count")


@attrs.frozen
class _Prepared:
    parts: tuple[str | int, ...]
    value: TypedValue


def _seconds(text: str, what: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number of seconds, got {text!r} @ $.{what}") from None
    if not 0 <= seconds <= 2147483:
        raise ValueError(f"{what} must be 0 to 2147483 seconds, got {text!r} @ $.{what}")
    return seconds


def _properties(config: InjectConfig) -> list[tuple[str, Any, str | None]]:
    """(property, value, type) per property, as Node-RED reads them (old files included)."""
    if config.props is None:
        return [("payload", config.payload, config.payloadType), ("topic", config.topic, "str")]
    found = []
    for prop in config.props:
        if prop.p == "payload" and prop.v is None and prop.vt is None:
            found.append(("payload", config.payload, config.payloadType))
        elif prop.p == "topic" and prop.vt in (None, "str") and prop.v is None:
            found.append(("topic", config.topic, "str"))
        else:
            found.append((prop.p, "" if prop.v is None else prop.v, prop.vt or "str"))
    return found


def _cron(line: str) -> Any:
    from cronsim import CronSim, CronSimError  # only flows with a crontab pay for it

    try:
        return CronSim(line, datetime.datetime.now().astimezone())
    except CronSimError as exc:
        raise ValueError(f"invalid crontab {line!r}: {exc} @ $.crontab") from None


class Inject(Node[InjectConfig]):
    """Starts flows: sends a message once after the start, every ``repeat`` seconds, and/or on a
    ``crontab`` schedule."""

    type = "inject"
    Config = InjectConfig
    is_source = True
    has_input = False

    @classmethod
    def check(cls, config: InjectConfig) -> list[Any]:
        _seconds(config.onceDelay, "onceDelay")
        if _seconds(config.repeat, "repeat") and config.crontab:
            raise ValueError("set `repeat` or `crontab`, not both @ $.crontab")
        if config.crontab:
            _cron(config.crontab)
        warnings = []
        if not config.once and not _seconds(config.repeat, "repeat") and not config.crontab:
            warnings.append(ConfigWarning("$.once", "never sends: no `once`, `repeat` or `crontab` (evflow has "
                                          "no button to press)"))
        for index, (name, value, value_type) in enumerate(_properties(config)):
            where = f"$.props[{index}]" if config.props is not None else f"$.{name}"
            try:
                parse_property(name)
                TypedValue.of(value, value_type)
            except (PropertyError, TypedValueError) as exc:
                raise ValueError(f"{exc} @ {where}") from None
        return warnings

    def __init__(self, context: Any, config: InjectConfig) -> None:
        super().__init__(context, config)
        self._props = [_Prepared(parse_property(name), TypedValue.of(value, value_type))
                       for name, value, value_type in _properties(config)]
        self._repeat = _seconds(config.repeat, "repeat") or None
        self._once_delay = _seconds(config.onceDelay, "onceDelay") or 0.1
        self.sent = 0

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent}

    def _message(self) -> Any:
        msg = new_message(None)
        for prop in self._props:
            # A constant is the node's own: each message gets a copy that nodes may change.
            msg = set_property(msg, prop.parts, copy_value(prop.value.evaluate(msg, self.context)))
        return msg

    async def _send_one(self) -> bool:
        """Send a message; False once ``limit`` is reached."""
        limit = self.config.limit
        if limit is not None and self.sent >= limit:
            return False
        try:
            msg = self._message()
        except (PropertyError, ValueError) as exc:  # an env/context value that does not fit
            await self.context.error(exc)
        else:
            await self.send(msg)
            self.sent += 1
        return limit is None or self.sent < limit

    async def run(self) -> None:
        config = self.config
        if config.once:
            await trio.sleep(self._once_delay)
            if not await self._send_one():
                return
        if self._repeat is not None:
            # Drift-free: each message is due a whole number of periods after the first.
            next_at = trio.current_time()
            while True:
                next_at += self._repeat
                await trio.sleep_until(next_at)
                if not await self._send_one():
                    return
        elif config.crontab:
            schedule = _cron(config.crontab)
            while True:
                due = next(schedule)
                await trio.sleep(max(0.0, (due - datetime.datetime.now().astimezone()).total_seconds()))
                if not await self._send_one():
                    return


__all__ = ["Inject", "InjectConfig", "InjectProperty"]
