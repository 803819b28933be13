"""Fault injection with real processes: broker restarts, hostile payloads, repeated SIGTERMs, TLS
with client certificates, and secrets that must never reach the output."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from evflow.runtime.broker import BrokerConfig
from evflow.runtime.mosquitto import MosquittoBroker, TlsListener
from evflow.runtime.simulator.pki import (
    init_pki,
    make_ca,
    make_tls_client_cert,
    make_tls_server_cert,
    write_key,
    write_pem,
)
from evflow.runtime.simulator.service import EvseSecuritySimulator, SimulatorOptions
from evflow.runtime.simulator.store import CertificateStore
from evflow.runtime.transport import MqttClient

from .conftest import start_broker
from .everest_standin import EverestStandIn
from .processes import evflow

MODULE = "sec"
HEARTBEAT_TOPIC = f"everest_api/1/evse_security_consumer/{MODULE}/e2m/heartbeat"
FLOWS = Path(__file__).parent.parent / "flows"


def write(path: Path, nodes: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(nodes))
    return path


def config_nodes(broker_url: str, **broker: Any) -> list[dict[str, Any]]:
    return [
        {"id": "b", "type": "mqtt-broker", "broker": broker_url, **broker},
        {"id": "api", "type": "everest-api", "broker": "b", "module_id": MODULE, "request_timeout": 1},
    ]


# ---- the broker killed and restarted ------------------------------------------------------------


async def test_ten_broker_restarts_nothing_hangs_and_keepalives_resume(tmp_path: Path) -> None:
    broker = start_broker(tmp_path / "mosquitto", extra_config=["log_type debug"])
    pki = init_pki(tmp_path / "pki")
    flow = write(tmp_path / "flow.json", config_nodes(broker.url) + [
        {"id": "hb", "type": "heartbeat", "api": "api", "timeout": 2, "wires": [[], ["events"]]},
        {"id": "events", "type": "log", "message": "LIVENESS {payload.event}"},
        # The timer alone would take 5 s: a check within 2 s of the broker's return is the reconnect path.
        {"id": "ka", "type": "keepalive", "api": "api", "interval": 5, "everest_timeout": 10},
        {"id": "tick", "type": "inject", "once": True, "repeat": 0.1, "wires": [["ask", "trigger"]]},
        {"id": "trigger", "type": "log", "message": "TRIGGER {msg_id}"},
        {"id": "ask", "type": "is-ca-certificate-installed", "api": "api", "certificate_type": "V2G",
         "timeout": 1, "wires": [["answered"], ["failed"]]},
        {"id": "answered", "type": "log", "message": "ANSWERED {msg_id}"},
        {"id": "failed", "type": "log", "message": "FAILED {msg_id} {error.kind}"},
    ])
    resume_times: list[float] = []
    everest_mqtt = MqttClient(BrokerConfig.from_url(broker.url, reconnect_min=0.05, reconnect_max=0.5))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(everest_mqtt.run)
            simulator = EvseSecuritySimulator(
                everest_mqtt, CertificateStore(pki.root, key_password=pki.key_password),
                SimulatorOptions(module_id=MODULE, heartbeat_interval_ms=100),
            )
            await nursery.start(simulator.run)
            async with evflow(["run", str(flow)]) as run:
                await run.wait_for("ANSWERED")
                for restart in range(1, 11):
                    failed_before = run.text.count("FAILED")
                    broker.kill()
                    await run.wait_for("FAILED", count=failed_before + 1)  # evflow noticed, and fails requests
                    await trio.to_thread.run_sync(broker.start)
                    returned = time.monotonic()
                    seen = await trio.to_thread.run_sync(broker.wait_for_log, "m2e/communication_check'", 5.0)
                    assert seen, f"no communication check within 5 s after restart {restart}"
                    resume_times.append(time.monotonic() - returned)
                    await run.wait_for("ANSWERED", count=run.text.count("ANSWERED") + 1)  # requests flow again
                run.process.send_signal(signal.SIGTERM)
                assert await run.exited() == 0
            await everest_mqtt.aclose()
            nursery.cancel_scope.cancel()
    finally:
        broker.stop()
    output = run.text
    triggers = set(re.findall(r"TRIGGER (\d+)", output))
    answered = set(re.findall(r"ANSWERED (\d+)", output))
    failed = set(re.findall(r"FAILED (\d+)", output))
    assert triggers and answered and failed
    assert triggers == answered | failed and not answered & failed  # each trigger ended exactly once
    assert set(re.findall(r"FAILED \d+ (\w+)", output)) <= {"NotConnected", "RequestTimeout"}
    assert max(resume_times) <= 2.0, resume_times
    assert "Traceback" not in output
    print(f"keepalive resumed after broker returns: max {max(resume_times):.2f} s, "
          f"median {sorted(resume_times)[5]:.2f} s; {len(answered)} answered, {len(failed)} failed explicitly")


# ---- hostile payloads ---------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
hostile = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
    st.binary(min_size=1, max_size=16).map(lambda b: b"\xff\xfe" + b),  # not UTF-8
    st.integers(1, 100_000).map(lambda depth: b"[" * depth),  # nested too deep
    st.just(b"9" * 5000),  # an integer too long to convert
    st.just(b"NaN"),
    st.just(b'"' + b"x" * (1024 * 1024) + b'"'),  # 1 MB
)


class HostileRun:
    def __init__(self) -> None:
        self.sent = {"heartbeat": 0, "mqtt in": 0}


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import os
    import subprocess
    import sys
    import threading

    workdir = tmp_path_factory.mktemp("hostile")
    broker = start_broker(workdir / "mosquitto")
    flow = write(workdir / "flow.json", config_nodes(broker.url, max_payload=512 * 1024) + [
        {"id": "hb", "type": "heartbeat", "api": "api", "timeout": 60, "wires": [[], []]},
        {"id": "in", "type": "mqtt in", "broker": "b", "topic": "hostile/#", "datatype": "json", "qos": 1,
         "wires": [[]]},
    ])
    process = subprocess.Popen(
        [sys.executable, "-m", "evflow.runtime.cli", "--log-format", "text", "run", str(flow)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.append(raw.decode("utf-8", "replace"))
            if "flow running" in lines[-1]:
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert ready.wait(30) and process.poll() is None, "".join(lines)
    run = HostileRun()
    run.broker, run.process, run.lines, run.reader = broker, process, lines, reader  # type: ignore[attr-defined]
    yield run
    if process.poll() is None:
        process.kill()
    broker.stop()


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(st.tuples(st.sampled_from(["heartbeat", "mqtt in"]), hostile), min_size=100, max_size=100))
def test_hostile_payloads_do_not_crash_the_run(hostile_run: HostileRun, batch: list[tuple[str, bytes]]) -> None:
    async def publish() -> None:
        client = MqttClient(BrokerConfig.from_url(hostile_run.broker.url))  # type: ignore[attr-defined]
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            for target, payload in batch:
                topic = HEARTBEAT_TOPIC if target == "heartbeat" else "hostile/x"
                await client.publish(topic, payload, qos=1)  # acknowledged: none is lost on the way
                hostile_run.sent[target] += 1
            await client.aclose()

    trio.run(publish)
    assert hostile_run.process.poll() is None, "".join(hostile_run.lines)  # type: ignore[attr-defined]


def test_hostile_payloads_were_all_counted(hostile_run: HostileRun) -> None:
    total = sum(hostile_run.sent.values())
    if total == 0:
        pytest.skip("runs after test_hostile_payloads_do_not_crash_the_run")
    assert total == 10_000
    process = hostile_run.process  # type: ignore[attr-defined]
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    hostile_run.reader.join(10)  # type: ignore[attr-defined]  # all output read
    output = "".join(hostile_run.lines)  # type: ignore[attr-defined]
    stats = {node: dict(pair.split("=") for pair in counters.split())
             for node, counters in re.findall(r"stats (\S+): (.*)", output)}
    heartbeat, mqtt_in, broker = stats["hb"], stats["in"], stats["b"]
    oversized = int(broker["oversized"])
    counted_heartbeats = sum(int(heartbeat[k]) for k in ("beats", "invalid", "dropped", "unprocessed_at_stop"))
    counted_mqtt_in = sum(int(mqtt_in[k]) for k in ("received", "dropped", "unprocessed_at_stop"))
    assert counted_heartbeats + counted_mqtt_in + oversized == total, stats
    assert int(heartbeat["invalid"]) > 0 and int(mqtt_in["undecodable"]) > 0 and oversized > 0
    # Logged once per burst, not once per message.
    assert output.count("ERROR") < 200, output.count("ERROR")
    assert "Traceback" not in output


# ---- SIGTERM, twenty times ----------------------------------------------------------------------


async def test_twenty_sigterms_each_deliver_communication_check_false(broker: MosquittoBroker) -> None:
    async with EverestStandIn(broker.host, broker.port, "evse_security_api") as everest:
        for attempt in range(20):
            async with evflow(["run", str(FLOWS / "liveness.json")], {"EVFLOW_BROKER": broker.url}) as run:
                with trio.fail_after(20):
                    while (first := await everest.received.receive()).payload != b"true":
                        pass
                    run.process.send_signal(signal.SIGTERM)
                    while (last := await everest.received.receive()).payload == b"true":
                        pass
                    assert last.payload == b"false", attempt
                assert await run.exited() == 0, run.text
            assert first.topic.endswith("/m2e/communication_check")


# ---- TLS with client certificates, through a flow -----------------------------------------------


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    ca = make_ca("flow test CA")
    server = make_tls_server_cert(ca, ["localhost"])
    client = make_tls_client_cert(ca, "gateway")
    rogue = make_tls_client_cert(make_ca("rogue CA"), "gateway")
    files = {
        "ca": write_pem(tmp_path / "ca.pem", ca.certificate),
        "cert": write_pem(tmp_path / "client.pem", client.certificate),
        "key": write_key(tmp_path / "client.key", client.key, password="tls-key-passphrase"),
        "rogue_cert": write_pem(tmp_path / "rogue.pem", rogue.certificate),
        "rogue_key": write_key(tmp_path / "rogue.key", rogue.key, password="tls-key-passphrase"),
    }
    listener = TlsListener(files["ca"], write_pem(tmp_path / "server.pem", server.certificate),
                           write_key(tmp_path / "server.key", server.key), require_certificate=True)
    broker = start_broker(tmp_path / "mosquitto", tls=listener)
    credentials = tmp_path / "credentials"
    credentials.write_text("KEY_PASSWORD=tls-key-passphrase\n")
    credentials.chmod(0o600)
    yield broker, files, credentials
    broker.stop()


@pytest.mark.parametrize(
    ("url", "cert", "key", "outcome"),
    [
        ("mqtts://localhost:{port}", "cert", "key", "flow running"),
        ("mqtts://127.0.0.1:{port}", "cert", "key", "TLS verification of mqtts://127.0.0.1:{port} failed: IP address mismatch"),
        ("mqtts://localhost:{port}", "rogue_cert", "rogue_key", "closed the connection"),
    ],
    ids=["right certificates", "wrong host name", "client certificate of another CA"],
)
async def test_mutual_tls_through_a_flow(tmp_path: Path, tls_broker: Any, url: str, cert: str, key: str, outcome: str) -> None:
    broker, files, credentials = tls_broker
    flow = write(tmp_path / "flow.json", [
        {"id": "b", "type": "mqtt-broker", "broker": url.format(port=broker.tls_port), "ca_file": str(files["ca"]),
         "cert_file": str(files[cert]), "key_file": str(files[key]), "key_password": "${KEY_PASSWORD}"},
        {"id": "in", "type": "mqtt in", "broker": "b", "topic": "x/#"},
    ])
    async with evflow(["run", "--credentials", str(credentials), str(flow)]) as run:
        if outcome == "flow running":
            await run.wait_for(outcome)
            run.process.send_signal(signal.SIGTERM)
            assert await run.exited() == 0
        else:
            assert await run.exited(30) == 1
            assert outcome.format(port=broker.tls_port) in run.text, run.text
    assert "Traceback" not in run.text and "tls-key-passphrase" not in run.text


# ---- secrets never in the output ----------------------------------------------------------------


async def test_no_secret_reaches_the_output(tmp_path: Path) -> None:
    broker_password = "broker-secret-8c1f"
    broker = start_broker(tmp_path / "mosquitto", users={"gateway": broker_password, "everest": "everest-pw"})
    pki = init_pki(tmp_path / "pki", key_password="leaf-key-secret-77aa")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"BROKER_USER=gateway\nBROKER_PASSWORD={broker_password}\n")
    credentials.chmod(0o600)
    flow = write(tmp_path / "flow.json", config_nodes(
        broker.url, username="${BROKER_USER}", password="${BROKER_PASSWORD}") + [
        {"id": "go", "type": "inject", "once": True, "wires": [["leaf"]]},
        {"id": "leaf", "type": "get-leaf-certificate-info", "api": "api", "certificate_type": "V2G",
         "encoding": "PEM", "include_ocsp": True, "wires": [["show", "print", "out"], ["show"]]},
        {"id": "show", "type": "log", "level": "info", "message": "LEAF {payload} {payload.info.password}",
         "fields": ["payload", "payload.info"]},
        {"id": "print", "type": "debug"},
        {"id": "out", "type": "mqtt out", "broker": "b", "topic": "out/leaf"},
    ])
    everest_mqtt = MqttClient(BrokerConfig.from_url(broker.url, username="everest", password="everest-pw"))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(everest_mqtt.run)
            await nursery.start(EvseSecuritySimulator(
                everest_mqtt, CertificateStore(pki.root, key_password=pki.key_password),
                SimulatorOptions(module_id=MODULE, heartbeat_interval_ms=0)).run)
            async with evflow(["--log-level", "debug", "run", "--credentials", str(credentials), str(flow)]) as run:
                await run.wait_for("LEAF ")
                await run.wait_for("[debug")
                run.process.send_signal(signal.SIGTERM)
                assert await run.exited() == 0
            await everest_mqtt.aclose()
            nursery.cancel_scope.cancel()
    finally:
        broker.stop()
    output = run.text
    assert "SECC_LEAF.key" in output  # the reply itself is shown…
    assert broker_password not in output and "leaf-key-secret-77aa" not in output  # …its secrets are not
    assert "Traceback" not in output


async def test_a_second_signal_forces_the_exit(tmp_path: Path, broker: MosquittoBroker) -> None:
    # EVerest never answers: the request stays in flight and the drain phase would wait its whole
    # minute; a second SIGTERM ends the stop at once.
    flow = write(tmp_path / "flow.json", config_nodes(broker.url) + [
        {"id": "go", "type": "inject", "once": True, "wires": [["ask"]]},
        {"id": "ask", "type": "is-ca-certificate-installed", "api": "api", "certificate_type": "V2G", "timeout": 60},
    ])
    async with EverestStandIn(broker.host, broker.port, MODULE, answer=False) as everest:
        async with evflow(["run", "--stop-timeout", "120", "--drain-timeout", "60", str(flow)]) as run:
            with trio.fail_after(20):
                await everest.received.receive()  # the request is out, and will not be answered
            run.process.send_signal(signal.SIGTERM)
            await run.wait_for("draining 1 message(s) in flight")
            run.process.send_signal(signal.SIGTERM)
            assert await run.exited(timeout=10) == 1
    assert "again: stopping now" in run.text and "Traceback" not in run.text
