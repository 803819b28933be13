"""The sans-IO protocol core: envelopes, reply decoding, correlation, heartbeat arithmetic. No broker."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflow.runtime.apis.evse_security_consumer import (
    EVSE_SECURITY_CONSUMER,
    GET_LEAF_CERTIFICATE_INFO,
    GET_VERIFY_LOCATION,
    IS_CA_CERTIFICATE_INSTALLED,
)
from evflow.runtime.codec import CodecError
from evflow.runtime.errors import InvalidReply
from evflow.runtime.models.evse_security import (
    CaCertificateType,
    EncodingFormat,
    GetCertificateInfoStatus,
    GetLeafCertificateInfoRequest,
    LeafCertificateType,
)
from evflow.runtime.protocol.envelope import decode_bool_reply, decode_path_reply, encode_request
from evflow.runtime.protocol.heartbeat import BeatKind, HeartbeatSequence, Liveness, LivenessEvent
from evflow.runtime.protocol.requests import Dropped, DropReason, Reply, ReplyFailed, RequestTable, reply_prefix_for
from evflow.runtime.protocol.topics import TopicError

U64 = 2**64


# ---- envelopes and replies ---------------------------------------------------------------------


def test_request_envelope() -> None:
    request = GetLeafCertificateInfoRequest(
        certificate_type=LeafCertificateType.V2G, encoding=EncodingFormat.PEM, include_ocsp=True
    )
    assert json.loads(encode_request(request, "evflow/reply/x/1")) == {
        "headers": {"replyTo": "evflow/reply/x/1"},
        "payload": {"certificate_type": "V2G", "encoding": "PEM", "include_ocsp": True},
    }
    assert encode_request(CaCertificateType.CSMS, None) == b'{"payload":"CSMS"}'


@pytest.mark.parametrize(
    ("wire", "path"),
    [
        (b"/etc/everest/certs/ca/v2g/V2G_ROOT_CA.pem", "/etc/everest/certs/ca/v2g/V2G_ROOT_CA.pem"),  # EVerest
        (b'"/etc/everest/certs/ca/v2g"', "/etc/everest/certs/ca/v2g"),  # the document
        (b"", None),  # nothing installed
        (b'""', None),
        ("/opt/zertifikate/ä".encode(), "/opt/zertifikate/ä"),
    ],
)
def test_verify_location_in_every_form(wire: bytes, path: str | None) -> None:
    assert decode_path_reply(wire) == path


@pytest.mark.parametrize("wire", [b"\xff\xfe", b'"unterminated', b"/a\0b", b'"a\\u0000"'])
def test_bad_verify_location(wire: bytes) -> None:
    with pytest.raises(CodecError):
        decode_path_reply(wire)


@pytest.mark.parametrize(("wire", "value"), [(b"true", True), (b"false", False)])
def test_bool_reply(wire: bytes, value: bool) -> None:
    assert decode_bool_reply(wire) is value


@pytest.mark.parametrize("wire", [b"1", b'"true"', b"null", b"", b"TRUE"])
def test_bad_bool_reply(wire: bytes) -> None:
    with pytest.raises(CodecError):
        decode_bool_reply(wire)


def test_operation_table() -> None:
    assert set(EVSE_SECURITY_CONSUMER.operations) == {
        "is_ca_certificate_installed",
        "get_leaf_certificate_info",
        "get_verify_location",
    }
    with pytest.raises(KeyError, match="has no operation 'install_certificate'"):
        EVSE_SECURITY_CONSUMER.operation("install_certificate")


# ---- correlation -------------------------------------------------------------------------------


def test_each_request_gets_its_own_reply_topic() -> None:
    table = RequestTable("evflow/reply/abc", max_open=1000)
    requests = [table.open(IS_CA_CERTIFICATE_INSTALLED) for _ in range(1000)]
    assert len({r.reply_topic for r in requests}) == 1000
    assert all(r.reply_topic.startswith("evflow/reply/abc/") for r in requests)
    assert table.reply_filter == "evflow/reply/abc/+"
    with pytest.raises(RuntimeError, match="more than 1000 requests open"):
        table.open(IS_CA_CERTIFICATE_INSTALLED)


def test_double_boolean_reply_the_second_is_a_counted_duplicate() -> None:
    table = RequestTable("r/t")
    request = table.open(IS_CA_CERTIFICATE_INSTALLED)
    first = table.receive(request.reply_topic, b"true")
    second = table.receive(request.reply_topic, b"true")
    assert first == Reply(request, True)
    assert second == Dropped(request.reply_topic, DropReason.DUPLICATE)
    assert (table.stats.answered, table.stats.duplicate, table.open_count) == (1, 1, 0)


def test_late_and_unknown_replies_are_told_apart() -> None:
    table = RequestTable("r/t")
    request = table.open(GET_VERIFY_LOCATION)
    table.abandon(request)
    assert table.receive(request.reply_topic, b"/x") == Dropped(request.reply_topic, DropReason.LATE)
    assert table.receive("r/t/999", b"/x") == Dropped("r/t/999", DropReason.UNKNOWN)
    assert (table.stats.abandoned, table.stats.late, table.stats.unknown) == (1, 1, 1)


def test_invalid_reply_completes_the_request_with_an_error() -> None:
    table = RequestTable("r/t")
    request = table.open(GET_LEAF_CERTIFICATE_INFO)
    outcome = table.receive(request.reply_topic, b'{"status": "Maybe"}')
    assert isinstance(outcome, ReplyFailed) and isinstance(outcome.error, InvalidReply)
    assert "@ $.status" in str(outcome.error)
    ok = table.open(GET_LEAF_CERTIFICATE_INFO)
    reply = table.receive(ok.reply_topic, b'{"status": "NotFound", "later_version_field": 1}')
    assert isinstance(reply, Reply) and reply.value.status is GetCertificateInfoStatus.NotFound


def test_memory_of_closed_requests_is_bounded() -> None:
    table = RequestTable("r/t", remember_closed=10)
    requests = [table.open(IS_CA_CERTIFICATE_INSTALLED) for _ in range(50)]
    for request in requests:
        table.receive(request.reply_topic, b"true")
    assert table.closed_count == 10
    assert table.receive(requests[0].reply_topic, b"true").reason is DropReason.UNKNOWN  # forgotten
    assert table.receive(requests[-1].reply_topic, b"true").reason is DropReason.DUPLICATE


def test_abandon_all_on_connection_loss() -> None:
    table = RequestTable("r/t")
    requests = [table.open(IS_CA_CERTIFICATE_INSTALLED) for _ in range(3)]
    assert table.abandon_all() == requests and table.open_count == 0


@pytest.mark.parametrize("token", ["", "a.b", "a b", "a/b", "+"])
def test_reply_prefix_token_is_safe_for_every_broker(token: str) -> None:
    with pytest.raises(TopicError):
        reply_prefix_for("", token)


# ---- heartbeat arithmetic ----------------------------------------------------------------------


def test_heartbeat_sequence_cases() -> None:
    sequence = HeartbeatSequence()
    kinds = [sequence.observe(b).kind for b in (5, 6, 6, 9, 2)]
    assert kinds == [BeatKind.FIRST, BeatKind.NEXT, BeatKind.REPEATED, BeatKind.GAP, BeatKind.RESTARTED]
    assert (sequence.lost, sequence.restarts) == (2, 1)


def test_u64_wrap_is_not_a_gap() -> None:
    sequence = HeartbeatSequence()
    sequence.observe(U64 - 2)
    assert sequence.observe(U64 - 1).kind is BeatKind.NEXT
    assert sequence.observe(0).kind is BeatKind.NEXT
    event = sequence.observe(3)
    assert (event.kind, event.missed) == (BeatKind.GAP, 2)


def test_gap_across_the_wrap_counts_the_lost_beats() -> None:
    sequence = HeartbeatSequence()
    sequence.observe(U64 - 2)
    event = sequence.observe(1)  # U64-1 and 0 were lost
    assert (event.kind, event.missed) == (BeatKind.GAP, 2)


@given(st.integers(0, U64 - 1), st.integers(1, 200))
def test_consecutive_beats_from_anywhere_never_report_a_gap(start: int, count: int) -> None:
    sequence = HeartbeatSequence()
    kinds = {sequence.observe((start + i) % U64).kind for i in range(count)}
    assert kinds <= {BeatKind.FIRST, BeatKind.NEXT} and sequence.lost == 0


@given(st.integers(0, U64 - 1), st.integers(1, 10_000))
def test_a_skip_counts_exactly_the_missed_beats(start: int, skipped: int) -> None:
    sequence = HeartbeatSequence()
    sequence.observe(start)
    event = sequence.observe((start + skipped + 1) % U64)
    assert (event.kind, event.missed) == (BeatKind.GAP, skipped)


@given(st.integers(1, 2**62), st.integers(1, 2**62))
def test_a_jump_backwards_is_a_restart(last: int, back: int) -> None:
    sequence = HeartbeatSequence()
    sequence.observe(last)
    assert sequence.observe((last - back) % U64).kind is BeatKind.RESTARTED


def test_liveness_lost_and_restored_against_an_explicit_clock() -> None:
    liveness = Liveness(timeout=3.0)
    liveness.start(now=100.0)
    assert liveness.deadline == 103.0
    assert liveness.check(now=102.9) is None
    assert liveness.beat(now=102.9) is None
    assert liveness.check(now=105.8) is None
    assert liveness.check(now=105.9) is LivenessEvent.LOST
    assert liveness.deadline is None and liveness.check(now=500.0) is None  # reported once
    assert liveness.beat(now=501.0) is LivenessEvent.RESTORED
    assert liveness.deadline == 504.0


def test_a_beat_that_arrived_before_the_loss_restores_nothing() -> None:
    # A slow flow takes beats from a backlog after "lost" was reported: they arrived before it.
    liveness = Liveness(timeout=3.0)
    liveness.start(now=100.0)
    assert liveness.beat(now=101.0) is None
    assert liveness.check(now=104.0) is LivenessEvent.LOST
    assert liveness.beat(now=101.0) is None and liveness.deadline is None  # still lost
    assert liveness.beat(now=104.5) is LivenessEvent.RESTORED
    assert liveness.deadline == 107.5
