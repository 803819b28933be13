"""Secrets kept out of every log line: the values of secret config fields (broker and key
passwords) and the key passphrases EVerest's replies carry are registered here, and a logging filter
replaces them wherever they would appear, whatever the message was built from."""

from __future__ import annotations

import logging

__all__ = ["MASK", "RedactingFilter", "add", "redact"]

MASK = "***"
# Shorter values are not treated as secrets: masking "a" everywhere would ruin every line.
MIN_LENGTH = 4
_secrets: set[str] = set()
_ordered: list[str] = []


def add(secret: str) -> None:
    if len(secret) >= MIN_LENGTH and secret not in _secrets:
        _secrets.add(secret)
        _ordered[:] = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """On a handler: formats the record's message once, masks secrets in it (and in its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _ordered:
            message = record.getMessage()
            masked = redact(message)
            if masked is not message and masked != message:
                record.msg, record.args = masked, ()
            if record.exc_info and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            elif record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True
