"""``certificate-expiry``: how many days a leaf certificate from EVerest has left.

An example of an evflow plugin: one node type, written with the public API of
``evflow.runtime.nodeapi`` only, registered through the ``evflow.nodes`` entry-point group.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509

from evflow.runtime.codec import unstructure
from evflow.runtime.nodeapi import ConfigWarning, Message, Node, number_range, one_of


@attrs.frozen(kw_only=True)
class CertificateExpiryConfig:
    # below this many days left, the message also goes to port 1 (the warning port)
    warn_days: int = attrs.field(default=30, validator=number_range(0, 36500))
    # which file of the reply to open: the single leaf, or the chain (its first certificate)
    file: str = attrs.field(default="certificate_single", validator=one_of("certificate_single", "certificate"))


class CertificateExpiry(Node[CertificateExpiryConfig]):
    """Takes a get-leaf-certificate-info reply, opens the certificate file it names (PEM or DER) and
    emits ``{"days": …, "not_after": …, "subject": …, "path": …}``: on port 0 always, on port 1 too
    when fewer than ``warn_days`` days are left. A reply without an accepted certificate, or a file
    that cannot be read, is a failure of this message (routed to catch nodes or the log)."""

    type = "certificate-expiry"
    Config = CertificateExpiryConfig

    @classmethod
    def outputs(cls, config: CertificateExpiryConfig) -> int:
        return 2

    @classmethod
    def check(cls, config: CertificateExpiryConfig) -> list[ConfigWarning]:
        if config.warn_days == 0:
            return [ConfigWarning("$.warn_days", "warn_days 0: port 1 only fires for expired certificates")]
        return []

    async def receive(self, msg: Message) -> None:
        reply = unstructure(msg.payload)  # a typed GetCertificateInfoResult, or the same as JSON
        if not isinstance(reply, dict) or reply.get("status") != "Accepted":
            raise ValueError(f"not an accepted certificate reply (status {reply.get('status') if isinstance(reply, dict) else reply!r})")
        path = (reply.get("info") or {}).get(self.config.file)
        if not path:
            raise ValueError(f"the reply names no {self.config.file} file")
        certificate = load_certificate(Path(path))
        not_after = certificate.not_valid_after_utc
        days = (not_after - datetime.datetime.now(datetime.UTC)).days
        expiry = msg.with_payload({
            "days": days,
            "not_after": not_after.isoformat(),
            "subject": certificate.subject.rfc4514_string(),
            "path": path,
        })
        await self.send(expiry, 0)
        if days < self.config.warn_days:
            await self.send(expiry, 1)


def load_certificate(path: Path) -> Any:
    """The first certificate in a PEM or DER file; which one is told by the content, not the name
    (EVerest names PEM files whatever encoding was asked)."""
    data = path.read_bytes()  # OSError: the failure of this message
    if b"-----BEGIN CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)
