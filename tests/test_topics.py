"""Topic building, validation and matching. No broker."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from evflow.runtime.protocol.topics import (
    ApiTopics,
    TopicError,
    compile_filter,
    filter_covers,
    topic_matches,
    validate_external_prefix,
    validate_filter,
    validate_topic_level,
)

FORBIDDEN = "/+#\0"
good_level = st.text(min_size=1, max_size=30).filter(lambda s: not set(s) & set(FORBIDDEN) and "\ud800" > max(s))
bad_level = st.one_of(
    st.just(""),
    st.tuples(st.text(max_size=10), st.sampled_from(list(FORBIDDEN)), st.text(max_size=10)).map("".join),
)


def test_topics_of_the_api() -> None:
    topics = ApiTopics("evse_security_consumer", 1, "evse_security_api")
    assert topics.m2e("get_verify_location") == "everest_api/1/evse_security_consumer/evse_security_api/m2e/get_verify_location"
    assert topics.e2m("heartbeat") == "everest_api/1/evse_security_consumer/evse_security_api/e2m/heartbeat"
    prefixed = ApiTopics("evse_security_consumer", 1, "sec", "site/7/")
    assert prefixed.m2e("communication_check") == "site/7/everest_api/1/evse_security_consumer/sec/m2e/communication_check"
    assert prefixed.reply_to("site/7/evflow/reply/ab/3") == "evflow/reply/ab/3"


@given(bad_level)
def test_every_bad_module_id_is_refused(module_id: str) -> None:
    with pytest.raises(TopicError):
        ApiTopics("evse_security_consumer", 1, module_id)


@given(good_level)
def test_good_module_ids_are_one_level(module_id: str) -> None:
    topic = ApiTopics("evse_security_consumer", 1, module_id).m2e("x")
    assert topic.split("/")[3] == module_id


@pytest.mark.parametrize("prefix", ["$SYS/", "a/+/", "#", "a\0"])
def test_bad_external_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(TopicError):
        validate_external_prefix(prefix)


@pytest.mark.parametrize("bad", ["a/#/b", "a#", "a/b+", "", "x\0"])
def test_bad_filters_are_refused(bad: str) -> None:
    with pytest.raises(TopicError):
        validate_filter(bad)


def test_validate_topic_level_message_names_the_character() -> None:
    with pytest.raises(TopicError, match=r"module_id must be a single topic level without '/': 'a/b'"):
        validate_topic_level("a/b", "module_id")


level = st.sampled_from(["a", "b", "c", "$x", ""])
topics = st.lists(level, min_size=1, max_size=4).map("/".join)
filters = st.lists(st.sampled_from(["a", "b", "+", "$x"]), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"])
)


@given(filters, topics)
def test_topic_matches_agrees_with_paho(topic_filter: str, topic: str) -> None:
    assert topic_matches(topic_filter, topic) == paho.topic_matches_sub(topic_filter, topic)


@given(filters, topics)
def test_compiled_filters_agree_with_paho(topic_filter: str, topic: str) -> None:
    assert compile_filter(topic_filter)(topic) == paho.topic_matches_sub(topic_filter, topic)


@given(filters, filters, topics)
def test_a_covering_filter_matches_everything_the_covered_one_does(broad: str, narrow: str, topic: str) -> None:
    assume(filter_covers(broad, narrow))
    if topic_matches(narrow, topic):
        assert topic_matches(broad, topic)


def test_filter_covers_examples() -> None:
    assert filter_covers("a/#", "a/b/+")
    assert filter_covers("a/+", "a/b")
    assert not filter_covers("a/b", "a/+")
    assert not filter_covers("a/+", "a/#")
    # A leading wildcard matches no $-topic: pruning $SYS/# under # would lose its messages.
    assert not filter_covers("#", "$SYS/#") and not filter_covers("+/x", "$x/x")
    assert filter_covers("#", "+/x") and filter_covers("$x/#", "$x/a")
