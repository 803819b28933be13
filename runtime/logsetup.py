"""Readable logs for a terminal or a journal; nothing is formatted for levels that are off."""

from __future__ import annotations

import logging
import sys

from .redaction import RedactingFilter


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    # systemd's journal stamps each line itself; a terminal gets the time.
    stamp = "" if not sys.stderr.isatty() else "%(asctime)s "
    handler.setFormatter(logging.Formatter(f"{stamp}%(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
