"""Small AsyncAPI 3.0 documents written by the tests, in the shape of EVerest's (the project does not
copy EVerest's own): ``meter`` (powermeter-shaped: EVerest asks, the client publishes), ``charging``
(evse_manager-shaped: session events, requests), and ``common`` (schemas the other two refer to).

Together they use every schema feature the loader models and all four kinds of operation, and every
message has an example.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ENVELOPE_HEADERS = {"type": "object", "properties": {"replyTo": {"type": "string"}}}


def envelope(payload: dict[str, Any] | None) -> dict[str, Any]:
    properties: dict[str, Any] = {"headers": ENVELOPE_HEADERS}
    if payload is not None:
        properties["payload"] = payload
    return {"type": "object", "additionalProperties": True, "required": ["payload"] if payload else [],
            "properties": properties}


def liveness() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    channels = {
        "receive_heartbeat": {"address": "e2m/heartbeat", "messages": {"m": {"$ref": "#/components/messages/heartbeat"}}},
        "send_communication_check": {"address": "m2e/communication_check",
                                     "messages": {"m": {"$ref": "#/components/messages/communication_check"}}},
    }
    operations = {
        "receive_heartbeat": {"action": "receive", "channel": {"$ref": "#/channels/receive_heartbeat"}},
        "send_communication_check": {"action": "send", "channel": {"$ref": "#/channels/send_communication_check"}},
    }
    messages = {
        "heartbeat": {"payload": {"type": "integer", "minimum": 0}, "examples": [{"payload": 42}]},
        "communication_check": {"payload": {"type": "boolean"}, "examples": [{"payload": True}]},
    }
    return channels, operations, messages


def document(name: str, channels: dict[str, Any], operations: dict[str, Any], messages: dict[str, Any],
             schemas: dict[str, Any]) -> dict[str, Any]:
    live_channels, live_operations, live_messages = liveness()
    return {
        "asyncapi": "3.0.0",
        "info": {"title": f"{name} test API", "version": "1.0.0", "description": f"The {name} API of the tests."},
        "servers": {"default": {"pathname": f"everest_api/1/{name}/{{module_id}}", "host": "localhost:1883",
                                "protocol": "mqtt"}},
        "channels": {**channels, **live_channels},
        "operations": {**operations, **live_operations},
        "components": {"messages": {**messages, **live_messages}, "schemas": schemas},
    }


COMMON = {
    "asyncapi": "3.0.0",
    "info": {"title": "common", "version": "1.0.0"},
    "servers": {"default": {"pathname": "everest_api/1/common/{module_id}"}},
    "operations": {},
    "components": {"schemas": {
        "Energy": {
            "description": "Energy in Wh, per phase",
            "type": "object", "additionalProperties": True, "required": ["total"],
            "properties": {"total": {"type": "number", "minimum": 0},
                           "L1": {"type": "number"}, "L2": {"type": "number"}, "L3": {"type": "number"}},
        },
        "Status": {"type": "string", "enum": ["OK", "NOT_SUPPORTED", "UNEXPECTED_ERROR"]},
    }},
}


def meter() -> dict[str, Any]:
    """EVerest asks the meter to start and stop transactions (handlers); the meter publishes its values
    (send) and its public key; EVerest tells it of a tariff (receive)."""
    channels = {
        "receive_request_start_transaction": {"address": "e2m/start_transaction", "messages": {
            "m": {"$ref": "#/components/messages/receive_request_start_transaction"}}},
        "send_reply_start_transaction": {"address": None, "messages": {
            "m": {"$ref": "#/components/messages/send_reply_start_transaction"}}},
        "send_powermeter_values": {"address": "m2e/powermeter_values", "messages": {
            "m": {"$ref": "#/components/messages/send_powermeter_values"}}},
        "receive_tariff": {"address": "e2m/tariff", "messages": {"m": {"$ref": "#/components/messages/receive_tariff"}}},
        "receive_reset": {"address": "e2m/reset", "messages": {"m": {"$ref": "#/components/messages/receive_reset"}}},
        "receive_request_read_display": {"address": "e2m/read_display", "messages": {"m": {"payload": envelope(
            {"type": "object", "properties": {"line": {"type": "integer", "minimum": 1}}})}}},
        "send_reply_read_display": {"address": None, "messages": {"m": {"payload": {"type": "string"}}}},
    }
    operations = {
        "receive_request_start_transaction": {
            "title": "Request start transaction", "action": "receive", "description": "EVerest starts a transaction.",
            "channel": {"$ref": "#/channels/receive_request_start_transaction"},
            "reply": {"address": {"location": "$message.header#/replyTo"},
                      "channel": {"$ref": "#/channels/send_reply_start_transaction"}},
        },
        "send_reply_start_transaction": {"action": "send", "channel": {"$ref": "#/channels/send_reply_start_transaction"}},
        "send_powermeter_values": {"title": "Send powermeter values", "action": "send",
                                   "channel": {"$ref": "#/channels/send_powermeter_values"}},
        "receive_tariff": {"action": "receive", "channel": {"$ref": "#/channels/receive_tariff"}},
        "receive_reset": {"action": "receive", "channel": {"$ref": "#/channels/receive_reset"}},
        # a question whose payload may be empty (then EVerest leaves it out)
        "receive_request_read_display": {"action": "receive", "channel": {"$ref": "#/channels/receive_request_read_display"},
                                         "reply": {"channel": {"$ref": "#/channels/send_reply_read_display"}}},
        "send_reply_read_display": {"action": "send", "channel": {"$ref": "#/channels/send_reply_read_display"}},
    }
    messages = {
        "receive_request_start_transaction": {
            "payload": envelope({"$ref": "#/components/schemas/StartTransactionRequest"}),
            "examples": [{"payload": {"headers": {"replyTo": "a/b"},
                                      "payload": {"evse_id": "DE*PNX*E1", "transaction_id": "t-1",
                                                  "identification_status": "ASSIGNED"}}}],
        },
        "send_reply_start_transaction": {
            "payload": {"$ref": "#/components/schemas/StartTransactionReply"},
            "examples": [{"payload": {"status": "OK", "transaction_max_stop_time": "2024-01-01T00:00:00Z"}}],
        },
        "send_powermeter_values": {
            "payload": {"$ref": "#/components/schemas/Powermeter"},
            "examples": [{"payload": {"timestamp": "2024-09-27T07:21:14.127Z", "meter_id": "M1",
                                      "energy_Wh_import": {"total": 12.5, "L1": 4.0},
                                      "temperatures": [{"temperature": 21.5, "location": "body"}],
                                      "from": "meter"}}],
        },
        "receive_tariff": {
            "payload": {"$ref": "#/components/schemas/Tariff"},
            "examples": [{"payload": {"currency": "EUR", "price_per_kwh": 0.39, "type": "flat",
                                      "texts": ["0.39 EUR/kWh"], "vendor": {"anything": [1, 2]}}}],
        },
        "receive_reset": {"summary": "EVerest resets the meter (no data)"},
    }
    schemas = {
        "StartTransactionRequest": {
            "type": "object", "additionalProperties": True, "required": ["evse_id", "transaction_id"],
            "properties": {
                "evse_id": {"type": "string", "maxLength": 20},
                "transaction_id": {"type": "string", "minLength": 1},
                "identification_status": {"type": "string", "enum": ["ASSIGNED", "NOT_ASSIGNED"]},
            },
        },
        "StartTransactionReply": {
            "type": "object", "additionalProperties": False, "required": ["status"],
            "properties": {
                "status": {"$ref": "common_API.yaml#/components/schemas/Status"},
                "error": {"type": "string"},
                "transaction_max_stop_time": {"type": "string", "format": "date-time"},
            },
        },
        "Powermeter": {
            "type": "object", "additionalProperties": True, "required": ["timestamp", "energy_Wh_import"],
            "properties": {
                "timestamp": {"type": "string", "format": "date-time"},
                "meter_id": {"type": "string"},
                "energy_Wh_import": {"$ref": "common_API.yaml#/components/schemas/Energy"},
                "temperatures": {"type": "array", "maxItems": 4, "items": {
                    "type": "object", "required": ["temperature"],
                    "properties": {"temperature": {"type": "number", "minimum": -100, "maximum": 200},
                                   "location": {"type": "string"}}}},
                "from": {"type": "string", "description": "a key that is a Python keyword"},
            },
        },
        "Tariff": {
            "allOf": [
                {"$ref": "#/components/schemas/Price"},
                {"type": "object", "properties": {"type": {"type": "string", "enum": ["flat", "dynamic"]},
                                                  "texts": {"type": "array", "items": {"type": "string"}}}},
            ],
            "type": "object",
            "properties": {"vendor": {"type": "object", "description": "free-form"}},
        },
        "Price": {"type": "object", "required": ["currency", "price_per_kwh"],
                  "properties": {"currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                                 "price_per_kwh": {"type": "number"}}},
    }
    return document("meter", channels, operations, messages, schemas)


def charging() -> dict[str, Any]:
    """EVerest publishes session events (receive); the client asks for the session info (request, a
    reply that may be null), enables the EVSE (request with an enum reply) and pauses (send)."""
    channels = {
        "receive_session_event": {"address": "e2m/session_event", "messages": {
            "m": {"$ref": "#/components/messages/receive_session_event"}}},
        "send_request_get_session_info": {"address": "m2e/get_session_info", "messages": {
            "m": {"$ref": "#/components/messages/send_request_get_session_info"}}},
        "receive_reply_get_session_info": {"address": None, "messages": {
            "m": {"$ref": "#/components/messages/receive_reply_get_session_info"}}},
        "send_request_enable": {"address": "m2e/enable", "messages": {
            "m": {"$ref": "#/components/messages/send_request_enable"}}},
        "receive_reply_enable": {"address": None, "messages": {"m": {"$ref": "#/components/messages/receive_reply_enable"}}},
        "send_pause": {"address": "m2e/pause", "messages": {"m": {"$ref": "#/components/messages/send_pause"}}},
        "send_request_set_limits": {"address": "m2e/set_limits", "messages": {
            "m": {"$ref": "#/components/messages/send_request_set_limits"}}},
        "receive_reply_set_limits": {"address": None, "messages": {
            "m": {"$ref": "#/components/messages/receive_reply_set_limits"}}},
    }
    operations = {
        "receive_session_event": {"title": "Session events", "action": "receive",
                                  "channel": {"$ref": "#/channels/receive_session_event"}},
        "send_request_get_session_info": {
            "action": "send", "channel": {"$ref": "#/channels/send_request_get_session_info"},
            "reply": {"address": {"location": "$message.header#/replyTo"},
                      "channel": {"$ref": "#/channels/receive_reply_get_session_info"}}},
        "receive_reply_get_session_info": {"action": "receive",
                                           "channel": {"$ref": "#/channels/receive_reply_get_session_info"}},
        "send_request_enable": {
            "action": "send", "channel": {"$ref": "#/channels/send_request_enable"},
            "reply": {"address": {"location": "$message.header#/replyTo"},
                      "channel": {"$ref": "#/channels/receive_reply_enable"}}},
        "receive_reply_enable": {"action": "receive", "channel": {"$ref": "#/channels/receive_reply_enable"}},
        "send_pause": {"action": "send", "channel": {"$ref": "#/channels/send_pause"}},
        "send_request_set_limits": {
            "action": "send", "channel": {"$ref": "#/channels/send_request_set_limits"},
            "reply": {"address": {"location": "$message.header#/replyTo"},
                      "channel": {"$ref": "#/channels/receive_reply_set_limits"}}},
        "receive_reply_set_limits": {"action": "receive", "channel": {"$ref": "#/channels/receive_reply_set_limits"}},
    }
    messages = {
        "receive_session_event": {
            "payload": {"$ref": "#/components/schemas/SessionEvent"},
            "examples": [{"payload": {"uuid": "s-1", "timestamp": "2024-01-01T00:00:00Z", "event": "SessionStarted",
                                      "session_started": {"reason": "EVConnected",
                                                          "meter_value": {"timestamp": "2024-01-01T00:00:00Z",
                                                                          "energy_Wh_import": {"total": 1.0}}}}},
                         {"payload": {"uuid": "s-1", "timestamp": "2024-01-01T00:10:00Z", "event": "SessionFinished"}}],
        },
        "send_request_get_session_info": {
            "payload": envelope(None),
            "examples": [{"payload": {"headers": {"replyTo": "x/y"}}}],
        },
        "receive_reply_get_session_info": {
            "payload": {"oneOf": [{"$ref": "#/components/schemas/SessionInfo"}, {"type": "null"}]},
            "examples": [{"payload": {"state": "Charging", "charged_energy_wh": 1200}}, {"payload": None}],
        },
        "send_request_enable": {
            "payload": envelope({"$ref": "#/components/schemas/EnableRequest"}),
            "examples": [{"payload": {"headers": {"replyTo": "x/y"}, "payload": {"source": "LocalAPI", "priority": 5}}}],
        },
        "receive_reply_enable": {"payload": {"type": "boolean"}, "examples": [{"payload": True}]},
        "send_pause": {"payload": {"type": "integer", "minimum": 0, "maximum": 3600},
                       "examples": [{"payload": 60}]},
        "send_request_set_limits": {
            "payload": envelope({"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Limit"}}),
            "examples": [{"payload": {"headers": {"replyTo": "x/y"}, "payload": [{"phase": "L1", "amps": 16}]}}],
        },
        "receive_reply_set_limits": {"payload": {"type": "string", "enum": ["Accepted", "Rejected"]},
                                     "examples": [{"payload": "Accepted"}]},
    }
    schemas = {
        "SessionEventEnum": {"type": "string", "enum": ["SessionStarted", "SessionFinished", "ChargingPausedEV"]},
        "SessionEvent": {
            "type": "object", "additionalProperties": True, "required": ["uuid", "timestamp", "event"],
            "properties": {
                "uuid": {"type": "string"},
                "timestamp": {"type": "string", "format": "date-time"},
                "event": {"$ref": "#/components/schemas/SessionEventEnum"},
                "session_started": {"type": "object", "$ref": "#/components/schemas/SessionStarted"},
            },
        },
        "SessionStarted": {
            "type": "object", "required": ["reason"],
            "properties": {"reason": {"type": "string", "enum": ["EVConnected", "Authorized"]},
                           "meter_value": {"$ref": "meter_API.yaml#/components/schemas/Powermeter"}},
        },
        "SessionInfo": {"type": "object", "required": ["state"],
                        "properties": {"state": {"type": "string", "enum": ["Idle", "Charging", "Finished"]},
                                       "charged_energy_wh": {"type": "number"}}},
        "Limit": {"type": "object", "required": ["phase", "amps"],
                  "properties": {"phase": {"type": "string", "enum": ["L1", "L2", "L3"]},
                                 "amps": {"type": "number", "minimum": 0}}},
        "EnableRequest": {"type": "object", "required": ["source", "priority"],
                          "properties": {"source": {"type": "string", "enum": ["LocalAPI", "CSMS"]},
                                         "priority": {"type": "integer", "minimum": 0, "maximum": 10000}}},
    }
    return document("charging", channels, operations, messages, schemas)


def gauges() -> dict[str, Any]:
    """Telemetry-shaped: a pathname of its own (no module id), addresses with a parameter, and a
    request there, which makes no node type (no module of its own to answer it)."""
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "gauges", "version": "1.0.0"},
        "servers": {"default": {"pathname": "test-telemetry"}},
        "channels": {
            "receive_status": {"address": "Gauge/{gauge_id}/status", "parameters": {"gauge_id": {}},
                               "messages": {"m": {"payload": {"type": "object", "required": ["ok"],
                                                              "properties": {"ok": {"type": "boolean"}}},
                                                  "examples": [{"payload": {"ok": True}}]}}},
            "send_request_calibrate": {"address": "calibrate", "messages": {"m": {"payload": envelope(None)}}},
            "receive_reply_calibrate": {"address": None, "messages": {"m": {"payload": {"type": "boolean"}}}},
        },
        "operations": {
            "receive_status": {"action": "receive", "channel": {"$ref": "#/channels/receive_status"}},
            "send_request_calibrate": {"action": "send", "channel": {"$ref": "#/channels/send_request_calibrate"},
                                       "reply": {"channel": {"$ref": "#/channels/receive_reply_calibrate"}}},
        },
    }


def write_documents(directory: Path) -> Path:
    """The documents as EVerest names its files (``<api>_API.yaml``; gauges as ``gauges.yaml``, as
    EVerest's telemetry); returns ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "gauges.yaml").write_text(yaml.safe_dump(gauges(), sort_keys=False))
    for name, content in (("common", COMMON), ("meter", meter()), ("charging", charging())):
        (directory / f"{name}_API.yaml").write_text(yaml.safe_dump(content, sort_keys=False))
    return directory


def shape_differences(made: Any, written: Any, path: str) -> list[str]:
    """Where a type made from the document and a hand-written one differ: fields, required or not,
    enum values, nested types. (The hand-written ones add range checks the loader makes too.)"""
    import enum
    import types
    import typing

    import attrs

    from evflow.runtime.models.evse_security import HeartbeatId

    def unwrap(tp: Any) -> tuple[Any, bool]:
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            return (args[0] if len(args) == 1 else tp), True
        return (int if tp is HeartbeatId else tp), False

    made, _ = unwrap(made)
    written, _ = unwrap(written)
    if isinstance(written, type) and issubclass(written, enum.Enum):
        if not (isinstance(made, type) and issubclass(made, enum.Enum)):
            return [f"{path}: an enum by hand, {made!r} made"]
        made_values, written_values = [m.value for m in made], [m.value for m in written]
        return [] if made_values == written_values else [f"{path}: {made_values} made, {written_values} by hand"]
    if attrs.has(written):
        if not attrs.has(made):
            return [f"{path}: an object by hand, {made!r} made"]
        problems = []
        made_fields = {f.name: f for f in attrs.fields(made)}
        written_fields = {f.name: f for f in attrs.fields(written)}
        if set(made_fields) != set(written_fields):
            problems.append(f"{path}: fields {sorted(made_fields)} made, {sorted(written_fields)} by hand")
        made_hints, written_hints = typing.get_type_hints(made), typing.get_type_hints(written)
        for name in sorted(set(made_fields) & set(written_fields)):
            m, w = made_fields[name], written_fields[name]
            if (m.default is attrs.NOTHING) != (w.default is attrs.NOTHING):
                problems.append(f"{path}.{name}: required {m.default is attrs.NOTHING} made, by hand "
                                f"{w.default is attrs.NOTHING}")
            if m.repr != w.repr:
                problems.append(f"{path}.{name}: a secret in one and not the other")
            problems += shape_differences(made_hints[name], written_hints[name], f"{path}.{name}")
        return problems
    if typing.get_origin(written) is tuple:
        return shape_differences(typing.get_args(made)[0], typing.get_args(written)[0], f"{path}[]")
    return [] if made is written else [f"{path}: {made!r} made, {written!r} by hand"]


def evse_security() -> dict[str, Any]:
    """``evse_security_consumer`` as SPEC.md describes it (the tests' own words, not EVerest's file): its
    three requests and their schemas, to check the loader against the hand-written models."""
    def request(name: str, payload: dict[str, Any], reply: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        channels = {
            f"send_request_{name}": {"address": f"m2e/{name}", "messages": {"m": {"payload": envelope(payload)}}},
            f"receive_reply_{name}": {"address": None, "messages": {"m": {"payload": reply}}},
        }
        operations = {
            f"send_request_{name}": {"action": "send", "channel": {"$ref": f"#/channels/send_request_{name}"},
                                     "reply": {"channel": {"$ref": f"#/channels/receive_reply_{name}"}}},
            f"receive_reply_{name}": {"action": "receive", "channel": {"$ref": f"#/channels/receive_reply_{name}"}},
        }
        return channels, operations

    def schema(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for name, payload, reply in (
        ("is_ca_certificate_installed", schema("CaCertificateType"), {"type": "boolean"}),
        ("get_leaf_certificate_info", schema("GetLeafCertificateInfoRequest"), schema("GetCertificateInfoResult")),
        ("get_verify_location", schema("CaCertificateType"), {"type": "string"}),
    ):
        more_channels, more_operations = request(name, payload, reply)
        channels.update(more_channels)
        operations.update(more_operations)
    text = {"type": "string"}
    schemas = {
        "CaCertificateType": {"type": "string", "enum": ["V2G", "MO", "CSMS", "MF"]},
        "LeafCertificateType": {"type": "string", "enum": ["CSMS", "V2G", "MF", "MO"]},
        "EncodingFormat": {"type": "string", "enum": ["DER", "PEM"]},
        "GetCertificateInfoStatus": {"type": "string", "enum": [
            "Accepted", "Rejected", "NotFound", "NotFoundValid", "PrivateKeyNotFound"]},
        "HashAlgorithm": {"type": "string", "enum": ["SHA256", "SHA384", "SHA512"]},
        "GetLeafCertificateInfoRequest": {
            "type": "object", "required": ["certificate_type", "encoding", "include_ocsp"],
            "properties": {"certificate_type": schema("LeafCertificateType"), "encoding": schema("EncodingFormat"),
                           "include_ocsp": {"type": "boolean"}}},
        "CertificateHashData": {
            "type": "object", "required": ["hash_algorithm", "issuer_name_hash", "issuer_key_hash", "serial_number"],
            "properties": {"hash_algorithm": schema("HashAlgorithm"),
                           "issuer_name_hash": {"type": "string", "maxLength": 128},
                           "issuer_key_hash": {"type": "string", "maxLength": 128},
                           "serial_number": {"type": "string", "maxLength": 40}}},
        "CertificateOCSP": {"type": "object", "required": ["hash"],
                            "properties": {"hash": schema("CertificateHashData"), "ocsp_path": text}},
        "CertificateInfo": {
            "type": "object", "required": ["key", "certificate_count"],
            "properties": {"key": text, "certificate_count": {"type": "integer", "minimum": 0},
                           "certificate": text, "certificate_single": text, "certificate_root": text,
                           "password": text, "ocsp": {"type": "array", "items": schema("CertificateOCSP")}}},
        "GetCertificateInfoResult": {"type": "object", "required": ["status"],
                                     "properties": {"status": schema("GetCertificateInfoStatus"),
                                                    "info": schema("CertificateInfo")}},
    }
    return document("evse_security_consumer", channels, operations, {}, schemas)
