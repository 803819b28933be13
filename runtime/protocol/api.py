"""What makes one EVerest API: its name, version and table of request operations.

The protocol core and the client know only this shape; each API (``evflow.runtime.apis``) fills in a
table. The envelope, the heartbeat and the communication check are the same for every EVerest API.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import attrs

from .topics import validate_topic_level

Request = TypeVar("Request")
Reply = TypeVar("Reply")

HEARTBEAT = "heartbeat"
COMMUNICATION_CHECK = "communication_check"


@attrs.frozen
class Operation(Generic[Request, Reply]):
    """A request EVerest answers on the request's ``replyTo`` topic."""

    # The address below "m2e/" (one topic level, or, with `address`, what EVerest calls it: "session_info/get").
    name: str
    # The type of the request's `payload`, structured by the codec from plain JSON data.
    request_type: Any
    # bytes of the reply → typed value; raises CodecError when the reply does not decode.
    decode_reply: Callable[[bytes], Reply]
    doc: str = ""
    # The secrets a reply carries (a key's passphrase): the client keeps them out of every log line.
    secrets_of: Callable[[Reply], Iterable[str]] | None = None
    # The request topic below the API's topic root; None: "m2e/{name}", as in every EVerest API.
    address: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.address is None:
            validate_topic_level(self.name, "operation name")
        elif not self.name:
            raise ValueError("an operation needs a name")


@attrs.frozen
class ApiSpec:
    """One EVerest API: ``everest_api/{topic_version}/{name}/...``, document version ``version``."""

    name: str = attrs.field(validator=lambda _i, _a, v: validate_topic_level(v, "API name"))
    version: str
    topic_version: int
    operations: Mapping[str, Operation[Any, Any]]

    def operation(self, name: str) -> Operation[Any, Any]:
        try:
            return self.operations[name]
        except KeyError:
            known = ", ".join(sorted(self.operations))
            raise KeyError(f"{self.name} {self.version} has no operation {name!r} (it has: {known})") from None
