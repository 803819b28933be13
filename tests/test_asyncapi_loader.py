"""The AsyncAPI loader on documents the tests write (tests/asyncapi_samples.py): operations and their
kinds, types made from the schemas, every example round-tripping, errors with JSON paths, documents
read only when an API is used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

from evflow.runtime.asyncapi.catalogue import ApiCatalogue, check_payload
from evflow.runtime.asyncapi.documents import DocumentError, api_docs_path
from evflow.runtime.asyncapi.model import OperationKind
from evflow.runtime.codec import CodecError, dump_json, load_json, unstructure
from evflow.runtime.flows import FlowInvalid, load_plan
from evflow.runtime.protocol.answers import AnswerLedger, AnswerOutcome
from evflow.runtime.registry import Registry

from .asyncapi_samples import charging, meter, write_documents


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_documents(tmp_path / "apis")


@pytest.fixture
def catalogue(docs: Path) -> ApiCatalogue:
    return ApiCatalogue([docs])


def test_the_operations_and_their_kinds(catalogue: ApiCatalogue) -> None:
    ops = catalogue.api("meter").description.operations
    assert {op_id: op.kind for op_id, op in ops.items()} == {
        "receive_request_start_transaction": OperationKind.HANDLER,
        "send_powermeter_values": OperationKind.SEND,
        "receive_tariff": OperationKind.RECEIVE,
        "receive_reset": OperationKind.RECEIVE,
        "receive_request_read_display": OperationKind.HANDLER,
    }
    handler = ops["receive_request_start_transaction"]
    assert handler.address == "e2m/start_transaction" and handler.name == "start_transaction"
    assert handler.reply_id == "send_reply_start_transaction"
    assert ops["receive_reset"].payload is None  # an event without data
    left_out = catalogue.api("meter").description.left_out
    assert set(left_out) == {"send_reply_start_transaction", "send_reply_read_display", "receive_heartbeat",
                             "send_communication_check"}
    assert "heartbeat node" in left_out["receive_heartbeat"] and "keepalive node" in left_out["send_communication_check"]

    ops = catalogue.api("charging").description.operations
    assert {op_id: op.kind for op_id, op in ops.items()} == {
        "receive_session_event": OperationKind.RECEIVE,
        "send_request_get_session_info": OperationKind.REQUEST,
        "send_request_enable": OperationKind.REQUEST,
        "send_pause": OperationKind.SEND,
        "send_request_set_limits": OperationKind.REQUEST,
    }
    assert ops["send_request_get_session_info"].payload is None  # the envelope has no payload

    gauges = catalogue.api("gauges").description
    assert (gauges.pathname, gauges.topic_version) == ("test-telemetry", None)
    assert gauges.operations["receive_status"].parameters == ("gauge_id",)
    assert "use evflow discover" in gauges.left_out["send_request_calibrate"]


def _all_examples(catalogue: ApiCatalogue) -> list[tuple[str, Any, Any]]:
    found = []
    for name in ("meter", "charging"):
        for op in catalogue.api(name).description.operations.values():
            for shape in (op.payload, op.reply):
                if shape is not None:
                    found += [(f"{name}/{op.id}", shape, example) for example in shape.examples]
    return found


def test_every_example_round_trips(catalogue: ApiCatalogue) -> None:
    examples = _all_examples(catalogue)
    assert len(examples) == 13
    for where, shape, example in examples:
        typed = check_payload(shape, example)
        # through the wire form and back: the same JSON, and the same typed value
        assert load_json(dump_json(unstructure(typed))) == example, where
        assert check_payload(shape, load_json(dump_json(unstructure(typed)))) == typed, where


def test_types_made_from_the_schemas(catalogue: ApiCatalogue) -> None:
    ops = catalogue.api("meter").description.operations
    values = check_payload(ops["send_powermeter_values"].payload, meter()["components"]["messages"][
        "send_powermeter_values"]["examples"][0]["payload"])
    assert attrs.has(type(values)) and type(values).__name__ == "Powermeter"
    assert values.energy_Wh_import.total == 12.5 and values.energy_Wh_import.L2 is None  # nested, optional
    assert values.temperatures[0].temperature == 21.5  # an array of objects
    assert values.from_ == "meter"  # a Python keyword as a key
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        values.meter_id = "other"  # type: ignore[misc]

    tariff = check_payload(ops["receive_tariff"].payload, {"currency": "EUR", "price_per_kwh": 1, "type": "flat",
                                                          "vendor": {"x": 1}})
    assert tariff.type == "flat" and tariff.price_per_kwh == 1.0  # allOf merged; a StrEnum equals its text
    assert tariff.vendor == {"x": 1}  # a free-form object

    reply = catalogue.api("charging").description.operations["send_request_get_session_info"].reply
    assert check_payload(reply, None) is None  # oneOf [SessionInfo, null]
    assert check_payload(reply, {"state": "Idle"}).state == "Idle"
    # a cross-file $ref: the charging API's session event carries the meter API's Powermeter
    event = check_payload(catalogue.api("charging").description.operations["receive_session_event"].payload,
                          charging()["components"]["messages"]["receive_session_event"]["examples"][0]["payload"])
    assert type(event.session_started.meter_value).__name__ == "Powermeter"


@pytest.mark.parametrize(("api", "op", "value", "problem"), [
    ("charging", "receive_session_event", {"uuid": "u", "timestamp": "t", "event": "Nope"},
     "expected one of 'SessionStarted', 'SessionFinished', 'ChargingPausedEV', got 'Nope' @ $.event"),
    ("meter", "send_powermeter_values", {"timestamp": "t", "energy_Wh_import": {}},
     "required key missing @ $.energy_Wh_import.total"),
    ("meter", "send_powermeter_values", {"timestamp": "t", "energy_Wh_import": {"total": -1}},
     "must be at least 0, got -1.0 @ $.energy_Wh_import.total"),
    ("meter", "send_powermeter_values", {"timestamp": "t", "energy_Wh_import": {"total": 1},
                                         "temperatures": [{"temperature": 20}, {"temperature": 900}]},
     "must be at most 200, got 900.0 @ $.temperatures[1].temperature"),
    ("meter", "send_powermeter_values", {"timestamp": "t", "energy_Wh_import": {"total": 1},
                                         "temperatures": [{"temperature": 1}] * 5},
     "more than 4 items (5) @ $.temperatures"),
    ("meter", "receive_tariff", {"currency": "euro", "price_per_kwh": 1}, "does not match the pattern '^[A-Z]{3}$': 'euro' @ $.currency"),
    ("meter", "receive_tariff", {"currency": "EUR", "price_per_kwh": "1"}, "expected a number, got a string @ $.price_per_kwh"),
    ("charging", "send_pause", 4000, "must be at most 3600, got 4000 @ $"),
    ("charging", "send_pause", True, "expected an integer, got a boolean @ $"),
])
def test_values_that_break_the_schema_name_the_place(catalogue: ApiCatalogue, api: str, op: str, value: Any,
                                                     problem: str) -> None:
    shape = catalogue.api(api).description.operations[op].payload
    with pytest.raises(CodecError) as caught:
        check_payload(shape, value)
    assert problem in caught.value.problems


def test_additional_properties(catalogue: ApiCatalogue) -> None:
    handler = catalogue.api("meter").description.operations["receive_request_start_transaction"]
    # additionalProperties: true (or unsaid): unknown keys are ignored
    request = check_payload(handler.payload, {"evse_id": "E", "transaction_id": "t", "new_in_v2": 1})
    assert unstructure(request) == {"evse_id": "E", "transaction_id": "t"}
    # additionalProperties: false: refused, by name
    with pytest.raises(CodecError) as caught:
        check_payload(handler.reply, {"status": "OK", "colour": "red"})
    assert caught.value.problems == ("unknown key @ $.colour",)
    with pytest.raises(CodecError) as caught:
        check_payload(handler.payload, {"evse_id": "x" * 21, "transaction_id": "t"})
    assert caught.value.problems == ("longer than 20 characters (21) @ $.evse_id",)
    with pytest.raises(CodecError) as caught:
        check_payload(handler.payload, {"evse_id": "x", "transaction_id": ""})
    assert caught.value.problems == ("shorter than 1 characters (0) @ $.transaction_id",)


def test_a_document_is_read_when_its_api_is_used(catalogue: ApiCatalogue, docs: Path) -> None:
    assert catalogue.names() == ["charging", "common", "gauges", "meter"]  # listing reads file names only
    assert sorted(p.name for p in catalogue.api("meter").read_paths) == ["common_API.yaml", "meter_API.yaml"]
    assert sorted(p.name for p in catalogue.api("charging").read_paths) == [
        "charging_API.yaml", "common_API.yaml", "meter_API.yaml"]


def test_document_problems_name_the_file_and_place(tmp_path: Path) -> None:
    docs = write_documents(tmp_path)
    broken = meter()
    broken["components"]["schemas"]["Powermeter"]["properties"]["energy_Wh_import"]["$ref"] = "#/components/schemas/Nope"
    (docs / "meter_API.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(DocumentError, match=r"meter_API.yaml#/components/schemas/Nope: no such place"):
        ApiCatalogue([docs]).api("meter")

    (docs / "meter_API.yaml").write_text("asyncapi: 3.0.0\ninfo: [unclosed\n")
    with pytest.raises(DocumentError, match=r"meter_API.yaml \(line \d+, column \d+\): not valid YAML"):
        ApiCatalogue([docs]).api("meter")

    (docs / "meter_API.yaml").write_text(yaml.safe_dump({**meter(), "asyncapi": "2.6.0"}))
    with pytest.raises(DocumentError, match="not an AsyncAPI 3 document"):
        ApiCatalogue([docs]).api("meter")

    broken = meter()
    broken["components"]["schemas"]["Price"]["required"].append("vat")
    (docs / "meter_API.yaml").write_text(yaml.safe_dump(broken))
    # allOf: the parts are checked together, as one object (a part may require what another declares)
    with pytest.raises(DocumentError, match=r"Tariff/required: 'vat' is required but not among the properties"):
        ApiCatalogue([docs]).api("meter")

    with pytest.raises(DocumentError, match=r"no document of API 'metre' in .* \(did you mean 'meter'\?\)"):
        ApiCatalogue([docs]).api("metre")
    with pytest.raises(DocumentError, match=r"no API documents to find 'meter' in: give .* --api-docs"):
        ApiCatalogue([]).api("meter")


def test_where_documents_are_looked_for(tmp_path: Path) -> None:
    given = tmp_path / "given"
    assert api_docs_path([given], {"EVFLOW_API_DOCS": f"/a{':'}/b"})[:3] == [given, Path("/a"), Path("/b")]
    # the first file of a name wins, as on a PATH
    first, second = write_documents(tmp_path / "one"), write_documents(tmp_path / "two")
    assert ApiCatalogue([first, second]).index()["meter"] == first / "meter_API.yaml"


def test_node_types_by_api_and_operation(docs: Path) -> None:
    registry = Registry.from_entry_points(ApiCatalogue([docs]))
    assert "meter/send_powermeter_values" in registry and "meter/send_reply_start_transaction" in registry
    assert "inject" in registry and "nope/send_x" not in registry
    node_class = registry.load("meter/send_powermeter_values")
    assert node_class.type == "meter/send_powermeter_values"
    assert "Send powermeter values" in (node_class.__doc__ or "")
    names, errors = registry.api_type_names()
    assert errors == {}
    assert set(names) == {
        "meter/receive_request_start_transaction", "meter/send_reply_start_transaction", "meter/send_powermeter_values",
        "meter/receive_tariff", "meter/receive_reset", "meter/receive_request_read_display",
        "meter/send_reply_read_display", "charging/receive_session_event",
        "charging/send_request_get_session_info", "charging/send_request_enable", "charging/send_pause",
        "charging/send_request_set_limits", "gauges/receive_status",
    }


def _flow(tmp_path: Path, *nodes: dict[str, Any]) -> Path:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps([
        {"id": "b", "type": "mqtt-broker", "broker": "mqtt://127.0.0.1:1883"},
        {"id": "meter", "type": "everest-api", "broker": "b", "api": "meter", "module_id": "pm1"},
        {"id": "sec", "type": "everest-api", "broker": "b", "module_id": "sec"},
        *nodes,
    ]))
    return path


def _problems(path: Path, docs: Path) -> list[tuple[str, str, str]]:
    with pytest.raises(FlowInvalid) as caught:
        load_plan([path], registry=Registry.from_entry_points(ApiCatalogue([docs])), env={})
    return [(p.node_id, p.path, p.message) for p in caught.value.problems if p.severity == "error"]


def test_validation_of_a_nodes_fixed_payload_and_api(tmp_path: Path, docs: Path) -> None:
    path = _flow(
        tmp_path,
        {"id": "values", "type": "meter/send_powermeter_values", "api": "meter",
         "payload": {"timestamp": "t", "energy_Wh_import": {"L1": 1}}},
        {"id": "pause", "type": "charging/send_pause", "api": "meter", "payload": 60},
        {"id": "charging", "type": "everest-api", "broker": "b", "api": "charging", "module_id": "evse1"},
        {"id": "long", "type": "charging/send_pause", "api": "charging", "payload": 7200},
        {"id": "answer", "type": "meter/send_reply_start_transaction", "api": "meter", "payload": {"status": "MAYBE"}},
        {"id": "ask", "type": "meter/receive_request_start_transaction", "api": "meter", "unanswered": "reply"},
        {"id": "typo", "type": "meter/send_powermeter_valus", "api": "meter"},
    )
    assert sorted(_problems(path, docs)) == sorted([
        ("values", "$[3].payload.energy_Wh_import.total", "required key missing"),
        ("pause", "$[4].api", "refers to 'meter', a everest-api with api 'meter'; this node needs api 'charging'"),
        ("long", "$[6].payload", "must be at most 3600, got 7200"),
        ("answer", "$[7].payload.status",
         "expected one of 'OK', 'NOT_SUPPORTED', 'UNEXPECTED_ERROR', got 'MAYBE'"),
        ("ask", "$[8].default_reply", 'unanswered is "reply", but no default_reply is given'),
        ("typo", "$[9].type", f"node type 'meter/send_powermeter_valus': {docs.resolve()}/meter_API.yaml: API 'meter' "
         "has no operation 'send_powermeter_valus' (did you mean meter/send_powermeter_values?)"),
    ])


def test_a_node_needs_its_documents_topic_version(tmp_path: Path, docs: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps([
        {"id": "b", "type": "mqtt-broker", "broker": "mqtt://127.0.0.1:1883"},
        {"id": "meter", "type": "everest-api", "broker": "b", "api": "meter", "module_id": "pm1", "api_version": 2},
        {"id": "values", "type": "meter/send_powermeter_values", "api": "meter"},
    ]))
    assert _problems(path, docs) == [
        ("values", "$[2].api", "refers to 'meter', a everest-api with api_version 2; this node needs api_version 1")]


def test_an_unknown_api_is_reported_with_where_evflow_looked(tmp_path: Path, docs: Path) -> None:
    path = _flow(tmp_path, {"id": "x", "type": "metre/send_powermeter_values", "api": "meter"})
    [(node_id, where, message)] = _problems(path, docs)
    assert (node_id, where) == ("x", "$[3].type")
    assert f"no document of API 'metre' in {docs} (did you mean 'meter'?)" in message


# ---- the flow's answers to EVerest's questions: a pure ledger ---------------------------------------


def test_answer_ledger_first_duplicate_late() -> None:
    ledger = AnswerLedger("receive_request_start_transaction", timeout=5.0)
    first = ledger.ask("r/1", now=100.0)
    second = ledger.ask("r/2", now=101.0)
    third = ledger.ask("r/3", now=102.0)
    assert ledger.next_deadline == 105.0 and ledger.open_count == 3
    assert ledger.claim(first) is AnswerOutcome.FIRST
    assert ledger.claim(first) is AnswerOutcome.DUPLICATE  # one is on its way out
    ledger.settle(first)
    assert ledger.claim(first) is AnswerOutcome.DUPLICATE
    assert ledger.expire(105.5) == []  # the first was answered; the second is not due yet
    assert ledger.next_deadline == 106.0
    # an answer that could not go out gives the question back, in its place
    assert ledger.claim(second) is AnswerOutcome.FIRST
    assert ledger.next_deadline == 107.0
    ledger.release(second)
    assert ledger.next_deadline == 106.0
    assert [q.reply_to for q in ledger.expire(106.0)] == ["r/2"]
    # after the timeout: the policy reported it (nothing went to EVerest), so a late answer may go
    assert ledger.claim(second) is AnswerOutcome.LATE
    ledger.settle(second)
    assert ledger.claim(second) is AnswerOutcome.DUPLICATE
    # ... unless the policy answered with a default
    [expired] = ledger.expire(200.0)
    expired.defaulted = True
    assert ledger.claim(third) is AnswerOutcome.DEFAULTED
    assert ledger.next_deadline is None and ledger.open_count == 0
    assert (ledger.asked, ledger.answered, ledger.late, ledger.expired, ledger.duplicates) == (3, 1, 1, 2, 4)
    with pytest.raises(ValueError, match="timeout must be positive"):
        AnswerLedger("x", 0)


def test_evse_security_from_its_spec_matches_the_hand_written_models(tmp_path: Path) -> None:
    """SPEC.md's evse_security_consumer, written as a document here, through the loader: the same types
    as the hand-written models, field by field (EVerest's own file is compared where the workspace has
    it: tests/test_asyncapi_conformance.py)."""
    from evflow.runtime.apis.evse_security_consumer import EVSE_SECURITY_CONSUMER
    from evflow.runtime.models.evse_security import GetCertificateInfoResult

    from .asyncapi_samples import evse_security, shape_differences

    (tmp_path / "evse_security_consumer_API.yaml").write_text(yaml.safe_dump(evse_security()))
    loaded = ApiCatalogue([tmp_path]).api("evse_security_consumer")
    requests = {op.name: op for op in loaded.description.operations.values()}
    assert set(requests) == set(EVSE_SECURITY_CONSUMER.operations)
    problems = [p for name, written in EVSE_SECURITY_CONSUMER.operations.items()
                for p in shape_differences(requests[name].payload.type, written.request_type, name)]
    problems += shape_differences(requests["get_leaf_certificate_info"].reply.type, GetCertificateInfoResult, "reply")
    assert problems == []
    # and the comparison sees a difference: a field made optional
    broken = evse_security()
    broken["components"]["schemas"]["CertificateInfo"]["required"] = ["key"]
    (tmp_path / "evse_security_consumer_API.yaml").write_text(yaml.safe_dump(broken))
    reloaded = ApiCatalogue([tmp_path]).api("evse_security_consumer").description.operations
    assert shape_differences(reloaded["send_request_get_leaf_certificate_info"].reply.type, GetCertificateInfoResult,
                             "reply") == ["reply.info.certificate_count: required False made, by hand True"]


def _meter_with(change: Any) -> dict[str, Any]:
    document = meter()
    change(document)
    return document


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: d.update(info="oops"), r"meter_API.yaml#/info: expected a mapping"),
    (lambda d: d["operations"]["receive_request_start_transaction"].update(reply="x"),
     r"receive_request_start_transaction/reply: expected a mapping with a channel"),
    (lambda d: d["components"]["schemas"]["Price"]["properties"].update({5: {"type": "string"}}),
     r"Price/properties: a property name must be text, got 5"),
    (lambda d: d["components"]["schemas"]["Price"]["properties"]["currency"].update(pattern="["),
     r"currency/pattern: not a regular expression \(unterminated character set at position 0\): '\['"),
    (lambda d: d["components"]["schemas"].update(Tariff={"allOf": [{"$ref": "#/components/schemas/Tariff"}]}),
     r"schemas/Tariff: allOf includes itself"),
    (lambda d: d["operations"].update(receive_tariff=[1]), r"operations/receive_tariff: expected a mapping"),
])
def test_broken_documents_are_errors_at_their_place(tmp_path: Path, change: Any, problem: str) -> None:
    docs = write_documents(tmp_path)
    (docs / "meter_API.yaml").write_text(yaml.safe_dump(_meter_with(change)))
    with pytest.raises(DocumentError, match=problem):
        ApiCatalogue([docs]).api("meter")


def test_enum_values_that_are_no_python_names_all_stay(tmp_path: Path) -> None:
    values = ["mro", "__init__", "a-b", "a_b", "_ignore_", "title", "OK"]
    docs = write_documents(tmp_path)

    def change(d: dict[str, Any]) -> None:
        d["components"]["schemas"]["Price"]["properties"]["currency"] = {"type": "string", "enum": values}

    (docs / "meter_API.yaml").write_text(yaml.safe_dump(_meter_with(change)))
    shape = ApiCatalogue([docs]).api("meter").description.operations["receive_tariff"].payload
    for value in values:
        assert check_payload(shape, {"currency": value, "price_per_kwh": 1}).currency == value


def test_limits_behind_refs_in_items_and_nullable(tmp_path: Path) -> None:
    docs = write_documents(tmp_path)

    def change(d: dict[str, Any]) -> None:
        schemas = d["components"]["schemas"]
        schemas["Percent"] = {"type": "integer", "minimum": 0, "maximum": 100}
        schemas["Price"]["properties"].update(
            vat={"$ref": "#/components/schemas/Percent"},
            shares={"type": "array", "items": {"type": "number", "minimum": 0}},
            cap={"oneOf": [{"type": "integer", "maximum": 5}, {"type": "null"}]})

    (docs / "meter_API.yaml").write_text(yaml.safe_dump(_meter_with(change)))
    shape = ApiCatalogue([docs]).api("meter").description.operations["receive_tariff"].payload
    base = {"currency": "EUR", "price_per_kwh": 1}
    for extra, problem in (({"vat": 500}, "must be at most 100, got 500 @ $.vat"),
                           ({"shares": [1, -1]}, "item 1: must be at least 0, got -1.0 @ $.shares"),
                           ({"cap": 99}, "must be at most 5, got 99 @ $.cap")):
        with pytest.raises(CodecError) as caught:
            check_payload(shape, {**base, **extra})
        assert caught.value.problems == (problem,)
    assert check_payload(shape, {**base, "vat": 20, "shares": [0.5], "cap": None}).vat == 20


def test_typed_values_from_other_nodes_are_taken(catalogue: ApiCatalogue) -> None:
    """A value already typed (or a list of typed items, a tuple) is what it is: not refused."""
    ops = catalogue.api("charging").description.operations
    limits = ops["send_request_set_limits"].payload
    typed = check_payload(limits, [{"phase": "L1", "amps": 16}])
    assert check_payload(limits, typed) == typed
    assert check_payload(limits, list(typed)) == typed
    assert check_payload(limits, [typed[0], {"phase": "L2", "amps": 1}])[1].phase == "L2"
