"""The codec: every model round-trips; wire rules and error paths. No broker."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evflow.runtime.codec import CodecError, decode_json, encode_json, structure, unstructure
from evflow.runtime.models.evse_security import (
    I32_MAX,
    CaCertificateType,
    CertificateHashData,
    CertificateInfo,
    CertificateOCSP,
    EncodingFormat,
    GetCertificateInfoResult,
    GetCertificateInfoStatus,
    GetLeafCertificateInfoRequest,
    HashAlgorithm,
    HeartbeatId,
    LeafCertificateType,
)

text = st.text(max_size=60)
optional_text = st.none() | text
hash_data = st.builds(
    CertificateHashData,
    hash_algorithm=st.sampled_from(HashAlgorithm),
    issuer_name_hash=st.text(max_size=128),
    issuer_key_hash=st.text(max_size=128),
    serial_number=st.text(max_size=40),
)
ocsp = st.builds(CertificateOCSP, hash=hash_data, ocsp_path=optional_text)
info = st.builds(
    CertificateInfo,
    key=text,
    certificate_count=st.integers(0, I32_MAX),
    certificate=optional_text,
    certificate_single=optional_text,
    certificate_root=optional_text,
    password=optional_text,
    ocsp=st.none() | st.lists(ocsp, max_size=3).map(tuple),
)
result = st.builds(GetCertificateInfoResult, status=st.sampled_from(GetCertificateInfoStatus), info=st.none() | info)
leaf_request = st.builds(
    GetLeafCertificateInfoRequest,
    certificate_type=st.sampled_from(LeafCertificateType),
    encoding=st.sampled_from(EncodingFormat),
    include_ocsp=st.booleans(),
)
every_value = st.one_of(
    result.map(lambda v: (v, GetCertificateInfoResult)),
    leaf_request.map(lambda v: (v, GetLeafCertificateInfoRequest)),
    st.sampled_from(CaCertificateType).map(lambda v: (v, CaCertificateType)),
    st.integers(0, 2**64 - 1).map(lambda v: (v, HeartbeatId)),
    st.booleans().map(lambda v: (v, bool)),
)


def nulls_in(data: object) -> bool:
    if data is None:
        return True
    if isinstance(data, dict):
        return any(nulls_in(v) for v in data.values())
    if isinstance(data, list):
        return any(nulls_in(v) for v in data)
    return False


@given(every_value)
def test_every_model_round_trips_through_json(case: tuple[object, type]) -> None:
    value, cls = case
    wire = encode_json(value)
    assert decode_json(wire, cls) == value
    assert not nulls_in(json.loads(wire))  # optional fields are omitted, never null


@given(result, st.dictionaries(st.text(min_size=1).filter(lambda k: k not in ("status", "info")), st.integers()))
def test_unknown_keys_are_ignored(value: GetCertificateInfoResult, extra: dict[str, int]) -> None:
    data = unstructure(value)
    data.update(extra)
    assert structure(data, GetCertificateInfoResult) == value


def test_wire_form() -> None:
    value = GetCertificateInfoResult(
        status=GetCertificateInfoStatus.Accepted, info=CertificateInfo(key="/k", certificate_count=1)
    )
    assert encode_json(value) == b'{"status":"Accepted","info":{"key":"/k","certificate_count":1}}'
    assert value.status == "Accepted"  # StrEnum: flow rules can compare with the JSON string


@pytest.mark.parametrize(
    ("data", "cls", "problem"),
    [
        ({"status": "Fine"}, GetCertificateInfoResult, "expected one of 'Accepted', "),
        ({"status": "Accepted", "info": {"key": "k", "certificate_count": True}}, GetCertificateInfoResult,
         "expected an integer, got a boolean @ $.info.certificate_count"),
        ({"status": "Accepted", "info": {"key": "k", "certificate_count": 2**31}}, GetCertificateInfoResult,
         "expected an integer in 0..2147483647, got 2147483648 @ $.info.certificate_count"),
        ({"status": "Accepted", "info": {"certificate_count": 1}}, GetCertificateInfoResult,
         "required key missing @ $.info.key"),
        ({"status": "Accepted", "info": {"key": "k", "certificate_count": 1, "ocsp": "x"}},
         GetCertificateInfoResult, "expected an array, got a string @ $.info.ocsp"),
        ({"status": "Accepted", "info": {"key": "k", "certificate_count": 1, "ocsp": [{"hash": {
            "hash_algorithm": "SHA256", "issuer_name_hash": "", "issuer_key_hash": "", "serial_number": "0" * 41}}]}},
         GetCertificateInfoResult, "longer than 40 characters (41) @ $.info.ocsp[0].hash.serial_number"),
        ({"certificate_type": "V2G", "encoding": "PEM", "include_ocsp": "yes"}, GetLeafCertificateInfoRequest,
         "expected a boolean, got a string @ $.include_ocsp"),
        ("V2G", GetLeafCertificateInfoRequest, "expected an object, got a string @ $"),
        (-1, HeartbeatId, "expected an integer in 0..2^64-1, got -1 @ $"),
        (2**64, HeartbeatId, "expected an integer in 0..2^64-1"),
        (1.0, HeartbeatId, "expected an integer, got a number @ $"),
        (1, bool, "expected a boolean, got an integer @ $"),
    ],
)
def test_errors_name_the_json_path(data: object, cls: type, problem: str) -> None:
    with pytest.raises(CodecError) as caught:
        structure(data, cls)
    assert any(problem in line for line in caught.value.problems), caught.value.problems
    assert not isinstance(caught.value, BaseExceptionGroup)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(CodecError) as caught:
        structure({"status": "Accepted", "info": {"key": 1, "certificate_count": "1"}}, GetCertificateInfoResult)
    assert caught.value.problems == (
        "expected a string, got an integer @ $.info.key",
        "expected an integer, got a string @ $.info.certificate_count",
    )


@pytest.mark.parametrize(
    ("raw", "problem"),
    [(b"\xff", "invalid UTF-8 @ $"), (b"NaN", "NaN is not JSON"), (b"{", "invalid JSON"),
     (b"[" * 100_000, "nested too deeply"), (b"9" * 5000, "invalid JSON")],
)
def test_bad_json_is_a_codec_error(raw: bytes, problem: str) -> None:
    with pytest.raises(CodecError) as caught:
        decode_json(raw, HeartbeatId)
    assert problem in str(caught.value)


def test_password_is_kept_out_of_repr() -> None:
    value = CertificateInfo(key="/k", certificate_count=1, password="hunter2")
    assert "hunter2" not in repr(value) and "hunter2" not in str(value)
