"""MQTT topics of the EVerest APIs: building, validating and matching them. Pure functions.

Every EVerest API topic is ``{external_prefix}everest_api/{version}/{api}/{module_id}/{direction}/{name}``.
EVerest prepends ``external_prefix`` to every external topic, the reply topic a request names included:
a client sends ``replyTo`` without the prefix and listens on prefix + ``replyTo``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable

import attrs

__all__ = [
    "ApiTopics",
    "address_filter",
    "api_base",
    "Direction",
    "TopicError",
    "compile_filter",
    "filter_covers",
    "topic_matches",
    "validate_external_prefix",
    "validate_filter",
    "validate_publish_topic",
    "validate_topic_level",
]

# Generated topic levels (reply prefixes, ids) keep to this: some brokers (NATS) refuse `.` and spaces.
SAFE_LEVEL = re.compile(r"[A-Za-z0-9_-]+")


class TopicError(ValueError):
    """A topic, topic level or filter that MQTT or the broker would refuse or misread."""


class Direction(enum.StrEnum):
    MODULE_TO_EVEREST = "m2e"
    EVEREST_TO_MODULE = "e2m"


def _check_common(value: str, what: str) -> None:
    if not value:
        raise TopicError(f"{what} must not be empty")
    if "\0" in value:
        raise TopicError(f"{what} must not contain NUL: {value!r}")
    if len(value.encode("utf-8", "surrogatepass")) > 65535:
        raise TopicError(f"{what} is longer than MQTT allows (65535 bytes)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise TopicError(f"{what} is not valid UTF-8: {value!r}") from None


def validate_topic_level(value: str, what: str = "topic level") -> str:
    """One topic level, e.g. a ``module_id``: no ``/``, ``+``, ``#``, NUL; not empty."""
    _check_common(value, what)
    for char in "/+#":
        if char in value:
            raise TopicError(f"{what} must be a single topic level without {char!r}: {value!r}")
    return value


def validate_external_prefix(prefix: str) -> str:
    """EVerest's ``mqtt_external_prefix``: may be empty or span levels; no wildcards, no leading ``$``."""
    if prefix == "":
        return prefix
    _check_common(prefix, "external_prefix")
    if "+" in prefix or "#" in prefix:
        raise TopicError(f"external_prefix must not contain wildcards: {prefix!r}")
    if prefix.startswith("$"):
        raise TopicError(f"external_prefix must not start with '$' (broker-reserved topics): {prefix!r}")
    return prefix


def validate_publish_topic(topic: str) -> str:
    """A topic to publish to: no wildcards, no leading ``$`` (brokers reserve them)."""
    _check_common(topic, "topic")
    if "+" in topic or "#" in topic:
        raise TopicError(f"a topic to publish to must not contain wildcards: {topic!r}")
    if topic.startswith("$"):
        raise TopicError(f"a topic to publish to must not start with '$': {topic!r}")
    return topic


def validate_filter(topic_filter: str) -> str:
    """A subscription filter: ``+`` fills a whole level, ``#`` only as the whole last level."""
    _check_common(topic_filter, "topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise TopicError(f"'#' must be the whole last level of a filter: {topic_filter!r}")
        if "+" in level and level != "+":
            raise TopicError(f"'+' must fill a whole level of a filter: {topic_filter!r}")
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (MQTT 3.1.1 §4.7, ``$`` topics excluded from wildcards)."""
    if topic_filter == topic:
        return True
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


def compile_filter(topic_filter: str) -> Callable[[str], bool]:
    """A matcher for one filter, prepared once: the per-message work is a prefix test or a loop over
    pre-split levels (:func:`topic_matches` splits the filter on every call)."""
    levels = topic_filter.split("/")
    if "+" not in levels:
        if levels[-1] == "#":
            prefix = topic_filter[:-1]  # "a/b/#" -> "a/b/"; also matches "a/b" itself
            parent = topic_filter[:-2]
            if not prefix:  # "#": everything but $-topics
                return lambda topic: not topic.startswith("$")
            return lambda topic: topic.startswith(prefix) or topic == parent
        return topic_filter.__eq__
    dollar_guard = levels[0] in ("+", "#")
    if levels[-1] == "+" and "+" not in levels[:-1] and "#" not in levels and not dollar_guard:
        # "a/b/+" (a reply filter, one per API client): a prefix and no further level.
        prefix = topic_filter[:-1]
        start = len(prefix)
        return lambda topic: topic.startswith(prefix) and topic.find("/", start) == -1
    count = len(levels)
    open_ended = levels[-1] == "#"

    def matches(topic: str) -> bool:
        if dollar_guard and topic.startswith("$"):
            return False
        parts = topic.split("/")
        if open_ended:
            if len(parts) < count - 1:
                return False
        elif len(parts) != count:
            return False
        for level, part in zip(levels, parts):
            if level == "#":
                return True
            if level != "+" and level != part:
                return False
        return True

    return matches


def filter_covers(broad: str, narrow: str) -> bool:
    """Whether every topic matching ``narrow`` also matches ``broad`` (both valid filters)."""
    broad_levels = broad.split("/")
    narrow_levels = narrow.split("/")
    if broad_levels[0] in ("+", "#") and not narrow_levels[0].startswith(("+", "#")) and narrow.startswith("$"):
        return False  # a leading wildcard matches no $-topic (MQTT 4.7.2)
    for index, level in enumerate(broad_levels):
        if level == "#":
            return True
        if index >= len(narrow_levels):
            return False
        other = narrow_levels[index]
        if other == "#":
            return False
        if level != "+" and level != other:
            return False
    return len(broad_levels) == len(narrow_levels)


def api_base(pathname: str, module_id: str, external_prefix: str = "") -> str:
    """The API's topic root for one module, prefix included: ``{P}everest_api/1/powermeter/pm1``."""
    validate_external_prefix(external_prefix)
    validate_topic_level(module_id, "module_id")
    filled = pathname.replace("{module_id}", module_id)
    if "{" in filled:
        raise TopicError(f"the server pathname {pathname!r} has parameters other than {{module_id}}")
    return external_prefix + filled


def address_filter(address: str) -> str:
    """The subscription filter of an address: each ``{parameter}`` level becomes ``+``."""
    return "/".join("+" if re.fullmatch(r"\{[^}]+\}", level) else level for level in address.split("/"))


@attrs.frozen
class ApiTopics:
    """The topics of one EVerest API for one module, with EVerest's external prefix applied."""

    api_name: str
    api_version: int
    module_id: str
    external_prefix: str = ""

    def __attrs_post_init__(self) -> None:
        validate_topic_level(self.api_name, "API name")
        validate_topic_level(self.module_id, "module_id")
        validate_external_prefix(self.external_prefix)
        if self.api_version < 0:
            raise TopicError(f"API version must not be negative: {self.api_version}")

    @property
    def base(self) -> str:
        """The API's topic root for this module, without the external prefix."""
        return f"everest_api/{self.api_version}/{self.api_name}/{self.module_id}"

    def topic(self, direction: Direction, name: str) -> str:
        """The full topic (prefix included) of ``name`` in ``direction``."""
        validate_topic_level(name, "operation name")
        return f"{self.external_prefix}{self.base}/{direction}/{name}"

    def all_in(self, direction: Direction) -> str:
        """The filter matching every topic of ``direction``, e.g. all requests for the EVerest side."""
        return f"{self.external_prefix}{self.base}/{direction}/+"

    def m2e(self, name: str) -> str:
        return self.topic(Direction.MODULE_TO_EVEREST, name)

    def e2m(self, name: str) -> str:
        return self.topic(Direction.EVEREST_TO_MODULE, name)

    def reply_to(self, reply_topic: str) -> str:
        """What to put in ``headers.replyTo`` for a reply the client hears on ``reply_topic``."""
        if not reply_topic.startswith(self.external_prefix):
            raise TopicError(f"reply topic {reply_topic!r} is outside external_prefix {self.external_prefix!r}")
        return reply_topic[len(self.external_prefix) :]
