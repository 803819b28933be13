"""``everest-api``: one client of an EVerest API module (``api``, default evse_security_consumer) on a
broker, shared by id: the request, source, question and answer nodes of that API use it, and so do
the ``heartbeat`` and ``keepalive`` nodes, for any API."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import trio

from evflow.runtime.apis.evse_security_client import EvseSecurityClient
from evflow.runtime.apis.evse_security_consumer import EVSE_SECURITY_CONSUMER
from evflow.runtime.client import ApiClient
from evflow.runtime.errors import DiscoveryError
from evflow.runtime.nodeapi import (
    ConfigNode,
    ConfigWarning,
    OperationStats,
    field_check,
    number_range,
    ref,
    run_service,
)
from evflow.runtime.protocol.api import ApiSpec
from evflow.runtime.protocol.topics import validate_external_prefix, validate_topic_level

from .mqtt_broker import MqttBroker


def _module_id(value: str) -> None:
    if value:
        validate_topic_level(value, "module_id")


@attrs.frozen(kw_only=True)
class EverestApiConfig:
    # id of an mqtt-broker node
    broker: str = ref("mqtt-broker")
    # the API, as EVerest names it: evse_security_consumer, powermeter, evse_manager_consumer, ...
    api: str = attrs.field(default=EVSE_SECURITY_CONSUMER.name,
                           validator=field_check(lambda v: validate_topic_level(v, "api")))
    # the API module's id in EVerest's config file (one topic level); empty with `discover`
    module_id: str = attrs.field(default="", validator=field_check(_module_id))
    # no module_id: ask EVerest's entrypoint which module offers `api` (exactly one must answer)
    discover: bool = False
    # seconds to wait for EVerest's entrypoint to answer `discover`
    discover_window: float = attrs.field(default=2.0, validator=number_range(above=0))
    # with `discover`: seconds to wait for the broker, and for EVerest's ready beacon when no module
    # answered at once (EVerest still starting), before the flow fails to start
    discover_wait: float = attrs.field(default=30.0, validator=number_range(0))
    # the version in the API's topics: everest_api/<api_version>/<api>/<module_id>/...
    api_version: int = attrs.field(default=1, validator=number_range(0))
    # EVerest's mqtt_external_prefix
    external_prefix: str = attrs.field(default="", validator=field_check(validate_external_prefix))
    # seconds to wait for a reply (nodes may set their own)
    request_timeout: float = attrs.field(default=5.0, validator=number_range(above=0))
    # requests in flight at once over this client (more wait for a slot within their deadline)
    max_in_flight: int = attrs.field(default=256, validator=number_range(1))


class EverestApi(ConfigNode[EverestApiConfig]):
    """A client of one EVerest API module: its replies, heartbeat and communication check."""

    type = "everest-api"
    Config = EverestApiConfig

    @classmethod
    def check(cls, config: EverestApiConfig) -> list[ConfigWarning]:
        if not config.module_id and not config.discover:
            raise ValueError("required: the API module's id in EVerest's config (or discover: true) @ $.module_id")
        if config.module_id and config.discover:
            raise ValueError("module_id and discover: true exclude each other @ $.discover")
        return []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        broker: MqttBroker = self.context.config_node(self.config.broker)  # type: ignore[assignment]
        c = self.config
        module_id = c.module_id or await self._discover(broker)
        options = {"external_prefix": c.external_prefix, "request_timeout": c.request_timeout,
                   "max_in_flight": c.max_in_flight}
        if c.api == EVSE_SECURITY_CONSUMER.name and c.api_version == EVSE_SECURITY_CONSUMER.topic_version:
            self.client: ApiClient = EvseSecurityClient(broker.mqtt, module_id, **options)
        else:
            # The operations join the client as the nodes made from the API's document ask them.
            spec = ApiSpec(name=c.api, version="", topic_version=c.api_version, operations={})
            self.client = ApiClient(broker.mqtt, spec, module_id, **options)
        await run_service(self.client.run, task_status=task_status)  # its reply subscription granted

    async def _discover(self, broker: MqttBroker) -> str:
        from evflow.runtime.discovery import find_module

        c = self.config
        with trio.move_on_after(c.discover_wait):
            await broker.mqtt.wait_connected()
        if not broker.mqtt.connected:
            raise DiscoveryError(f"cannot discover the {c.api} module: the broker is not connected "
                                 f"within {c.discover_wait:g} s", c.api)
        found = await find_module(broker.mqtt, c.api, external_prefix=c.external_prefix, window=c.discover_window,
                                  wait_for_ready_beacon=c.discover_wait)
        if found.version != c.api_version:
            raise DiscoveryError(f"module {found.module_id!r} speaks version {found.version} of {c.api}; this "
                                 f"flow version {c.api_version} (set api_version, and use a document of that version)",
                                 c.api)
        self.context.log.info("discovered %s module %r", c.api, found.module_id)
        return found.module_id

    def request_stats(self) -> Mapping[str, OperationStats]:
        return self.client.operation_stats if hasattr(self, "client") else {}

    def stats(self) -> dict[str, int]:
        return {f"requests_{k}": v for k, v in attrs.asdict(self.client.stats).items()} if hasattr(self, "client") else {}
