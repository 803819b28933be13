"""EVerest's ``entrypoint`` API: which API modules run, under which module ids. Pure: no I/O, no clock.

The topics, each behind EVerest's ``mqtt_external_prefix``, as ``ApiHelper`` (everest_api_module_helpers)
serves them:

* ``everest_api/discover``: every API module answers, each with its own message listing its APIs;
* ``everest_api/query-modules/<api_type>``: only the modules implementing ``api_type`` answer, each
  listing that API only;
* ``everest_api/ready_beacon``: ``{}``, once, when EVerest's API modules are up (the module whose id
  sorts first sends it; not retained, so only a client already listening sees it).

A request is ``{"headers": {"replyTo": topic}}`` with no payload; each answer goes to prefix + replyTo.
Nothing in a request or an answer says how many modules there are, so a client cannot tell when the last
one answered: it collects for a window (:class:`DiscoveredApis` merges what arrives).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import attrs

from ..codec import CodecError, decode_json, dump_json, load_json, unstructure
from ..models.entrypoint import ApiDiscoverResponse, ApiParameter
from .requests import reply_prefix_for
from .topics import TopicError, validate_external_prefix, validate_publish_topic, validate_topic_level

__all__ = [
    "READY_BEACON",
    "DiscoveredApis",
    "decode_discovery_reply",
    "decode_discovery_request",
    "discover_replies",
    "discover_topic",
    "discovery_reply_topic",
    "encode_discovery_reply",
    "encode_discovery_request",
    "query_modules_replies",
    "query_modules_topic",
    "ready_beacon_topic",
    "reply_to_for",
    "request_topic",
]

ENTRYPOINT_BASE = "everest_api"
# What EVerest publishes as its ready beacon, byte for byte (ApiHelper::publish_ready_beacon).
READY_BEACON = b"{}"
# Under the external prefix, like every topic EVerest answers on: `{P}evflow/discover/{token}`.
_REPLY_BASE = "evflow/discover"


# ---- topics ---------------------------------------------------------------------------------------


def discover_topic(external_prefix: str = "") -> str:
    return f"{validate_external_prefix(external_prefix)}{ENTRYPOINT_BASE}/discover"


def query_modules_topic(api_type: str, external_prefix: str = "") -> str:
    validate_topic_level(api_type, "API type")
    return f"{validate_external_prefix(external_prefix)}{ENTRYPOINT_BASE}/query-modules/{api_type}"


def ready_beacon_topic(external_prefix: str = "") -> str:
    return f"{validate_external_prefix(external_prefix)}{ENTRYPOINT_BASE}/ready_beacon"


def request_topic(api_type: str | None, external_prefix: str = "") -> str:
    """``discover`` without an API type, ``query-modules/<api_type>`` with one."""
    return discover_topic(external_prefix) if api_type is None else query_modules_topic(api_type, external_prefix)


def discovery_reply_topic(external_prefix: str, token: str) -> str:
    """The topic one discovery run listens on; ``token`` (``[A-Za-z0-9_-]``) keeps runs apart."""
    return reply_prefix_for(validate_external_prefix(external_prefix), token, _REPLY_BASE)


def reply_to_for(reply_topic: str, external_prefix: str) -> str:
    """What to send as ``replyTo`` to hear the answers on ``reply_topic``: EVerest prepends its prefix."""
    if not reply_topic.startswith(external_prefix) or reply_topic == external_prefix:
        raise TopicError(f"reply topic {reply_topic!r} is not under external_prefix {external_prefix!r}")
    return reply_topic[len(external_prefix) :]


# ---- requests -------------------------------------------------------------------------------------


def encode_discovery_request(reply_to: str) -> bytes:
    """A discover or query-modules request. EVerest drops an answer to a topic it would not publish to
    (empty, wildcards), so such a ``reply_to`` is refused here rather than waited on in vain."""
    validate_publish_topic(reply_to)
    return dump_json({"headers": {"replyTo": reply_to}})


def decode_discovery_request(data: bytes) -> str:
    """The EVerest side: the request's ``replyTo`` (prefix not included), or :class:`CodecError` for a
    request EVerest would not answer.

    Like EVerest's ``RequestReply`` decoder, anything but the header is ignored, a payload included. A
    request without ``replyTo`` decodes there to an empty topic, which its MQTT proxy refuses to publish
    to: no answer either way.
    """
    envelope = load_json(data)
    if type(envelope) is not dict:
        raise CodecError(["expected an object @ $"])
    headers = envelope.get("headers")
    if type(headers) is not dict or "replyTo" not in headers:
        raise CodecError(["required key missing @ $.headers.replyTo"])
    reply_to = headers["replyTo"]
    if type(reply_to) is not str:
        raise CodecError(["expected a string @ $.headers.replyTo"])
    # EVerest's ValidatingMqttProxy checks the topic before prepending the prefix, and only this much
    # (its length in bytes: a std::string's).
    try:
        size = len(reply_to.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate escape: nlohmann's parser refuses the request
        raise CodecError(["not valid UTF-8 @ $.headers.replyTo"]) from None
    if not reply_to or size > 65535 or "\0" in reply_to or "+" in reply_to or "#" in reply_to:
        raise CodecError([f"not a topic EVerest publishes to (empty, too long, NUL or wildcards): {reply_to!r} "
                          "@ $.headers.replyTo"])
    return reply_to


# ---- replies --------------------------------------------------------------------------------------


def decode_discovery_reply(data: bytes) -> ApiDiscoverResponse:
    """One module's answer, or :class:`CodecError` listing each problem with its JSON path."""
    return decode_json(data, ApiDiscoverResponse)


def encode_discovery_reply(response: ApiDiscoverResponse) -> bytes:
    """EVerest's bytes for an answer: nlohmann's ``dump(4)``, whose objects keep their keys sorted."""
    return json.dumps(unstructure(response), indent=4, sort_keys=True, ensure_ascii=False).encode()


def _by_module(apis: Iterable[ApiParameter]) -> dict[str, list[ApiParameter]]:
    modules: dict[str, list[ApiParameter]] = {}
    for api in apis:
        modules.setdefault(api.module_id, []).append(api)
    return modules


def discover_replies(apis: Iterable[ApiParameter]) -> list[ApiDiscoverResponse]:
    """EVerest's answers to ``discover`` for these APIs: one per module (in the order the modules first
    appear), each listing its APIs sorted by type, as the module's ``std::map`` of APIs keeps them."""
    return [ApiDiscoverResponse(apis=tuple(sorted(own, key=lambda api: api.type)))
            for own in _by_module(apis).values()]


def query_modules_replies(apis: Iterable[ApiParameter], api_type: str) -> list[ApiDiscoverResponse]:
    """EVerest's answers to ``query-modules/<api_type>``: one per module implementing it."""
    return [ApiDiscoverResponse(apis=tuple(own))
            for own in _by_module(api for api in apis if api.type == api_type).values()]


@attrs.define
class DiscoveredApis:
    """The answers of one discovery run, merged in arrival order.

    An API already known by ``(type, module_id)`` is a repeat (the same module answering a second
    request of the run) and is left out, counted. With ``api_type`` (a query-modules run), an API of
    another type is left out too: EVerest never sends one. A reply that does not decode is counted, and
    the first one's problems kept for the report; it never raises.
    """

    api_type: str | None = None
    apis: list[ApiParameter] = attrs.field(factory=list)
    replies: int = 0  # that decoded
    repeats: int = 0
    invalid: int = 0
    first_problem: str | None = None
    _known: set[tuple[str, str]] = attrs.field(factory=set, repr=False)

    def receive(self, data: bytes) -> tuple[ApiParameter, ...]:
        """Take one reply's bytes; returns the APIs it added."""
        try:
            response = decode_discovery_reply(data)
        except CodecError as exc:
            self.invalid += 1
            if self.first_problem is None:
                self.first_problem = "; ".join(exc.problems)
            return ()
        return self.add(response)

    def add(self, response: ApiDiscoverResponse) -> tuple[ApiParameter, ...]:
        self.replies += 1
        added = []
        for api in response.apis:
            if self.api_type is not None and api.type != self.api_type:
                continue
            key = (api.type, api.module_id)
            if key in self._known:
                self.repeats += 1
                continue
            self._known.add(key)
            self.apis.append(api)
            added.append(api)
        return tuple(added)

    @property
    def answered(self) -> bool:
        """Whether anything came back at all, valid or not."""
        return self.replies + self.invalid > 0

    def module_ids(self, api_type: str | None = None) -> list[str]:
        """The modules that answered (implementing ``api_type``, when given), each once, in arrival order."""
        return list(dict.fromkeys(api.module_id for api in self.apis if api_type is None or api.type == api_type))

