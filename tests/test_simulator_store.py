"""The simulator's certificate store, asked about real test PKIs that ``init_pki`` writes to disk."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from evflow.runtime.models.evse_security import (
    CaCertificateType,
    CertificateHashData,
    EncodingFormat,
    GetCertificateInfoResult,
    GetCertificateInfoStatus,
    GetLeafCertificateInfoRequest,
    HashAlgorithm,
    LeafCertificateType,
)
from evflow.runtime.simulator.pki import (
    InstalledLeaf,
    PkiLayout,
    der_copy_path,
    init_pki,
    make_ca,
    make_leaf,
    make_tls_client_cert,
    make_tls_server_cert,
    write_key,
    write_pem,
)
from evflow.runtime.simulator.store import CertificateStore, openssl_subject_hash, rehash_directory

NOW = datetime.now(UTC)
SERVED = [LeafCertificateType.V2G, LeafCertificateType.CSMS]
STORE_LOGGER = "evflow.runtime.simulator.store"

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl program installed")


@pytest.fixture
def pki(tmp_path: Path) -> PkiLayout:
    return init_pki(tmp_path / "certs", now=NOW)


def store_of(layout: PkiLayout) -> CertificateStore:
    return CertificateStore(layout.root, key_password=layout.key_password)


def ask(
    store: CertificateStore,
    leaf_type: LeafCertificateType,
    *,
    encoding: EncodingFormat = EncodingFormat.PEM,
    include_ocsp: bool = False,
    strict: bool = False,
) -> GetCertificateInfoResult:
    request = GetLeafCertificateInfoRequest(
        certificate_type=leaf_type, encoding=encoding, include_ocsp=include_ocsp
    )
    return store.get_leaf_certificate_info(request, now=NOW, strict=strict)


def installed(layout: PkiLayout, leaf_type: LeafCertificateType) -> InstalledLeaf:
    return layout.secc if leaf_type is LeafCertificateType.V2G else layout.csms


def root_of(layout: PkiLayout, leaf_type: LeafCertificateType) -> x509.Certificate:
    root = layout.v2g_root if leaf_type is LeafCertificateType.V2G else layout.csms_root
    return root.certificate


def ocsp_hash(certificate: x509.Certificate, issuer: x509.Certificate) -> CertificateHashData:
    """The CertID that cryptography's own OCSP request builder makes, in the API's hex form."""
    request = ocsp.OCSPRequestBuilder().add_certificate(certificate, issuer, hashes.SHA256()).build()
    return CertificateHashData(
        hash_algorithm=HashAlgorithm.SHA256,
        issuer_name_hash=request.issuer_name_hash.hex(),
        issuer_key_hash=request.issuer_key_hash.hex(),
        serial_number=format(request.serial_number, "x"),
    )


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], check=True, capture_output=True, text=True).stdout.strip()


# ---- get_leaf_certificate_info: every status ------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf_type", "count"), [(LeafCertificateType.V2G, 3), (LeafCertificateType.CSMS, 2)]
)
def test_a_valid_leaf_with_its_key_is_accepted_with_its_files(
    pki: PkiLayout, leaf_type: LeafCertificateType, count: int
) -> None:
    result = ask(store_of(pki), leaf_type)

    assert result.status is GetCertificateInfoStatus.Accepted
    assert result.info is not None
    leaf = installed(pki, leaf_type)
    assert result.info.key == str(leaf.key.resolve())
    assert result.info.certificate == str(leaf.certificate_chain.resolve())
    assert result.info.certificate_single == str(leaf.certificate_single.resolve())
    assert result.info.certificate_count == count
    assert result.info.password == pki.key_password
    # EVerest's form: no root, and no OCSP data unless asked for.
    assert result.info.certificate_root is None
    assert result.info.ocsp is None


@pytest.mark.parametrize("leaf_type", SERVED)
def test_the_named_files_hold_the_leaf_its_chain_and_its_key(
    pki: PkiLayout, leaf_type: LeafCertificateType
) -> None:
    info = ask(store_of(pki), leaf_type).info
    assert info is not None and info.certificate is not None and info.certificate_single is not None

    chain = x509.load_pem_x509_certificates(Path(info.certificate).read_bytes())
    [single] = x509.load_pem_x509_certificates(Path(info.certificate_single).read_bytes())
    assert tuple(chain) == installed(pki, leaf_type).chain
    assert len(chain) == info.certificate_count
    assert single == chain[0]
    password = None if info.password is None else info.password.encode()
    key = serialization.load_pem_private_key(Path(info.key).read_bytes(), password)
    assert key.public_key() == single.public_key()


@pytest.mark.parametrize("leaf_type", [LeafCertificateType.MF, LeafCertificateType.MO])
def test_mf_and_mo_leaves_are_rejected(pki: PkiLayout, leaf_type: LeafCertificateType) -> None:
    assert ask(store_of(pki), leaf_type) == GetCertificateInfoResult(status=GetCertificateInfoStatus.Rejected)


@pytest.mark.parametrize("leaf_type", SERVED)
def test_an_empty_store_has_no_leaf(tmp_path: Path, leaf_type: LeafCertificateType) -> None:
    (tmp_path / "client" / "cso").mkdir(parents=True)
    for root in (tmp_path, tmp_path / "missing"):
        result = ask(CertificateStore(root), leaf_type)
        assert result == GetCertificateInfoResult(status=GetCertificateInfoStatus.NotFound)


@pytest.mark.parametrize("spoil", ["expired_leaf", "not_yet_valid_leaf"])
@pytest.mark.parametrize("leaf_type", SERVED)
def test_leaves_that_are_not_valid_now_are_not_found_valid(
    tmp_path: Path, leaf_type: LeafCertificateType, spoil: str
) -> None:
    layout = init_pki(tmp_path, now=NOW, **{spoil: True})
    result = ask(store_of(layout), leaf_type)
    assert result == GetCertificateInfoResult(status=GetCertificateInfoStatus.NotFoundValid)


@pytest.mark.parametrize("leaf_type", SERVED)
def test_a_valid_leaf_without_its_key_is_private_key_not_found(
    tmp_path: Path, leaf_type: LeafCertificateType
) -> None:
    layout = init_pki(tmp_path, now=NOW, drop_leaf_key=True)
    assert not installed(layout, leaf_type).key.exists()
    result = ask(store_of(layout), leaf_type)
    assert result == GetCertificateInfoResult(status=GetCertificateInfoStatus.PrivateKeyNotFound)


@pytest.mark.parametrize("password", ["not the password", None])
def test_a_key_that_cannot_be_decrypted_is_missing_and_named_in_a_warning(
    pki: PkiLayout, password: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        result = ask(CertificateStore(pki.root, key_password=password), LeafCertificateType.V2G)

    assert result.status is GetCertificateInfoStatus.PrivateKeyNotFound
    assert str(pki.secc.key.resolve()) in caplog.text


def test_a_password_is_given_only_for_an_encrypted_key(tmp_path: Path) -> None:
    layout = init_pki(tmp_path, now=NOW, key_password=None)
    assert layout.key_password is None
    assert not (tmp_path / "private_key_password").exists()

    # Even when a password is configured: this key needs none.
    info = ask(CertificateStore(tmp_path, key_password="configured"), LeafCertificateType.V2G).info
    assert info is not None
    assert info.password is None
    serialization.load_pem_private_key(Path(info.key).read_bytes(), password=None)


def test_the_newest_valid_leaf_that_has_its_key_is_chosen(pki: PkiLayout) -> None:
    folder = pki.root / "client" / "cso"
    ca = make_ca("Other CA")

    def add(name: str, not_before: datetime, not_after: datetime, *, with_key: bool) -> x509.Certificate:
        leaf = make_leaf(name, issuer=ca, not_before=not_before, not_after=not_after)
        write_pem(folder / f"{name}.pem", leaf.certificate)
        if with_key:
            write_key(folder / "keys" / f"{name}.key", leaf.key)  # found below the folder too
        return leaf.certificate

    add("NOT_YET_VALID", NOW + timedelta(days=1), NOW + timedelta(days=900), with_key=True)
    add("KEYLESS", NOW - timedelta(days=1), NOW + timedelta(days=800), with_key=False)
    newer = add("NEWER", NOW - timedelta(days=1), NOW + timedelta(days=700), with_key=True)

    info = ask(store_of(pki), LeafCertificateType.V2G).info

    assert info is not None
    assert info.certificate_single == str((folder / "NEWER.pem").resolve())
    assert info.key == str((folder / "keys" / "NEWER.key").resolve())
    # No chain file holds it: no chain, and the count of a single certificate.
    assert info.certificate is None
    assert info.certificate_count == 1
    assert info.password is None
    [single] = x509.load_pem_x509_certificates(Path(info.certificate_single).read_bytes())
    assert single == newer


def test_the_store_reads_the_files_afresh_on_every_call(pki: PkiLayout) -> None:
    store = store_of(pki)
    assert ask(store, LeafCertificateType.V2G).status is GetCertificateInfoStatus.Accepted

    pki.secc.key.unlink()
    assert ask(store, LeafCertificateType.V2G).status is GetCertificateInfoStatus.PrivateKeyNotFound

    for pem in (pki.root / "client" / "cso").glob("*.pem"):
        pem.unlink()
    assert ask(store, LeafCertificateType.V2G).status is GetCertificateInfoStatus.NotFound


def test_bad_files_count_as_absent_and_are_named_in_warnings(
    pki: PkiLayout, caplog: pytest.LogCaptureFixture
) -> None:
    folder = pki.root / "client" / "cso"
    (folder / "BROKEN.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    (folder / "BROKEN.key").write_bytes(b"\x00garbage")
    # Renamed, the leaf's key is searched for, and the broken one is met first.
    pki.secc.key.rename(folder / "Z_SECC.key")

    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        result = ask(store_of(pki), LeafCertificateType.V2G)

    assert result.status is GetCertificateInfoStatus.Accepted
    assert "BROKEN.pem" in caplog.text
    assert "BROKEN.key" in caplog.text


# ---- OCSP data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("leaf_type", SERVED)
def test_ocsp_data_is_cryptographys_cert_id_for_each_certificate_of_the_chain(
    pki: PkiLayout, leaf_type: LeafCertificateType
) -> None:
    info = ask(store_of(pki), leaf_type, include_ocsp=True).info
    assert info is not None and info.ocsp is not None

    chain = installed(pki, leaf_type).chain
    issuers = (*chain[1:], root_of(pki, leaf_type))
    expected = [ocsp_hash(certificate, issuer) for certificate, issuer in zip(chain, issuers, strict=True)]
    assert [entry.hash for entry in info.ocsp] == expected
    assert all(entry.ocsp_path is None for entry in info.ocsp)


def test_a_certificate_whose_issuer_is_unknown_has_no_ocsp_entry(pki: PkiLayout) -> None:
    pki.ca_bundle(CaCertificateType.V2G).write_text("")
    info = ask(store_of(pki), LeafCertificateType.V2G, include_ocsp=True).info
    assert info is not None and info.ocsp is not None

    leaf, sub_ca_2, sub_ca_1 = pki.secc.chain
    # Sub-CA 1 was issued by the root, which is gone.
    assert [entry.hash for entry in info.ocsp] == [ocsp_hash(leaf, sub_ca_2), ocsp_hash(sub_ca_2, sub_ca_1)]


def test_ocsp_path_names_the_cached_response_of_a_certificate(pki: PkiLayout) -> None:
    leaf, sub_ca_2, _ = pki.secc.chain
    wanted = ocsp_hash(leaf, sub_ca_2)
    cache = pki.root / "client" / "cso" / "ocsp"
    cache.mkdir()
    hash_file = cache / "M01_D01_i1_r7_ocsp.hash"
    fields = [wanted.hash_algorithm, wanted.issuer_name_hash, wanted.issuer_key_hash, wanted.serial_number]
    hash_file.write_text("".join(f"{field}\n" for field in fields))
    response = hash_file.with_suffix(".der")
    response.write_bytes(b"\x30\x03\x0a\x01\x00")

    info = ask(store_of(pki), LeafCertificateType.V2G, include_ocsp=True).info
    assert info is not None and info.ocsp is not None
    assert [entry.ocsp_path for entry in info.ocsp] == [str(response.resolve()), None, None]

    # A hash whose response is missing names nothing.
    response.unlink()
    info = ask(store_of(pki), LeafCertificateType.V2G, include_ocsp=True).info
    assert info is not None and info.ocsp is not None
    assert [entry.ocsp_path for entry in info.ocsp] == [None, None, None]


# ---- strict: the document's form ------------------------------------------------------------------


@pytest.mark.parametrize("leaf_type", SERVED)
def test_strict_der_names_der_files_and_gives_the_root(
    pki: PkiLayout, leaf_type: LeafCertificateType
) -> None:
    info = ask(store_of(pki), leaf_type, encoding=EncodingFormat.DER, strict=True).info
    assert info is not None and info.certificate is not None and info.certificate_single is not None

    leaf = installed(pki, leaf_type)
    assert info.key == str(der_copy_path(leaf.key).resolve())
    assert info.certificate == str(der_copy_path(leaf.certificate_chain).resolve())
    assert info.certificate_single == str(der_copy_path(leaf.certificate_single).resolve())
    for certificate_file in (info.certificate, info.certificate_single):
        assert x509.load_der_x509_certificate(Path(certificate_file).read_bytes()) == leaf.chain[0]
    assert info.certificate_count == 1
    assert info.password == pki.key_password
    key = serialization.load_der_private_key(Path(info.key).read_bytes(), info.password.encode())
    assert key.public_key() == leaf.chain[0].public_key()
    assert info.certificate_root == root_of(pki, leaf_type).public_bytes(serialization.Encoding.PEM).decode()


def test_strict_pem_gives_the_root_and_the_pem_chain(pki: PkiLayout) -> None:
    info = ask(store_of(pki), LeafCertificateType.V2G, encoding=EncodingFormat.PEM, strict=True).info
    assert info is not None
    assert info.certificate == str(pki.secc.certificate_chain.resolve())
    assert info.certificate_count == 3
    assert info.certificate_root == pki.v2g_root.certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_everests_form_ignores_the_encoding(pki: PkiLayout) -> None:
    pem = ask(store_of(pki), LeafCertificateType.V2G, encoding=EncodingFormat.PEM)
    der = ask(store_of(pki), LeafCertificateType.V2G, encoding=EncodingFormat.DER)
    assert der == pem


def test_strict_der_without_a_der_key_is_private_key_not_found(pki: PkiLayout) -> None:
    der_copy_path(pki.secc.key).unlink()
    strict = ask(store_of(pki), LeafCertificateType.V2G, encoding=EncodingFormat.DER, strict=True)
    assert strict.status is GetCertificateInfoStatus.PrivateKeyNotFound
    assert ask(store_of(pki), LeafCertificateType.V2G).status is GetCertificateInfoStatus.Accepted


# ---- is_ca_certificate_installed and get_verify_location ------------------------------------------


@pytest.mark.parametrize("ca_type", list(CaCertificateType))
def test_every_ca_type_is_installed_and_located_by_its_bundle_file(
    pki: PkiLayout, ca_type: CaCertificateType
) -> None:
    store = store_of(pki)
    assert store.is_ca_certificate_installed(ca_type, now=NOW)
    assert store.is_ca_certificate_installed(ca_type)
    assert store.get_verify_location(ca_type) == str(pki.ca_bundle(ca_type).resolve())


def _expired_root() -> bytes:
    root = make_ca("Old Root", not_before=NOW - timedelta(days=20), not_after=NOW - timedelta(days=10))
    return root.certificate.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(None, id="missing"),
        pytest.param(b"", id="empty"),
        pytest.param(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", id="garbage"),
        pytest.param(b"just text\n", id="text"),
        pytest.param(_expired_root(), id="expired-root"),
    ],
)
def test_a_bundle_without_a_valid_root_is_not_installed(pki: PkiLayout, content: bytes | None) -> None:
    bundle = pki.ca_bundle(CaCertificateType.MO)
    if content is None:
        bundle.unlink()
    else:
        bundle.write_bytes(content)
    assert not store_of(pki).is_ca_certificate_installed(CaCertificateType.MO, now=NOW)


def test_a_bundle_holding_only_a_sub_ca_is_not_installed(pki: PkiLayout) -> None:
    write_pem(pki.ca_bundle(CaCertificateType.V2G), pki.secc.chain[2])
    assert not store_of(pki).is_ca_certificate_installed(CaCertificateType.V2G, now=NOW)


def test_a_garbage_bundle_is_named_in_a_warning(pki: PkiLayout, caplog: pytest.LogCaptureFixture) -> None:
    pki.ca_bundle(CaCertificateType.MF).write_text("garbage")
    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        assert not store_of(pki).is_ca_certificate_installed(CaCertificateType.MF)
    assert "MF_ROOT_CA.pem" in caplog.text


@pytest.mark.parametrize("strict", [False, True])
def test_no_verify_location_without_a_certificate(pki: PkiLayout, strict: bool) -> None:
    pki.ca_bundle(CaCertificateType.CSMS).write_text("")
    assert store_of(pki).get_verify_location(CaCertificateType.CSMS, strict=strict) is None


def _hash_links(directory: Path) -> dict[str, str]:
    return {entry.name: os.readlink(entry) for entry in directory.iterdir() if entry.is_symlink()}


@needs_openssl
def test_strict_verify_location_is_the_directory_linked_as_openssl_rehash_links_it(
    pki: PkiLayout, tmp_path: Path
) -> None:
    directory = pki.ca_bundle(CaCertificateType.V2G).parent
    same_subject = make_ca(pki.v2g_root.certificate.subject)  # another key: a hash collision
    write_pem(directory / "V2G_ROOT_CA_2.pem", same_subject.certificate)
    write_pem(directory / "COPY.crt", pki.v2g_root.certificate)  # linked once only
    write_pem(directory / "CHAIN.pem", *pki.secc.chain[1:])  # two certificates: not linked
    write_pem(directory / "mo.cer", pki.mo_root.certificate)
    (directory / "README.txt").write_text("not a certificate")
    (directory / "deadbeef.0").symlink_to("README.txt")  # a stale link, to be removed
    reference = tmp_path / "reference"
    shutil.copytree(directory, reference, symlinks=True)
    subprocess.run(["openssl", "rehash", str(reference)], check=True, capture_output=True)

    store = store_of(pki)
    assert store.get_verify_location(CaCertificateType.V2G, strict=True) == str(directory.resolve())
    assert _hash_links(directory) == _hash_links(reference)
    v2g_hash = openssl_subject_hash(pki.v2g_root.certificate.subject)
    assert {f"{v2g_hash}.0", f"{v2g_hash}.1"} <= _hash_links(directory).keys()

    # Asking again changes nothing.
    store.get_verify_location(CaCertificateType.V2G, strict=True)
    assert _hash_links(directory) == _hash_links(reference)


def test_rehash_links_resolve_to_the_certificates(pki: PkiLayout) -> None:
    directory = pki.ca_bundle(CaCertificateType.CSMS).parent
    [link] = rehash_directory(directory)
    assert link.name == f"{openssl_subject_hash(pki.csms_root.certificate.subject)}.0"
    assert x509.load_pem_x509_certificate(link.read_bytes()) == pki.csms_root.certificate


# ---- OpenSSL's subject hash -----------------------------------------------------------------------


def _name(*attributes: x509.NameAttribute) -> x509.Name:
    return x509.Name(list(attributes))


TRICKY_NAMES = {
    "mixed-case-and-spaces": _name(
        x509.NameAttribute(NameOID.COMMON_NAME, "  Mixed   CASE\tName  "),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evflow\n\nGmbH"),
        x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
    ),
    "non-ascii": _name(x509.NameAttribute(NameOID.COMMON_NAME, "Ladesäule ÄÖÜ Ωmega")),
    "bmp-string": _name(x509.NameAttribute(NameOID.COMMON_NAME, "BMP Ünïcode", _type=_ASN1Type.BMPString)),
    "ia5-dc-and-email": _name(
        x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "V2G"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "Ops@Example.ORG"),
    ),
    "numeric-string-is-kept": _name(
        x509.NameAttribute(NameOID.SERIAL_NUMBER, "0042", _type=_ASN1Type.NumericString),
        x509.NameAttribute(NameOID.COMMON_NAME, "Numeric"),
    ),
    "multi-valued-rdn": x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Zeta Unit"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "Alpha"),
                ]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
        ]
    ),
    # Canonical "a" sorts before "b", though "A " encodes after it: the SET must be sorted again.
    "multi-valued-rdn-resorted": x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "b"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "A "),
                ]
            )
        ]
    ),
    "long-value": _name(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Long " * 40)),
}


def _openssl_subject_hash(name: x509.Name, directory: Path) -> str:
    certificate_file = write_pem(directory / "subject.pem", make_ca(name).certificate)
    return openssl("x509", "-noout", "-subject_hash", "-in", str(certificate_file))


@needs_openssl
@pytest.mark.parametrize("name", TRICKY_NAMES.values(), ids=TRICKY_NAMES.keys())
def test_subject_hash_is_openssls(name: x509.Name, tmp_path: Path) -> None:
    assert openssl_subject_hash(name) == _openssl_subject_hash(name, tmp_path)


@needs_openssl
def test_the_test_pki_subject_hashes_are_openssls(pki: PkiLayout, tmp_path: Path) -> None:
    for certificate in (*pki.secc.chain, pki.v2g_root.certificate, *pki.csms.chain):
        name = certificate.subject
        assert openssl_subject_hash(name) == _openssl_subject_hash(name, tmp_path)


@needs_openssl
@settings(max_examples=25, deadline=None)
@given(value=st.text(alphabet=" \t\n\r\x0b\x0caAzZ09-äÄßΩ", min_size=1, max_size=12))
def test_subject_hash_canonicalises_values_as_openssl_does(
    value: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    name = _name(x509.NameAttribute(NameOID.COMMON_NAME, value))
    assert openssl_subject_hash(name) == _openssl_subject_hash(name, tmp_path_factory.mktemp("hash"))


# ---- the PKI itself -------------------------------------------------------------------------------


def test_init_pki_keeps_keys_private_and_the_password_beside_them(pki: PkiLayout) -> None:
    for key_file in (pki.secc.key, der_copy_path(pki.secc.key), pki.csms.key):
        assert key_file.stat().st_mode & 0o777 == 0o600
    assert (pki.root / "private_key_password").read_text() == pki.key_password
    assert "key_password" not in repr(pki)


def test_a_leaf_cannot_be_both_expired_and_not_yet_valid(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both"):
        init_pki(tmp_path, expired_leaf=True, not_yet_valid_leaf=True)


def test_tls_certificates_for_a_broker_and_its_client(pki: PkiLayout) -> None:
    ca = make_ca("Broker CA")
    server = make_tls_server_cert(ca, ["localhost", "127.0.0.1"]).certificate
    client = make_tls_client_cert(ca, "evflow-client").certificate

    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(address) for address in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "evflow-client"
    assert client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    for certificate in (server, client):
        certificate.verify_directly_issued_by(ca.certificate)
