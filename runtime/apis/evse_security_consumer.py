"""EVerest API ``evse_security_consumer`` 1.0.0: the operation table and a typed client.

The table is all the protocol core and the generic client need; :class:`EvseSecurityClient` only
gives the three operations their Python signatures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..models.evse_security import (
    CaCertificateType,
    EncodingFormat,
    GetCertificateInfoResult,
    GetLeafCertificateInfoRequest,
    LeafCertificateType,
)
from ..protocol.api import ApiSpec, Operation
from ..protocol.envelope import decode_bool_reply, decode_path_reply, object_reply_decoder

if TYPE_CHECKING:
    from ..client import ApiClient

IS_CA_CERTIFICATE_INSTALLED = Operation(
    "is_ca_certificate_installed",
    CaCertificateType,
    decode_bool_reply,
    doc="Whether a CA certificate of the given type is installed.",
)
GET_LEAF_CERTIFICATE_INFO = Operation(
    "get_leaf_certificate_info",
    GetLeafCertificateInfoRequest,
    object_reply_decoder(GetCertificateInfoResult),
    doc="Paths of a leaf certificate and its key, with optional OCSP hash data.",
)
GET_VERIFY_LOCATION = Operation(
    "get_verify_location",
    CaCertificateType,
    decode_path_reply,
    doc="Path of the CA bundle or directory to verify against (None when nothing is installed).",
)

EVSE_SECURITY_CONSUMER = ApiSpec(
    name="evse_security_consumer",
    version="1.0.0",
    topic_version=1,
    operations={
        op.name: op for op in (IS_CA_CERTIFICATE_INSTALLED, GET_LEAF_CERTIFICATE_INFO, GET_VERIFY_LOCATION)
    },
)


class EvseSecurityClient:
    """The three requests of ``evse_security_consumer`` with their types, over an :class:`ApiClient`."""

    def __init__(self, client: ApiClient) -> None:
        if client.api is not EVSE_SECURITY_CONSUMER:
            raise ValueError(f"an EvseSecurityClient needs a client of {EVSE_SECURITY_CONSUMER.name}")
        self.client = client

    async def is_ca_certificate_installed(
        self, certificate_type: CaCertificateType, *, timeout: float | None = None
    ) -> bool:
        return await self.client.request(IS_CA_CERTIFICATE_INSTALLED, certificate_type, timeout=timeout)

    async def get_leaf_certificate_info(
        self,
        certificate_type: LeafCertificateType,
        encoding: EncodingFormat = EncodingFormat.PEM,
        include_ocsp: bool = False,
        *,
        timeout: float | None = None,
    ) -> GetCertificateInfoResult:
        request = GetLeafCertificateInfoRequest(
            certificate_type=certificate_type, encoding=encoding, include_ocsp=include_ocsp
        )
        return await self.client.request(GET_LEAF_CERTIFICATE_INFO, request, timeout=timeout)

    async def get_verify_location(
        self, certificate_type: CaCertificateType, *, timeout: float | None = None
    ) -> str | None:
        return await self.client.request(GET_VERIFY_LOCATION, certificate_type, timeout=timeout)
