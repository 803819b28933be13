"""A test PKI laid out as EVerest's EvseSecurity module keeps it, and helpers to mint certificates.

EVerest's default certificate root is ``<prefix>/etc/everest/certs/``; :func:`init_pki` writes under any
root what it holds there::

    ca/v2g/V2G_ROOT_CA.pem    ca/mo/MO_ROOT_CA.pem    ca/csms/CSMS_ROOT_CA.pem    ca/mf/MF_ROOT_CA.pem
    client/cso/    SECC_LEAF.pem, CPO_CERT_CHAIN.pem (leaf, sub-CA 2, sub-CA 1), SECC_LEAF.key
    client/csms/   CSMS_LEAF.pem, CSMS_CERT_CHAIN.pem (leaf, sub-CA), CSMS_LEAF.key
    private_key_password

and a DER copy of each leaf, chain and key (see :func:`der_copy_path`). ``make_ca``, ``make_leaf`` and
``make_tls_*`` mint certificates for other tests, e.g. a server certificate for a TLS mosquitto.
Every key is EC P-256: quick to generate, and the kind EVerest itself makes for its CSRs.

One module though longer than most: every certificate of the test PKI is minted with the same few
helpers, and the chains' profiles read best next to each other.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..models.evse_security import CaCertificateType, LeafCertificateType

__all__ = [
    "CA_BUNDLE_PATHS",
    "CHARGING_STATION_ID",
    "GENERATED",
    "LEAF_DIRECTORIES",
    "PASSWORD_FILE_NAME",
    "SECC_EVSE_ID",
    "InstalledLeaf",
    "Issued",
    "PkiLayout",
    "der_copy_path",
    "init_pki",
    "make_ca",
    "make_leaf",
    "make_tls_client_cert",
    "make_tls_server_cert",
    "subject_name",
    "write_der",
    "write_key",
    "write_pem",
]

# Where EvseSecurity keeps each CA bundle and each kind of leaf it serves, relative to the certificate root.
CA_BUNDLE_PATHS: Final[Mapping[CaCertificateType, Path]] = MappingProxyType(
    {
        CaCertificateType.V2G: Path("ca/v2g/V2G_ROOT_CA.pem"),
        CaCertificateType.MO: Path("ca/mo/MO_ROOT_CA.pem"),
        CaCertificateType.CSMS: Path("ca/csms/CSMS_ROOT_CA.pem"),
        CaCertificateType.MF: Path("ca/mf/MF_ROOT_CA.pem"),
    }
)
LEAF_DIRECTORIES: Final[Mapping[LeafCertificateType, Path]] = MappingProxyType(
    {
        LeafCertificateType.V2G: Path("client/cso"),
        LeafCertificateType.CSMS: Path("client/csms"),
    }
)
# EVerest takes its one optional key passphrase from its config file; the test PKI leaves it here.
PASSWORD_FILE_NAME: Final = "private_key_password"

# The SECC leaf's CN is the EVSE id, as ISO 15118-2 asks; the CSMS leaf's is the charging station's id.
SECC_EVSE_ID: Final = "DE*EVF*E1234567*1"
CHARGING_STATION_ID: Final = "evflow-cs-0001"

DEFAULT_ORGANIZATION: Final = "evflow test PKI"
DEFAULT_COUNTRY: Final = "DE"

_CA_BACKDATE: Final = timedelta(days=30)
_CA_LIFETIME: Final = timedelta(days=3650)
_LEAF_BACKDATE: Final = timedelta(days=1)
_LEAF_LIFETIME: Final = timedelta(days=365)

_CA_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
# An EC leaf signs (ECDSA in TLS and in ISO 15118 messages) and agrees keys (ECDH); it encrypts nothing.
_LEAF_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


class _Default(enum.Enum):
    GENERATED = enum.auto()


# `init_pki(key_password=GENERATED)`, the default: encrypt the keys with a fresh random passphrase.
GENERATED: Final = _Default.GENERATED


@attrs.frozen
class Issued:
    """A certificate and its private key. Two are equal when their certificates are."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey = attrs.field(eq=False, repr=False)


@attrs.frozen(kw_only=True)
class InstalledLeaf:
    """A leaf as written into its EVerest folder: PEM files, with DER copies at ``der_copy_path(path)``."""

    issued: Issued
    # The chain file's certificates: the leaf first, then its sub-CAs up to (not including) the root.
    chain: tuple[x509.Certificate, ...]
    certificate_single: Path
    certificate_chain: Path
    # Absent when `init_pki` was asked to drop the leaf keys.
    key: Path


@attrs.frozen(kw_only=True)
class PkiLayout:
    """What :func:`init_pki` wrote, for tests to compare a store's answers against."""

    root: Path
    # The passphrase of every leaf key, or None when the keys are not encrypted. A secret: not in repr.
    key_password: str | None = attrs.field(repr=False)
    v2g_root: Issued
    mo_root: Issued
    csms_root: Issued
    mf_root: Issued
    secc: InstalledLeaf
    csms: InstalledLeaf

    def ca_bundle(self, ca_type: CaCertificateType) -> Path:
        return self.root / CA_BUNDLE_PATHS[ca_type]


def subject_name(
    common_name: str,
    *,
    organization: str = DEFAULT_ORGANIZATION,
    country: str = DEFAULT_COUNTRY,
    domain_component: str | None = None,
) -> x509.Name:
    """A name as ISO 15118 certificates carry it: CN, O, C and, inside the V2G PKI, a DC."""
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COUNTRY_NAME, country),
    ]
    if domain_component is not None:
        attributes.append(x509.NameAttribute(NameOID.DOMAIN_COMPONENT, domain_component))
    return x509.Name(attributes)


def make_ca(
    subject: x509.Name | str,
    *,
    issuer: Issued | None = None,
    path_length: int | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    """A CA: a self-signed root without `issuer`, else a sub-CA signed by it.

    A str `subject` is a common name (see :func:`subject_name`); `path_length` None sets no limit.
    Valid by default from 30 days ago for ten years.
    """
    now = datetime.now(UTC)
    return _issue(
        _as_name(subject),
        issuer,
        not_before=now - _CA_BACKDATE if not_before is None else not_before,
        not_after=now + _CA_LIFETIME if not_after is None else not_after,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=path_length), True),
            (_CA_KEY_USAGE, True),
        ],
    )


def make_leaf(
    subject: x509.Name | str,
    *,
    issuer: Issued,
    extended_key_usage: Sequence[x509.ObjectIdentifier] = (),
    alternative_names: Sequence[x509.GeneralName] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    """An end-entity certificate signed by `issuer`, valid by default from a day ago for a year."""
    now = datetime.now(UTC)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (_LEAF_KEY_USAGE, True),
    ]
    if extended_key_usage:
        extensions.append((x509.ExtendedKeyUsage(list(extended_key_usage)), False))
    if alternative_names:
        extensions.append((x509.SubjectAlternativeName(list(alternative_names)), False))
    return _issue(
        _as_name(subject),
        issuer,
        not_before=now - _LEAF_BACKDATE if not_before is None else not_before,
        not_after=now + _LEAF_LIFETIME if not_after is None else not_after,
        extensions=extensions,
    )


def make_tls_server_cert(ca: Issued, hostnames: Sequence[str]) -> Issued:
    """A TLS server certificate for `hostnames` (names or literal IP addresses), CN the first of them."""
    if not hostnames:
        raise ValueError("a TLS server certificate needs at least one host name")
    return make_leaf(
        hostnames[0],
        issuer=ca,
        extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH],
        alternative_names=[_general_name(host) for host in hostnames],
    )


def make_tls_client_cert(ca: Issued, common_name: str) -> Issued:
    """A TLS client certificate (mosquitto can take its CN as the user name)."""
    return make_leaf(common_name, issuer=ca, extended_key_usage=[ExtendedKeyUsageOID.CLIENT_AUTH])


def write_pem(path: Path, *certificates: x509.Certificate) -> Path:
    """Write `certificates` into one PEM file (a chain: leaf first), creating its folder. Returns `path`."""
    if not certificates:
        raise ValueError(f"no certificate to write to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certificates))
    return path


def write_der(path: Path, certificate: x509.Certificate) -> Path:
    """Write `certificate` as DER (which holds exactly one), creating its folder. Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    return path


def write_key(
    path: Path,
    key: ec.EllipticCurvePrivateKey,
    *,
    password: str | None = None,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
) -> Path:
    """Write `key` as PKCS#8, encrypted when `password` is given, readable by its owner only. Returns `path`.

    PKCS#8 with a passphrase is what EVerest writes for the keys of its CSRs (PEM_write_bio_PrivateKey).
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password.encode())
    )
    data = key.private_bytes(encoding, serialization.PrivateFormat.PKCS8, encryption)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb", opener=_owner_only) as file:
        file.write(data)
    return path


def der_copy_path(path: Path) -> Path:
    """Where the DER copy of a PEM file lives: ``X.pem`` → ``X.der``, ``X.key`` → ``X.key.der``.

    A key's copy keeps ``.key`` in its name so that it cannot clash with its certificate's copy. EVerest
    never uses the copies: it reads ``.pem`` and ``.der`` files alike as PEM (a DER file yields no
    certificate) and takes keys only from ``.key`` files.
    """
    return path.with_name(path.name + ".der") if path.suffix == ".key" else path.with_suffix(".der")


def init_pki(
    root: Path,
    *,
    expired_leaf: bool = False,
    not_yet_valid_leaf: bool = False,
    drop_leaf_key: bool = False,
    key_password: str | None | Literal[_Default.GENERATED] = GENERATED,
    now: datetime | None = None,
) -> PkiLayout:
    """Write a complete test PKI under `root`, laid out as EVerest keeps it, and describe it.

    One root per CA type. V2G root → CPO sub-CA 1 → CPO sub-CA 2 → SECC leaf in ``client/cso``;
    CSMS root → CSMS sub-CA → CSMS leaf in ``client/csms`` (the sub-CA makes the chain file a chain).
    The leaf keys are encrypted with `key_password`: a random one by default, None for none; it is
    also written to ``root/private_key_password``.

    `expired_leaf`, `not_yet_valid_leaf` and `drop_leaf_key` spoil both leaves, so that a store over this
    PKI answers every ``GetCertificateInfoStatus``. `now` (default: the current time) anchors every
    validity period. Files already there are overwritten; a dropped key or password file is removed.
    """
    if expired_leaf and not_yet_valid_leaf:
        raise ValueError("a leaf cannot be both expired and not yet valid")
    now = datetime.now(UTC) if now is None else now
    password = secrets.token_urlsafe(18) if key_password is GENERATED else key_password
    ca_from, ca_until = now - _CA_BACKDATE, now + _CA_LIFETIME
    leaf_from, leaf_until = _leaf_validity(now, expired=expired_leaf, not_yet_valid=not_yet_valid_leaf)

    def ca(name: x509.Name, issuer: Issued | None = None, path_length: int | None = None) -> Issued:
        return make_ca(name, issuer=issuer, path_length=path_length, not_before=ca_from, not_after=ca_until)

    def leaf(name: x509.Name, issuer: Issued, usage: x509.ObjectIdentifier) -> Issued:
        return make_leaf(
            name, issuer=issuer, extended_key_usage=[usage], not_before=leaf_from, not_after=leaf_until
        )

    roots = {
        CaCertificateType.V2G: ca(
            subject_name("V2G Root CA", organization="evflow V2G", domain_component="V2G")
        ),
        CaCertificateType.MO: ca(subject_name("MO Root CA", organization="evflow eMSP")),
        CaCertificateType.CSMS: ca(subject_name("CSMS Root CA", organization="evflow CSMS")),
        CaCertificateType.MF: ca(subject_name("MF Root CA", organization="evflow Manufacturer")),
    }
    for ca_type, root_ca in roots.items():
        write_pem(root / CA_BUNDLE_PATHS[ca_type], root_ca.certificate)

    cpo_name = "evflow CPO"
    cpo_sub_ca_1 = ca(
        subject_name("CPO Sub-CA 1", organization=cpo_name, domain_component="V2G"),
        roots[CaCertificateType.V2G],
        path_length=1,
    )
    cpo_sub_ca_2 = ca(
        subject_name("CPO Sub-CA 2", organization=cpo_name, domain_component="V2G"),
        cpo_sub_ca_1,
        path_length=0,
    )
    secc_leaf = leaf(
        subject_name(SECC_EVSE_ID, organization=cpo_name, domain_component="CPO"),
        cpo_sub_ca_2,
        ExtendedKeyUsageOID.SERVER_AUTH,  # the SECC is the TLS server towards the EV
    )
    csms_sub_ca = ca(
        subject_name("CSMS Sub-CA", organization="evflow CSMS"), roots[CaCertificateType.CSMS], path_length=0
    )
    csms_leaf = leaf(
        subject_name(CHARGING_STATION_ID, organization=cpo_name),
        csms_sub_ca,
        ExtendedKeyUsageOID.CLIENT_AUTH,  # the charging station is the TLS client towards the CSMS
    )

    password_file = root / PASSWORD_FILE_NAME
    if password is None:
        password_file.unlink(missing_ok=True)
    else:
        password_file.write_text(password)

    return PkiLayout(
        root=root,
        key_password=password,
        v2g_root=roots[CaCertificateType.V2G],
        mo_root=roots[CaCertificateType.MO],
        csms_root=roots[CaCertificateType.CSMS],
        mf_root=roots[CaCertificateType.MF],
        secc=_install_leaf(
            root / LEAF_DIRECTORIES[LeafCertificateType.V2G],
            single_name="SECC_LEAF",
            chain_name="CPO_CERT_CHAIN",
            leaf=secc_leaf,
            sub_cas=(cpo_sub_ca_2, cpo_sub_ca_1),
            password=password,
            drop_key=drop_leaf_key,
        ),
        csms=_install_leaf(
            root / LEAF_DIRECTORIES[LeafCertificateType.CSMS],
            single_name="CSMS_LEAF",
            chain_name="CSMS_CERT_CHAIN",
            leaf=csms_leaf,
            sub_cas=(csms_sub_ca,),
            password=password,
            drop_key=drop_leaf_key,
        ),
    )


def _install_leaf(
    directory: Path,
    *,
    single_name: str,
    chain_name: str,
    leaf: Issued,
    sub_cas: Sequence[Issued],
    password: str | None,
    drop_key: bool,
) -> InstalledLeaf:
    chain = (leaf.certificate, *(ca.certificate for ca in sub_cas))
    single_file = write_pem(directory / f"{single_name}.pem", leaf.certificate)
    chain_file = write_pem(directory / f"{chain_name}.pem", *chain)
    # DER holds one certificate, so the chain's DER copy is the leaf alone.
    for pem_file in (single_file, chain_file):
        write_der(der_copy_path(pem_file), leaf.certificate)

    key_file = directory / f"{single_name}.key"
    if drop_key:
        key_file.unlink(missing_ok=True)
        der_copy_path(key_file).unlink(missing_ok=True)
    else:
        write_key(key_file, leaf.key, password=password)
        write_key(der_copy_path(key_file), leaf.key, password=password, encoding=serialization.Encoding.DER)

    return InstalledLeaf(
        issued=leaf,
        chain=chain,
        certificate_single=single_file,
        certificate_chain=chain_file,
        key=key_file,
    )


def _leaf_validity(now: datetime, *, expired: bool, not_yet_valid: bool) -> tuple[datetime, datetime]:
    """(not before, not after) of a leaf, all within its CAs' validity."""
    if expired:
        return now - timedelta(days=10), now - timedelta(days=1)
    if not_yet_valid:
        return now + timedelta(days=1), now + _LEAF_LIFETIME
    return now - _LEAF_BACKDATE, now + _LEAF_LIFETIME


def _issue(
    subject: x509.Name,
    issuer: Issued | None,
    *,
    not_before: datetime,
    not_after: datetime,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> Issued:
    """Make a key and a certificate for it, signed by `issuer` (by the new key itself when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    signing_key = key if issuer is None else issuer.key
    return Issued(builder.sign(signing_key, hashes.SHA256()), key)


def _as_name(subject: x509.Name | str) -> x509.Name:
    return subject_name(subject) if isinstance(subject, str) else subject


def _general_name(host: str) -> x509.GeneralName:
    # A literal address must be an IP address entry: TLS clients match addresses only against those.
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _owner_only(path: str, flags: int) -> int:
    # Created 0600, so the key is never readable by others, not even between writing and a chmod.
    return os.open(path, flags, 0o600)
