"""``everest-api``: one client of EVerest's evse_security_consumer API module, shared by id."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import trio

from evflow.runtime.apis.evse_security_client import EvseSecurityClient
from evflow.runtime.nodeapi import ConfigNode, OperationStats, field_check, number_range, ref, run_service
from evflow.runtime.protocol.topics import validate_external_prefix, validate_topic_level

from .mqtt_broker import MqttBroker


@attrs.frozen(kw_only=True)
class EverestApiConfig:
    # id of an mqtt-broker node
    broker: str = ref("mqtt-broker")
    # the API module's id in EVerest's config file (one topic level)
    module_id: str = attrs.field(validator=field_check(lambda v: validate_topic_level(v, "module_id")))
    # EVerest's mqtt_external_prefix
    external_prefix: str = attrs.field(default="", validator=field_check(validate_external_prefix))
    # seconds to wait for a reply (nodes may set their own)
    request_timeout: float = attrs.field(default=5.0, validator=number_range(above=0))
    # requests in flight at once over this client (more wait for a slot within their deadline)
    max_in_flight: int = attrs.field(default=256, validator=number_range(1))


class EverestApi(ConfigNode[EverestApiConfig]):
    """A client of EVerest's ``evse_security_consumer`` API module on a broker."""

    type = "everest-api"
    Config = EverestApiConfig

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        broker: MqttBroker = self.context.config_node(self.config.broker)  # type: ignore[assignment]
        c = self.config
        self.client = EvseSecurityClient(
            broker.mqtt, c.module_id, external_prefix=c.external_prefix,
            request_timeout=c.request_timeout, max_in_flight=c.max_in_flight,
        )
        await run_service(self.client.run, task_status=task_status)  # its reply subscription granted

    def request_stats(self) -> Mapping[str, OperationStats]:
        return self.client.operation_stats if hasattr(self, "client") else {}

    def stats(self) -> dict[str, int]:
        return {f"requests_{k}": v for k, v in attrs.asdict(self.client.stats).items()} if hasattr(self, "client") else {}
