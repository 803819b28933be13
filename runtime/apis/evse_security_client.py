"""A typed client of ``evse_security_consumer``: its three requests with Python signatures."""

from __future__ import annotations

from typing import Any

from ..client import ApiClient
from ..models.evse_security import (
    CaCertificateType,
    EncodingFormat,
    GetCertificateInfoResult,
    LeafCertificateType,
)
from ..transport import MqttClient
from .evse_security_consumer import (
    EVSE_SECURITY_CONSUMER,
    GET_LEAF_CERTIFICATE_INFO,
    GET_VERIFY_LOCATION,
    IS_CA_CERTIFICATE_INSTALLED,
)

__all__ = ["EvseSecurityClient"]


class EvseSecurityClient(ApiClient):
    """An :class:`ApiClient` of ``evse_security_consumer`` with its three requests typed."""

    def __init__(self, mqtt: MqttClient, module_id: str, **options: Any) -> None:
        super().__init__(mqtt, EVSE_SECURITY_CONSUMER, module_id, **options)

    async def is_ca_certificate_installed(
        self, certificate_type: CaCertificateType | str, *, timeout: float | None = None
    ) -> bool:
        return await self.request(IS_CA_CERTIFICATE_INSTALLED, certificate_type, timeout=timeout)

    async def get_leaf_certificate_info(
        self,
        certificate_type: LeafCertificateType | str,
        encoding: EncodingFormat | str = EncodingFormat.PEM,
        include_ocsp: bool = False,
        *,
        timeout: float | None = None,
    ) -> GetCertificateInfoResult:
        request = {"certificate_type": certificate_type, "encoding": encoding, "include_ocsp": include_ocsp}
        return await self.request(GET_LEAF_CERTIFICATE_INFO, request, timeout=timeout)

    async def get_verify_location(
        self, certificate_type: CaCertificateType | str, *, timeout: float | None = None
    ) -> str | None:
        return await self.request(GET_VERIFY_LOCATION, certificate_type, timeout=timeout)
