"""EVerest's certificate store, read the way its EvseSecurity module reads it.

:class:`CertificateStore` answers the three ``evse_security_consumer`` requests from a directory laid out
as EVerest keeps it (see :mod:`.pki`). It reads the files afresh on every call, because tests and
operators change them while a simulator runs, and it takes a bad file (garbage PEM, a key that cannot
be decrypted) as absent, with a warning that names it.

By default it answers as EVerest's implementation does (everest-core ``lib/everest/evse_security``):
the request's ``encoding`` is ignored (paths name PEM files), ``certificate_root`` is never filled, and
the verify location is the CA bundle *file*. With ``strict=True`` it answers as the API document says:
DER files when DER is asked for, the root's PEM in ``certificate_root``, and the CA *directory*, with
``openssl rehash`` links, as the verify location.

Hex follows EvseSecurity's OpenSSL supplier, which prints hashes with iostream's ``std::hex`` and
lower-cases the serial: lower case everywhere.

One module though longer than most: it mirrors one piece of everest-core (the store's layout, its
three lookups and their quirks) so that the two can be read side by side.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
import string
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import attrs
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ..models.evse_security import (
    CaCertificateType,
    CertificateHashData,
    CertificateInfo,
    CertificateOCSP,
    EncodingFormat,
    GetCertificateInfoResult,
    GetCertificateInfoStatus,
    GetLeafCertificateInfoRequest,
    HashAlgorithm,
    LeafCertificateType,
)
from .pki import CA_BUNDLE_PATHS, LEAF_DIRECTORIES, der_copy_path

__all__ = ["CertificateStore", "certificate_hash_data", "openssl_subject_hash", "rehash_directory"]

logger = logging.getLogger(__name__)

# The CA bundle that holds the roots of each kind of leaf served.
_ROOT_TYPES: Final = {
    LeafCertificateType.V2G: CaCertificateType.V2G,
    LeafCertificateType.CSMS: CaCertificateType.CSMS,
}
# EvseSecurity's OCSP cache: `<name>.hash` (algorithm, name hash, key hash, serial, one a line) beside
# `<name>.der` (the response). It looks only here, in the SECC folder, for leaves of either kind.
_OCSP_CACHE: Final = LEAF_DIRECTORIES[LeafCertificateType.V2G] / "ocsp"


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(path).resolve()


@attrs.frozen
class CertificateStore:
    """The certificate store under `root` (EVerest's default: ``<prefix>/etc/everest/certs``).

    `key_password` is EvseSecurity's ``private_key_password``: the passphrase of encrypted leaf keys.
    """

    root: Path = attrs.field(converter=_absolute)
    key_password: str | None = attrs.field(default=None, kw_only=True, repr=False)

    def is_ca_certificate_installed(self, ca_type: CaCertificateType, *, now: datetime | None = None) -> bool:
        """Whether the bundle of `ca_type` holds a self-signed certificate valid at `now` (default: now).

        EvseSecurity asks the same of its bundle. A missing, empty or unreadable bundle holds none.
        """
        moment = datetime.now(UTC) if now is None else now
        return any(
            _is_self_signed(certificate) and _is_valid_at(certificate, moment)
            for certificate in _read_certificates(self._ca_bundle(ca_type))
        )

    def get_verify_location(self, ca_type: CaCertificateType, *, strict: bool = False) -> str | None:
        """Where to find the CA certificates of `ca_type`; None when its bundle holds no certificate.

        EVerest's form: the bundle file. Strict (the document's form): its directory, after linking
        every certificate file in it by subject hash, as ``c_rehash`` does.
        """
        bundle = self._ca_bundle(ca_type)
        if not _read_certificates(bundle):
            return None
        if not strict:
            return str(bundle)
        try:
            rehash_directory(bundle.parent)
        except OSError as exc:
            logger.warning("cannot link the certificates in %s by hash: %s", bundle.parent, exc)
            return None
        return str(bundle.parent)

    def get_leaf_certificate_info(
        self, request: GetLeafCertificateInfoRequest, *, now: datetime, strict: bool = False
    ) -> GetCertificateInfoResult:
        """The newest leaf of the requested type valid at `now` that has its key, as EVerest picks it.

        Only V2G (``client/cso``) and CSMS (``client/csms``) leaves are served, others are Rejected.
        Every ``.pem`` file in the folder is a chain whose first certificate is a candidate leaf:
        none at all is NotFound, none valid at `now` NotFoundValid, and when no valid one (newest
        expiry first) has a ``.key`` file in the folder holding its key, PrivateKeyNotFound.
        """
        leaf_type = request.certificate_type
        if leaf_type not in LEAF_DIRECTORIES:
            return GetCertificateInfoResult(status=GetCertificateInfoStatus.Rejected)
        directory = self.root / LEAF_DIRECTORIES[leaf_type]
        files = _read_certificate_files(directory)
        if not files:
            return GetCertificateInfoResult(status=GetCertificateInfoStatus.NotFound)
        candidates = _valid_leaves_newest_first(files, now)
        if not candidates:
            return GetCertificateInfoResult(status=GetCertificateInfoStatus.NotFoundValid)
        encoding = request.encoding if strict else EncodingFormat.PEM
        for leaf in candidates:
            key_file = self._find_private_key(leaf, files, directory, encoding)
            if key_file is not None:
                break
        else:
            return GetCertificateInfoResult(status=GetCertificateInfoStatus.PrivateKeyNotFound)
        info = self._certificate_info(request, leaf, key_file, files, encoding, strict=strict)
        return GetCertificateInfoResult(status=GetCertificateInfoStatus.Accepted, info=info)

    def _certificate_info(
        self,
        request: GetLeafCertificateInfoRequest,
        leaf: x509.Certificate,
        key_file: _PrivateKeyFile,
        files: Sequence[_CertificateFile],
        encoding: EncodingFormat,
        *,
        strict: bool,
    ) -> CertificateInfo:
        """What to tell of `leaf` and its key: the files holding them, its root, its OCSP data."""
        chain_file = next((f for f in files if len(f.certificates) > 1 and leaf in f.certificates), None)
        single_file = next((f for f in files if f.certificates == (leaf,)), None)
        chain = (leaf,) if chain_file is None else chain_file.certificates
        issuers = self._issuers(request.certificate_type, files) if request.include_ocsp or strict else ()
        root = _root_of(leaf, issuers) if strict else None
        ocsp = self._ocsp_entries(chain, issuers, request.certificate_type) if request.include_ocsp else None
        return CertificateInfo(
            key=str(key_file.path),
            # A DER file holds a single certificate, so a DER "chain" is the leaf alone.
            certificate_count=len(chain) if encoding is EncodingFormat.PEM else 1,
            certificate=_path_in_encoding(chain_file, encoding),
            certificate_single=_path_in_encoding(single_file, encoding),
            certificate_root=None if root is None else root.public_bytes(serialization.Encoding.PEM).decode(),
            password=self.key_password if key_file.encrypted else None,
            ocsp=ocsp,
        )

    def _ca_bundle(self, ca_type: CaCertificateType) -> Path:
        return self.root / CA_BUNDLE_PATHS[ca_type]

    def _issuers(
        self, leaf_type: LeafCertificateType, files: Sequence[_CertificateFile]
    ) -> tuple[x509.Certificate, ...]:
        """Where issuers are looked for: the leaf folder's certificates and the matching CA bundle."""
        in_folder = (certificate for file in files for certificate in file.certificates)
        return (*in_folder, *_read_certificates(self._ca_bundle(_ROOT_TYPES[leaf_type])))

    def _find_private_key(
        self,
        leaf: x509.Certificate,
        files: Sequence[_CertificateFile],
        directory: Path,
        encoding: EncodingFormat,
    ) -> _PrivateKeyFile | None:
        """The ``.key`` file below `directory` that holds `leaf`'s key, as a file in `encoding`.

        Tried first, as EVerest does: the key named like a file that `leaf` heads (``X.pem``, ``X.key``).
        """
        named_like_leaf = [file.path.with_suffix(".key") for file in files if file.certificates[0] == leaf]
        leaf_public_key = leaf.public_key()
        for path in dict.fromkeys([*named_like_leaf, *sorted(directory.rglob("*.key"))]):
            key_file = _read_private_key(path, self.key_password)
            if key_file is not None and key_file.public_key == leaf_public_key:
                encoded_path = _in_encoding(key_file.path, encoding)
                if encoded_path is not None:
                    return attrs.evolve(key_file, path=encoded_path)
                logger.warning("ignoring private key %s: it has no DER copy", path)
        return None

    def _ocsp_entries(
        self,
        chain: Sequence[x509.Certificate],
        issuers: Sequence[x509.Certificate],
        leaf_type: LeafCertificateType,
    ) -> tuple[CertificateOCSP, ...]:
        """OCSP data for each certificate of `chain` whose issuer is known.

        EVerest sends an empty hash for a certificate without a known issuer; an empty hash names
        nothing, so it is left out here. EVerest's cache lookup only ever finds V2G certificates.
        """
        cache = self.root / _OCSP_CACHE if leaf_type is LeafCertificateType.V2G else None
        entries = []
        for certificate in chain:
            issuer = _find_issuer(certificate, issuers)
            if issuer is None:
                continue
            hash_data = certificate_hash_data(certificate, issuer)
            response = None if cache is None else _cached_ocsp_response(cache, hash_data)
            ocsp_path = None if response is None else str(response)
            entries.append(CertificateOCSP(hash=hash_data, ocsp_path=ocsp_path))
        return tuple(entries)


@attrs.frozen
class _CertificateFile:
    path: Path
    certificates: tuple[x509.Certificate, ...]


@attrs.frozen
class _PrivateKeyFile:
    path: Path
    public_key: PublicKeyTypes = attrs.field(eq=False)
    encrypted: bool


def certificate_hash_data(certificate: x509.Certificate, issuer: x509.Certificate) -> CertificateHashData:
    """The OCSP CertID of `certificate` (RFC 6960) with SHA-256, in lower-case hex as EVerest writes it."""
    return CertificateHashData(
        hash_algorithm=HashAlgorithm.SHA256,
        issuer_name_hash=hashlib.sha256(certificate.issuer.public_bytes()).hexdigest(),
        issuer_key_hash=hashlib.sha256(_public_key_bits(issuer)).hexdigest(),
        serial_number=format(certificate.serial_number, "x"),
    )


def openssl_subject_hash(name: x509.Name) -> str:
    """OpenSSL's hash of `name` (``openssl x509 -subject_hash``) in 8 hex digits: c_rehash's link names.

    The first 4 bytes, little endian, of SHA-1 over the name's canonical encoding (x509_name_canon in
    OpenSSL's crypto/x509/x_name.c): every RDN's SET re-encoded with canonical string values, all
    concatenated without the Name's own SEQUENCE header.
    """
    [(_, rdns, _)] = _der_elements(name.public_bytes())
    canonical = b"".join(_canonical_rdn(rdn) for _, rdn, _ in _der_elements(rdns))
    # SHA-1 here names a file; it protects nothing.
    digest = hashlib.sha1(canonical, usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


# The certificate files `openssl rehash` links (it links `.crl` files too, which EVerest never keeps),
# and the names of its links.
_REHASHED_SUFFIXES: Final = frozenset({".pem", ".crt", ".cer"})
_HASH_LINK: Final = re.compile(r"[0-9a-f]{8}\.r?[0-9]+")


def rehash_directory(directory: Path) -> tuple[Path, ...]:
    """Link ``<subject hash>.<n>`` to each certificate file in `directory`, as ``openssl rehash`` does.

    Earlier hash links are removed first. Files are taken in name order; one holding more or less than
    one PEM certificate is skipped (a bundle with a warning, as openssl does); a certificate already
    linked is not linked again; certificates sharing a subject hash get ``.0``, ``.1``, ... CRLs are
    not linked. Returns the links made; raises OSError when one cannot be made.
    """
    for entry in directory.iterdir():
        if entry.is_symlink() and _HASH_LINK.fullmatch(entry.name):
            entry.unlink()
    links = []
    linked_fingerprints = set()
    next_index: collections.Counter[str] = collections.Counter()
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in _REHASHED_SUFFIXES or not path.is_file():
            continue
        certificates = _read_certificates(path)
        if len(certificates) > 1:
            logger.warning("not linking %s: it holds %d certificates, not one", path, len(certificates))
        if len(certificates) != 1:
            continue
        [certificate] = certificates
        fingerprint = certificate.fingerprint(hashes.SHA1())
        if fingerprint in linked_fingerprints:
            continue
        linked_fingerprints.add(fingerprint)
        try:
            subject_hash = openssl_subject_hash(certificate.subject)
        except ValueError as exc:
            logger.warning("not linking %s: cannot hash its subject (%s)", path, exc)
            continue
        link = directory / f"{subject_hash}.{next_index[subject_hash]}"
        next_index[subject_hash] += 1
        link.symlink_to(path.name)
        links.append(link)
    return tuple(links)


# ---- reading the store ---------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes | None:
    """The content of `path`; None when it is missing (quietly: files come and go) or unreadable."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.warning("cannot read %s: %s", path, exc)
        return None


def _read_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    """The certificates of a PEM file; none when it is missing, empty or not PEM certificates at all."""
    data = _read_bytes(path)
    # EvseSecurity creates empty bundles itself: empty is "no certificate", not an error.
    if data is None or not data.strip():
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        logger.warning("ignoring %s: no readable PEM certificate in it (%s)", path, exc)
        return ()


def _read_certificate_files(directory: Path) -> tuple[_CertificateFile, ...]:
    """The ``.pem`` files right in `directory` that hold certificates, by name.

    EVerest reads ``.pem`` and ``.der`` files alike as PEM, so a DER file never yields a certificate;
    nor does it descend into sub-folders such as its ``ocsp`` cache.
    """
    files = (_CertificateFile(path, _read_certificates(path)) for path in sorted(directory.glob("*.pem")))
    return tuple(file for file in files if file.certificates)


def _read_private_key(path: Path, password: str | None) -> _PrivateKeyFile | None:
    """The key in a PEM file, decrypted with `password` when it is encrypted; None when that fails."""
    data = _read_bytes(path)
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
        return _PrivateKeyFile(path, key.public_key(), encrypted=False)
    except TypeError:
        pass  # encrypted: try again with the password
    except (ValueError, UnsupportedAlgorithm) as exc:
        logger.warning("ignoring private key %s: %s", path, exc)
        return None
    if password is None:
        logger.warning("ignoring private key %s: it is encrypted and no key password is set", path)
        return None
    try:
        key = serialization.load_pem_private_key(data, password=password.encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        logger.warning("ignoring private key %s: %s", path, exc)
        return None
    return _PrivateKeyFile(path, key.public_key(), encrypted=True)


def _valid_leaves_newest_first(files: Sequence[_CertificateFile], now: datetime) -> list[x509.Certificate]:
    # A leaf often heads two files (single and chain): count it once, in file order, then sort stably.
    leaves = dict.fromkeys(file.certificates[0] for file in files)
    valid = [leaf for leaf in leaves if _is_valid_at(leaf, now)]
    return sorted(valid, key=lambda leaf: leaf.not_valid_after_utc, reverse=True)


def _in_encoding(path: Path, encoding: EncodingFormat) -> Path | None:
    """`path` itself for PEM; for DER its DER copy, None when there is none."""
    if encoding is EncodingFormat.PEM:
        return path
    der_path = der_copy_path(path)
    return der_path if der_path.is_file() else None


def _path_in_encoding(file: _CertificateFile | None, encoding: EncodingFormat) -> str | None:
    path = None if file is None else _in_encoding(file.path, encoding)
    return None if path is None else str(path)


def _cached_ocsp_response(cache: Path, hash_data: CertificateHashData) -> Path | None:
    """The cached OCSP response for `hash_data`: the ``.der`` beside a ``.hash`` file naming it."""
    wanted = [
        hash_data.hash_algorithm,
        hash_data.issuer_name_hash,
        hash_data.issuer_key_hash,
        hash_data.serial_number,
    ]
    for hash_file in sorted(cache.glob("*.hash")):
        content = _read_bytes(hash_file)
        if content is not None and content.decode(errors="replace").split() == wanted:
            response = hash_file.with_suffix(".der")
            # EVerest gives up on a hash without its response rather than look further.
            return response if response.is_file() else None
    return None


# ---- certificate relations -------------------------------------------------------------------------


def _is_valid_at(certificate: x509.Certificate, moment: datetime) -> bool:
    return certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc


def _is_issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s name is `certificate`'s issuer and its key signed `certificate`."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _is_self_signed(certificate: x509.Certificate) -> bool:
    return _is_issued_by(certificate, certificate)


def _find_issuer(certificate: x509.Certificate, pool: Sequence[x509.Certificate]) -> x509.Certificate | None:
    return next((candidate for candidate in pool if _is_issued_by(certificate, candidate)), None)


def _root_of(certificate: x509.Certificate, pool: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The self-signed certificate atop `certificate`'s chain of issuers in `pool`, if it gets to one."""
    current = certificate
    # Each step climbs to another certificate of the pool: more steps than that means a loop.
    for _ in range(len(pool) + 1):
        if _is_self_signed(current):
            return current
        issuer = _find_issuer(current, pool)
        if issuer is None:
            return None
        current = issuer
    return None


def _public_key_bits(certificate: x509.Certificate) -> bytes:
    """The content of the subjectPublicKey BIT STRING: what an OCSP CertID's issuerKeyHash hashes."""
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    [(_, fields, _)] = _der_elements(spki)
    _algorithm, (_, bit_string, _) = _der_elements(fields)
    # The first content octet counts the unused bits of the last one; it is not part of the key.
    return bit_string[1:]


# ---- OpenSSL's canonical name encoding ------------------------------------------------------------

_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_UTF8_STRING: Final = 0x0C
# The string types OpenSSL canonicalises (ASN1_MASK_CANON) and how their content octets decode:
# ASN1_STRING_to_UTF8 reads the one-octet types (Printable, T61, IA5, Visible) as Latin-1.
_CANONICAL_STRING_CODECS: Final = {
    0x0C: "utf-8",
    0x13: "latin-1",
    0x14: "latin-1",
    0x16: "latin-1",
    0x1A: "latin-1",
    0x1C: "utf-32-be",
    0x1E: "utf-16-be",
}
# OpenSSL's ossl_isspace and ossl_tolower know ASCII only; other characters stay as they are.
_ASCII_WHITESPACE: Final = " \t\n\v\f\r"
_ASCII_WHITESPACE_RUN: Final = re.compile(f"[{re.escape(_ASCII_WHITESPACE)}]+")
_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _canonical_rdn(attributes: bytes) -> bytes:
    # A SET OF is DER-sorted by encoding; OpenSSL sorts the canonical entries the same way.
    entries = sorted(_canonical_attribute(attribute) for _, attribute, _ in _der_elements(attributes))
    return _der_tlv(_SET, b"".join(entries))


def _canonical_attribute(type_and_value: bytes) -> bytes:
    (_, _, oid), (tag, content, value) = _der_elements(type_and_value)
    codec = _CANONICAL_STRING_CODECS.get(tag)
    if codec is not None:
        value = _der_tlv(_UTF8_STRING, _canonical_text(content.decode(codec)).encode())
    return _der_tlv(_SEQUENCE, oid + value)


def _canonical_text(text: str) -> str:
    """ASCII whitespace trimmed and each run of it made one space; ASCII letters lower-cased."""
    collapsed = " ".join(_ASCII_WHITESPACE_RUN.split(text.strip(_ASCII_WHITESPACE)))
    return collapsed.translate(_ASCII_LOWER)


def _der_elements(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """Each element of DER `data` in turn, as (tag, content, whole encoding).

    Just enough DER for names and keys: one-octet tags and definite lengths. ValueError on anything else.
    """
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise ValueError("DER: truncated header")
        tag, length = data[offset], data[offset + 1]
        if tag & 0x1F == 0x1F:
            raise ValueError("DER: multi-octet tag")
        header = 2
        if length & 0x80:
            octets = length & 0x7F
            if octets == 0:
                raise ValueError("DER: indefinite length")
            length = int.from_bytes(data[offset + 2 : offset + 2 + octets], "big")
            header += octets
        end = offset + header + length
        if end > len(data):
            raise ValueError("DER: truncated content")
        yield tag, data[offset + header : end], data[offset:end]
        offset = end


def _der_tlv(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content
