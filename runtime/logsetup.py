"""Logs for a person at a terminal or for a machine: coloured lines on a TTY, JSON lines otherwise
(journald, a file, a log shipper). Nothing is formatted for levels that are off, nothing waits for
stderr (see :mod:`.output`), and every known secret is masked before a line exists.

A JSON line holds ``time`` (left out under systemd's journal, which stamps each line itself),
``level``, ``logger``, ``message``, and when the line is about one: ``node_id``, ``node_type``,
``msg_id``; an exception's traceback as ``exception``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from .output import LineWriter, stderr_writer
from .redaction import RedactingFilter

__all__ = ["FORMATS", "BackgroundStreamHandler", "JsonFormatter", "configure_logging", "under_journald"]

FORMATS = ("auto", "text", "json")

# The record attributes a JSON line carries beside the message, when a log call gave them (extra=).
_CONTEXT = ("node_id", "node_type", "msg_id")

_COLOURS = {logging.DEBUG: "\x1b[2m", logging.WARNING: "\x1b[33m", logging.ERROR: "\x1b[31m",
            logging.CRITICAL: "\x1b[1;31m"}
_RESET = "\x1b[0m"


class BackgroundStreamHandler(logging.Handler):
    """Formats a record in the caller's thread (secrets masked by then) and queues the line for a
    writer thread: a stderr that does not keep up never blocks the event loop."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging's own convention: report the broken record, go on
            self.handleError(record)
            return
        self.writer.write(line + "\n")


class JsonFormatter(logging.Formatter):
    def __init__(self, *, stamp: bool) -> None:
        super().__init__()
        self.stamp = stamp

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {}
        if self.stamp:
            line["time"] = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                            + f".{int(record.msecs):03d}Z")
        line["level"] = record.levelname.lower()
        line["logger"] = record.name
        line["message"] = record.getMessage()
        for key in _CONTEXT:
            value = record.__dict__.get(key)
            if value is not None:
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class _ColourFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        colour = _COLOURS.get(record.levelno)
        return f"{colour}{line}{_RESET}" if colour else line


def under_journald(stream: object = None) -> bool:
    """Whether ``stream`` (stderr) is connected to systemd's journal: ``JOURNAL_STREAM`` names its
    device and inode (systemd.exec(5))."""
    stream = sys.stderr if stream is None else stream
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        status = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{status.st_dev}:{status.st_ino}"


def configure_logging(level: str = "info", log_format: str = "auto") -> None:
    """Log to stderr at ``level``: ``text``, ``json``, or ``auto`` (text on a terminal, else JSON)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {log_format!r}")
    handler = BackgroundStreamHandler(stderr_writer())
    tty = sys.stderr.isatty()
    journal = under_journald()
    if log_format == "json" or (log_format == "auto" and not tty):
        handler.setFormatter(JsonFormatter(stamp=not journal))
    else:
        # The journal stamps each line itself; a terminal, a pipe or a file gets the time.
        stamp = "" if journal else "%(asctime)s "
        formatter_class = _ColourFormatter if tty else logging.Formatter
        handler.setFormatter(formatter_class(f"{stamp}%(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
