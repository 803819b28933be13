"""Values of the EVerest API ``evse_security_consumer`` 1.0.0, as attrs classes.

Field names are the wire names, so a structuring error's JSON path (``$.info.certificate_count``) names
the key on the wire. Enums are ``StrEnum``: a member compares equal to its wire string, which lets flow
rules written against the JSON (``payload.status == "Accepted"``) hold for the typed value too.

Every class is frozen: a reply is a value that many nodes may share without copying.
Range checks (``maxLength``, u64) live here as attrs validators so that an invalid value cannot exist,
whether it came from the wire or was built in code.
"""

from __future__ import annotations

import enum
from typing import NewType

import attrs

from .validators import int_range, max_length

U64_MAX = 2**64 - 1
I32_MAX = 2**31 - 1

# A heartbeat counter: u64, starting at 0, wrapping to 0 after U64_MAX.
HeartbeatId = NewType("HeartbeatId", int)
# `true`: communication is good; `false`: stop the check for good.
CommunicationCheck = NewType("CommunicationCheck", bool)


class CaCertificateType(enum.StrEnum):
    V2G = "V2G"
    MO = "MO"
    CSMS = "CSMS"
    MF = "MF"


class LeafCertificateType(enum.StrEnum):
    CSMS = "CSMS"
    V2G = "V2G"
    MF = "MF"
    MO = "MO"


class EncodingFormat(enum.StrEnum):
    DER = "DER"
    PEM = "PEM"


class GetCertificateInfoStatus(enum.StrEnum):
    Accepted = "Accepted"
    Rejected = "Rejected"
    NotFound = "NotFound"
    NotFoundValid = "NotFoundValid"
    PrivateKeyNotFound = "PrivateKeyNotFound"


class HashAlgorithm(enum.StrEnum):
    SHA256 = "SHA256"
    SHA384 = "SHA384"
    SHA512 = "SHA512"


@attrs.frozen(kw_only=True)
class CertificateHashData:
    hash_algorithm: HashAlgorithm
    # Hash of the DER of the issuer's distinguished name, hex.
    issuer_name_hash: str = attrs.field(validator=max_length(128))
    # Hash of the issuer's public key bits (no tag, no length), hex.
    issuer_key_hash: str = attrs.field(validator=max_length(128))
    # Hex without "0x" and without leading zeros.
    serial_number: str = attrs.field(validator=max_length(40))


@attrs.frozen(kw_only=True)
class CertificateOCSP:
    hash: CertificateHashData
    ocsp_path: str | None = None


@attrs.frozen(kw_only=True)
class CertificateInfo:
    # Path of the private key (PEM or DER).
    key: str
    certificate_count: int = attrs.field(validator=int_range(0, I32_MAX))
    # Path of the chain file.
    certificate: str | None = None
    # Path of the single leaf certificate file.
    certificate_single: str | None = None
    # The root certificate itself, as PEM text (not a path).
    certificate_root: str | None = None
    # The key's passphrase: a secret, kept out of repr so it never reaches a log by accident.
    password: str | None = attrs.field(default=None, repr=False)
    ocsp: tuple[CertificateOCSP, ...] | None = None


@attrs.frozen(kw_only=True)
class GetCertificateInfoResult:
    status: GetCertificateInfoStatus
    info: CertificateInfo | None = None


@attrs.frozen(kw_only=True)
class GetLeafCertificateInfoRequest:
    # All three are required on the wire: no defaults, so none is ever omitted when encoding.
    certificate_type: LeafCertificateType
    encoding: EncodingFormat
    include_ocsp: bool
