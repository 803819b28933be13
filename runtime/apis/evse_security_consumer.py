"""EVerest API ``evse_security_consumer`` 1.0.0: its operation table.

The table is all the protocol core and the generic client need. Pure: no I/O is imported here.
"""

from __future__ import annotations

from ..models.evse_security import CaCertificateType, GetCertificateInfoResult, GetLeafCertificateInfoRequest
from ..protocol.api import ApiSpec, Operation
from ..protocol.envelope import decode_bool_reply, decode_path_reply, object_reply_decoder

IS_CA_CERTIFICATE_INSTALLED = Operation(
    "is_ca_certificate_installed",
    CaCertificateType,
    decode_bool_reply,
    doc="Whether a CA certificate of the given type is installed.",
)
def _leaf_secrets(result: GetCertificateInfoResult) -> tuple[str, ...]:
    return (result.info.password,) if result.info is not None and result.info.password else ()


GET_LEAF_CERTIFICATE_INFO = Operation(
    "get_leaf_certificate_info",
    GetLeafCertificateInfoRequest,
    object_reply_decoder(GetCertificateInfoResult),
    doc="Paths of a leaf certificate and its key, with optional OCSP hash data.",
    secrets_of=_leaf_secrets,
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
