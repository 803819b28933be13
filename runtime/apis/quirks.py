"""Where EVerest's implementation answers otherwise than its documents say (SPEC.md): the reply
decoders that a request made from a document uses instead of its schema, by (API, operation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocol.envelope import decode_path_reply

# get_verify_location: the raw path without quotes, or nothing when no certificate is installed,
# where the document says a JSON string.
REPLY_DECODERS: dict[tuple[str, str], Callable[[bytes], Any]] = {
    ("evse_security_consumer", "get_verify_location"): decode_path_reply,
}
