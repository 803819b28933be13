"""Where evflow's time per forwarded message goes: a forwarding leg under py-spy (and strace -c).

    python bench/profile.py                          # mqtt in flow, QoS 0, 50,000 messages
    python bench/profile.py --flow forward-heartbeat --qos 1 --n 20000 --syscalls
    python bench/profile.py --flow request --n 20000 --in-flight 64   # the request leg (0: one at a time)

evflow runs as in the bench (fresh mosquitto, `evflow run` on bench/flows/); py-spy samples it from
outside while the load passes. Prints the CPU per message split by the component
executing (leaf-first: the innermost frame that belongs to a known component), the heaviest
functions, read/write system calls and context switches per message, and with --syscalls every
system call by kind (strace -c). Writes the collapsed stacks to
--out (speedscope.app opens them as they are). py-spy comes from PATH or the bench cache's tools
venv (installed there on first use), never from evflow's dependencies.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, CACHE_DIR, HEARTBEAT_TOPIC, RESULT_TOPIC, TRIGGER_TOPIC, cpu_seconds, private_broker  # noqa: E402
from legs import THROUGHPUT_BROKER_CONFIG, _counter, everest_responder, load_file, started  # noqa: E402
from systems import Evflow, PahoFloor, user_environment  # noqa: E402

TOOLS_VENV = CACHE_DIR / "tools-venv"

# Leaf-first: a sample is charged to the first of these found walking from the innermost frame out.
# (label, substrings of a frame "function (file)"). Order matters only among frames of one stack.
COMPONENTS = [
    ("json (decode/encode)", ["json/decoder.py", "json/encoder.py", "json/__init__.py", "runtime/codec.py"]),
    ("paho: read + parse packets", ["_packet_read", "_sock_recv", "_handle_publish", "_packet_handle",
                                    "_handle_on_message", "_packet.py", "loop_read", "decode_publish"]),
    ("paho: publish + write", ["publish (paho", "_send_publish", "_packet_queue", "_packet_write",
                               "loop_write", "_sock_send", "_call_socket_register_write", "_easy_log"]),
    ("paho: other", ["paho/mqtt/"]),
    ("evflow transport (read loop, routing)", ["runtime/transport/", "protocol/router.py", "protocol/acks.py"]),
    ("evflow message", ["runtime/message.py"]),
    ("filter node", ["nodes/filter.py", "nodes/_paths.py"]),
    ("mqtt in node", ["nodes/mqtt_in.py"]),
    ("mqtt out node", ["nodes/mqtt_out.py", "protocol/topics.py"]),
    ("request node + client", ["nodes/everest_requests.py", "protocol/requests.py", "protocol/envelope.py",
                               "runtime/oneshot.py"]),
    ("heartbeat node + client", ["nodes/heartbeat.py", "runtime/client.py", "protocol/heartbeat.py"]),
    ("engine (wires, workers)", ["runtime/engine.py", "runtime/delivery.py", "runtime/host.py",
                                 "runtime/failures.py"]),
    ("trio channels", ["trio/_channel.py"]),
    ("trio scheduler + I/O waits", ["trio/_core/", "trio/_highlevel", "trio/_timeouts.py", "trio/"]),
    ("attrs (generated __init__ etc.)", ["<attrs generated", "attr/"]),
    ("logging", ["logging/"]),
]


def py_spy() -> str:
    found = shutil.which("py-spy") or str(TOOLS_VENV / "bin" / "py-spy")
    if not Path(found).exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run([str(TOOLS_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    return found


def kernel_counters(pid: int) -> dict[str, int]:
    """Read/write system calls (/proc/<pid>/io) and context switches of all threads (/proc/<pid>/status)."""
    counters: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("syscr", "syscw"):
            counters[key] = int(value)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
            counters[key] = int(value)
    return counters


def component_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for label, markers in COMPONENTS:
            if any(marker in frame for marker in markers):
                return label
    return "other"


def forward_load(port: int, qos: int, n: int, scratch: Path) -> int:
    """Publish ``n`` heartbeats at once; the number forwarded."""
    counted = scratch / "counted.txt"
    counter = _counter(port, qos, n, counted)
    with open(load_file(scratch, n), "rb") as lines:
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", HEARTBEAT_TOPIC,
                        "-q", str(qos), "-l"], stdin=lines, check=True)
    waiter = threading.Thread(target=counter.wait)
    waiter.start()
    waiter.join(60)
    if waiter.is_alive():  # messages lost: stop counting
        counter.terminate()
        waiter.join()
    return counted.read_bytes().count(b"received PUBLISH")


def drive_requests(port: int, n: int, in_flight: int) -> int:
    """``n`` requests through the request flow, ``in_flight`` at once (0: one at a time); the number answered."""
    shape = ["--latency-count", str(n), "--levels", ""] if in_flight == 0 else \
        ["--latency-count", "1", "--levels", str(in_flight), "--count", str(n)]
    driven = subprocess.run([sys.executable, str(BENCH_DIR / "request_driver.py"), "--port", str(port), *shape],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=user_environment())
    print(f"request driver: {driven.stdout.strip()}")
    return n if driven.returncode == 0 else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="evflow", choices=["evflow", "paho"],
                        help="paho: the floor under the same profiler, for comparison")
    parser.add_argument("--flow", default="forward", choices=["forward", "forward-heartbeat", "request"])
    parser.add_argument("--in-flight", type=int, default=64,
                        help="request flow: triggers kept in flight (0: one at a time, the latency leg)")
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1))
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--syscalls", action="store_true",
                        help="also count system calls by kind with strace -c (slows evflow down several times)")
    parser.add_argument("--out", type=Path, default=CACHE_DIR / "profile", help="where the collapsed stacks go")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shape = f"inflight{args.in_flight}" if args.flow == "request" else f"qos{args.qos}"
    stacks_path = args.out / f"{args.system}-{args.flow}-{shape}.collapsed.txt"
    system = Evflow() if args.system == "evflow" else PahoFloor()
    spy = py_spy()

    with tempfile.TemporaryDirectory() as scratch_dir, contextlib.ExitStack() as stack:
        scratch = Path(scratch_dir)
        if args.flow == "request":  # mosquitto's default config, as on a gateway and in the bench
            broker = stack.enter_context(private_broker())
            stack.enter_context(everest_responder(broker.port))
            sut, _start_s = stack.enter_context(started(system, "request", 0, broker.port, probe_topic=TRIGGER_TOPIC,
                                                        watch_topic=RESULT_TOPIC))
        else:
            broker = stack.enter_context(private_broker(*THROUGHPUT_BROKER_CONFIG))
            sut, _start_s = stack.enter_context(started(system, args.flow, args.qos, broker.port))
        # Blocking sampling (py-spy pauses evflow for each sample): --nonblocking reads stacks
        # while they change and charges frames to callers they never had.
        sampler = subprocess.Popen([spy, "record", "--pid", str(sut.pid), "--rate", str(args.rate),
                                    "--nolineno", "--format", "raw", "--output", str(stacks_path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        tracer = None
        if args.syscalls:
            tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(sut.pid)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # attached
        cpu_before, began = cpu_seconds(sut.pid), time.monotonic()
        kernel_before = kernel_counters(sut.pid)
        if args.flow == "request":
            received = drive_requests(broker.port, args.n, args.in_flight)
        else:
            received = forward_load(broker.port, args.qos, args.n, scratch)
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(sut.pid) - cpu_before
        kernel = {key: value - kernel_before[key] for key, value in kernel_counters(sut.pid).items()}
        syscall_table = ""
        if tracer is not None:
            tracer.send_signal(signal.SIGINT)
            syscall_table = tracer.communicate()[1]
        sampler.send_signal(signal.SIGINT)
        sampler.wait()

    samples: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith("process ") and not f.startswith("thread ")]
        total += count
        samples[component_of(frames)] += count
        if frames:
            self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    per_msg = cpu / max(received, 1) * 1e6
    print(f"{system.label}, {args.flow} flow, QoS {args.qos}: {received:,} of {args.n:,} forwarded in {elapsed:.2f} s "
          f"({received / elapsed:,.0f} msg/s), {per_msg:.1f} µs CPU per message (under py-spy), {total:,} samples")
    print("per message: " + ", ".join(f"{value / max(received, 1):.2f} {key}" for key, value in kernel.items())
          + " (syscr/syscw: read/write system calls; py-spy's pauses add context switches)")
    print(f"collapsed stacks: {stacks_path}\n")
    print("CPU per message by the component executing (leaf-first)")
    for label, count in samples.most_common():
        print(f"  {count / total * 100:5.1f}%  {count / total * per_msg:6.1f} µs  {label}")
    print("\nheaviest functions, self time")
    for frame, count in self_time.most_common(25):
        print(f"  {count / total * 100:5.1f}%  {count / total * per_msg:6.1f} µs  {frame}")
    print("\nheaviest functions, inclusive (evflow's own and paho's)")
    shown = 0
    for frame, count in inclusive.most_common():
        if ("evflow" in frame or "paho" in frame or "/runtime/" in frame or "/nodes/" in frame) and shown < 30:
            print(f"  {count / total * 100:5.1f}%  {count / total * per_msg:6.1f} µs  {frame}")
            shown += 1
    if syscall_table:
        print(f"\nsystem calls ({received:,} messages)\n{syscall_table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
