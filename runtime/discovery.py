"""Discovering EVerest's API modules over MQTT (the ``entrypoint`` API), on trio.

    result = await discover_apis(mqtt, window=1.0)            # every API of every API module
    api = await find_module(mqtt, "evse_security_consumer")  # the one module of that type, or DiscoveryError

Every module answers on its own and nothing says how many there are, so a run listens for ``window``
seconds (see :mod:`evflow.runtime.protocol.discovery`). Each run listens on a reply topic of its own,
subscribed (the broker's SUBACK in) before the request goes out, so no answer can come too early.
"""

from __future__ import annotations

import contextlib
import secrets

import attrs
import trio

from .errors import DiscoveryError
from .models.entrypoint import ApiParameter
from .protocol.discovery import (
    DiscoveredApis,
    discovery_reply_topic,
    encode_discovery_request,
    ready_beacon_topic,
    reply_to_for,
    request_topic,
)
from .transport import MqttClient, MqttMessage

__all__ = ["DiscoveryResult", "discover_apis", "find_module", "nobody_answered"]


@attrs.frozen(kw_only=True)
class DiscoveryResult:
    """What one discovery run heard."""

    apis: tuple[ApiParameter, ...]  # in arrival order, each (type, module_id) once
    request_topic: str
    replies: int  # replies that decoded
    invalid: int  # replies that did not
    first_problem: str | None  # of the first invalid reply
    ready_beacon: bool  # a ready beacon arrived while waiting for one
    waited: float  # seconds from the first request to the end of the window

    @property
    def module_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(api.module_id for api in self.apis))


async def discover_apis(
    mqtt: MqttClient,
    *,
    external_prefix: str = "",
    api_type: str | None = None,
    window: float = 1.0,
    wait_for_ready_beacon: float = 0.0,
) -> DiscoveryResult:
    """Ask EVerest's API modules which APIs they implement (those of ``api_type`` only, when given) and
    collect the answers for ``window`` seconds.

    With ``wait_for_ready_beacon`` the run also listens for EVerest's ready beacon, for a run that may
    start before EVerest is up: the request goes out at once, and if nothing answered within the window
    the run waits for the beacon until ``wait_for_ready_beacon`` seconds after the start. A beacon (in
    the window or after it) means modules subscribed since the request went out, so the request is sent
    again and the window starts over. An EVerest that is up already answers in the first window and
    costs no wait: it sent its beacon long ago. (A run that starts while some of EVerest's modules are
    subscribed and others not yet may end before the beacon, with the answers of the first ones.)

    Raises :class:`~evflow.runtime.errors.NotConnected` when the connection is not up, and
    :class:`~evflow.runtime.protocol.topics.TopicError` for a bad prefix or API type.
    """
    if not window > 0:
        raise ValueError(f"window must be positive, got {window}")
    if not wait_for_ready_beacon >= 0:
        raise ValueError(f"wait_for_ready_beacon must not be negative, got {wait_for_ready_beacon}")
    topic = request_topic(api_type, external_prefix)  # validates both
    # A fresh topic per run: a late answer to an earlier run never lands in this one.
    reply_topic = discovery_reply_topic(external_prefix, secrets.token_hex(6))
    body = encode_discovery_request(reply_to_for(reply_topic, external_prefix))
    collected = DiscoveredApis(api_type=api_type)
    beacon = trio.Event()

    def on_reply(message: MqttMessage) -> None:
        collected.receive(message.payload)  # never raises: a bad reply is counted

    def on_beacon(_message: MqttMessage) -> None:
        beacon.set()  # any payload: EVerest's is `{}`, and nothing in it matters

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(await mqtt.subscribe_callback(reply_topic, on_reply))
        if wait_for_ready_beacon > 0:
            await stack.enter_async_context(
                await mqtt.subscribe_callback(ready_beacon_topic(external_prefix), on_beacon))
        await mqtt.publish(topic, body)
        started = trio.current_time()
        deadline = started + window
        if wait_for_ready_beacon > 0:
            with trio.move_on_at(deadline):
                await beacon.wait()
            if not beacon.is_set() and not collected.answered:
                with trio.move_on_at(started + wait_for_ready_beacon):
                    await beacon.wait()
            if beacon.is_set():
                await mqtt.publish(topic, body)
                deadline = trio.current_time() + window
        await trio.sleep_until(deadline)
        waited = trio.current_time() - started
    return DiscoveryResult(
        apis=tuple(collected.apis), request_topic=topic, replies=collected.replies, invalid=collected.invalid,
        first_problem=collected.first_problem, ready_beacon=beacon.is_set(), waited=waited,
    )


def nobody_answered(result: DiscoveryResult, api_type: str | None, external_prefix: str,
                    prefix_option: str = "external_prefix") -> str:
    """Why no module may have answered, in words for the person who asked (``prefix_option``: what they
    set the prefix with)."""
    if api_type is None:
        what, missing = "API module", "no API modules (module types ending in _API)"
    else:
        what, missing = f"module implementing the {api_type!r} API", f"no module implementing {api_type!r}"
    if external_prefix:
        prefix = f"EVerest's mqtt_external_prefix is not {external_prefix!r} (check {prefix_option})"
    else:
        prefix = f"EVerest has an mqtt_external_prefix (set {prefix_option})"
    text = (f"no {what} answered on {result.request_topic!r} within {round(result.waited, 1):g} s. Either EVerest's "
            f"config has {missing}, or {prefix}")
    if result.invalid:
        text += f"; {result.invalid} reply(ies) did not decode, the first: {result.first_problem}"
    return text


async def find_module(
    mqtt: MqttClient, api_type: str, *, external_prefix: str = "", window: float = 1.0,
    wait_for_ready_beacon: float = 0.0,
) -> ApiParameter:
    """The one module implementing ``api_type``, asked with ``query-modules``: for a flow that names its
    module by discovery. Raises :class:`DiscoveryError` when none answered within ``window`` seconds (and,
    with ``wait_for_ready_beacon``, after EVerest's ready beacon), or when several did (then the flow must
    name its module_id)."""
    result = await discover_apis(mqtt, external_prefix=external_prefix, api_type=api_type, window=window,
                                 wait_for_ready_beacon=wait_for_ready_beacon)
    found = [api for api in result.apis if api.type == api_type]
    if not found:
        raise DiscoveryError(nobody_answered(result, api_type, external_prefix), api_type)
    if len(found) > 1:
        ids = [api.module_id for api in found]
        raise DiscoveryError(
            f"{len(ids)} modules implement the {api_type!r} API: {', '.join(ids)}; set module_id to the one to use",
            api_type, ids,
        )
    return found[0]
