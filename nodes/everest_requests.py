"""The request nodes of ``evse_security_consumer``, one per operation of its table.

Each takes its request parameters from its own config when set, else from ``msg.payload``; port 0
carries the typed reply as ``msg.payload``, port 1 the failures (timeout, not connected, invalid
input, invalid reply) with the error on ``msg.error``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from evflow.runtime.apis.evse_security_consumer import (
    GET_LEAF_CERTIFICATE_INFO,
    GET_VERIFY_LOCATION,
    IS_CA_CERTIFICATE_INSTALLED,
)
from evflow.runtime.client import ApiClient
from evflow.runtime.errors import InvalidRequest
from evflow.runtime.message import Message
from evflow.runtime.models.evse_security import (
    CaCertificateType,
    EncodingFormat,
    GetLeafCertificateInfoRequest,
    LeafCertificateType,
)
from evflow.runtime.nodeapi import Node, number_range, one_of, ref
from evflow.runtime.protocol.api import Operation

_positive = number_range(above=0)


@attrs.frozen(kw_only=True)
class CaRequestConfig:
    # id of an everest-api node
    api: str = ref("everest-api")
    # the CA certificate type to ask about; when not set, msg.payload gives it
    certificate_type: CaCertificateType | None = None
    # seconds to wait for the reply (default: the everest-api node's request_timeout)
    timeout: float | None = attrs.field(default=None, validator=_positive)
    # requests this node keeps in flight at once
    max_in_flight: int = attrs.field(default=32, validator=number_range(1))
    # while the broker is away: "fail" at once, or "wait" for it within the timeout
    when_disconnected: str = attrs.field(default="fail", validator=one_of("fail", "wait"))


@attrs.frozen(kw_only=True)
class LeafRequestConfig:
    # id of an everest-api node
    api: str = ref("everest-api")
    # each of these three, when not set, comes from msg.payload (an object with the same keys)
    certificate_type: LeafCertificateType | None = None
    encoding: EncodingFormat | None = None
    include_ocsp: bool | None = None
    # seconds to wait for the reply (default: the everest-api node's request_timeout)
    timeout: float | None = attrs.field(default=None, validator=_positive)
    # requests this node keeps in flight at once
    max_in_flight: int = attrs.field(default=32, validator=number_range(1))
    # while the broker is away: "fail" at once, or "wait" for it within the timeout
    when_disconnected: str = attrs.field(default="fail", validator=one_of("fail", "wait"))


class _EverestRequest(Node[Any]):
    operation: ClassVar[Operation[Any, Any]]
    error_port = 1

    @classmethod
    def outputs(cls, config: Any) -> int:
        return 2

    @classmethod
    def concurrency_of(cls, config: Any) -> int:
        return config.max_in_flight

    async def start(self) -> None:
        self.client: ApiClient = self.context.config_node(self.config.api).client  # type: ignore[attr-defined]

    def request_payload(self, msg: Message) -> Any:
        return self.config.certificate_type if self.config.certificate_type is not None else msg.payload

    async def receive(self, msg: Message) -> None:
        # Failures raise: the engine routes them to port 1 (or catch nodes, or the log).
        reply = await self.client.request(
            self.operation, self.request_payload(msg), timeout=self.config.timeout,
            wait_for_connection=self.config.when_disconnected == "wait",
        )
        await self.send(msg.with_payload(reply))


class IsCaCertificateInstalled(_EverestRequest):
    """Asks EVerest whether a CA certificate of a type is installed; the reply is a boolean."""

    type = "is-ca-certificate-installed"
    Config = CaRequestConfig
    operation = IS_CA_CERTIFICATE_INSTALLED


class GetVerifyLocation(_EverestRequest):
    """Asks EVerest for the path to verify against (CA bundle file or directory); None if nothing is installed."""

    type = "get-verify-location"
    Config = CaRequestConfig
    operation = GET_VERIFY_LOCATION


class GetLeafCertificateInfo(_EverestRequest):
    """Asks EVerest for a leaf certificate's files, key and OCSP data; the reply is a GetCertificateInfoResult."""

    type = "get-leaf-certificate-info"
    Config = LeafRequestConfig
    operation = GET_LEAF_CERTIFICATE_INFO

    def request_payload(self, msg: Message) -> Any:
        config = self.config
        fixed = {"certificate_type": config.certificate_type, "encoding": config.encoding,
                 "include_ocsp": config.include_ocsp}
        if None not in fixed.values():
            return GetLeafCertificateInfoRequest(**fixed)
        given = msg.payload
        if isinstance(given, GetLeafCertificateInfoRequest):
            given = {"certificate_type": given.certificate_type, "encoding": given.encoding,
                     "include_ocsp": given.include_ocsp}
        if not isinstance(given, Mapping):
            missing = [key for key, value in fixed.items() if value is None]
            raise InvalidRequest(self.operation.name, [
                f"{', '.join(missing)} not configured, and msg.payload is not an object giving them @ $.payload"
            ])
        # The payload's keys, overridden by what the config fixes; a key missing from both is
        # reported by the client as "required key missing @ $.<key>".
        return {**given, **{key: value for key, value in fixed.items() if value is not None}}
