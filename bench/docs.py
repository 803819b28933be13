"""docs/benchmarks.md and its plot, from a run's results (run.py --docs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import report
from common import BENCH_DIR, CACHE_DIR, REPO_DIR

TOOLS_VENV = CACHE_DIR / "tools-venv"  # matplotlib here, py-spy too (bench/profile.py)

METHOD = """\
- **Systems.** evflow (`evflow run` on the flows in `bench/flows/`), Node-RED 4 from npm, headless
  (`bench/nodered/settings.js`: no editor, no HTTP server; flows in `bench/nodered/`), and the paho
  floor: `bench/paho_forwarder.py`, plain paho-mqtt with its own `loop_forever` (subscribe, parse the
  JSON integer, compare, publish). Every measurement ("leg") starts the system as a fresh process
  and gets its own mosquitto (`MosquittoBroker`, mosquitto's defaults otherwise). The systems take
  turns within each round; the tables show medians over the rounds.
- **Forwarding.** Receive EVerest's heartbeat topic → keep payload >= 1000 → publish. evflow runs it
  with `mqtt in` and with the `heartbeat` node (its `qos` set to the leg's). `mosquitto_pub -l` publishes N consecutive JSON integers (all >= 1000)
  at the leg's QoS, `mosquitto_sub -C N` counts them at the same QoS; the time runs from the start of
  `mosquitto_pub` to the last message counted. Each QoS level is its own process with its flow at that
  QoS. The throughput legs lift mosquitto's `max_queued_messages` limit (1000 per client by default),
  which would otherwise drop a QoS 1 burst at the broker. "lost": messages that never came out; such a
  row's msg/s is what came out over the time to the last one.
- **CPU per message.** User + system time of the system's process (`/proc/<pid>/stat`) during the
  run, divided by the messages forwarded.
- **Memory.** `/proc/<pid>/status`: VmRSS once started and settled (idle), VmHWM after the load (peak;
  the highest of the system's flows). Overload: QoS 0 input as fast as `yes | mosquitto_pub -l` sends
  it for the overload duration, far faster than any of the three forwards; "growth" is the VmRSS
  change over the last two thirds. The import floor is the RSS of a Python that has only imported
  trio, paho-mqtt, attrs and cattrs.
- **Idle CPU.** A 1 Hz heartbeat forwarded and the keepalive running (evflow's `keepalive` node, a 2 s
  inject in Node-RED), over the idle duration; `/proc/<pid>/stat` counts in 10 ms ticks.
- **Start.** From spawning the process to the first forwarded probe (a probe every 20 ms), with
  `.pyc` files in place (one unmeasured warm-up start per flow) and `PYTHONDONTWRITEBYTECODE` unset.
- **Requests.** `mqtt in` → `is-ca-certificate-installed` → `mqtt out` against
  `bench/everest_responder.py` (plain paho, the boolean twice as EVerest answers), on mosquitto's
  default configuration (Nagle on). The request floor is `bench/paho_requester.py` (plain paho,
  TCP_NODELAY and TCP_QUICKACK after each read); Node-RED does it by hand with two function nodes
  (envelope with a reply topic per request, first reply only). `bench/request_driver.py` times
  trigger → result: p50/p99 one at a time, then requests per second with 16, 64 and 256 in flight.
"""


NOTES = """\
- The machine has two cores, shared by mosquitto, `mosquitto_pub`, `mosquitto_sub` and the system
  under test: absolute rates move from round to round (the medians absorb part of it), the ratios
  between systems of one round less so.
- Peak RSS at QoS 1: mosquitto 2.0 stops honouring its window of 20 unacknowledged messages toward a
  client that publishes at QoS 1 itself, so the whole burst arrives faster than any of the three
  forwards it. The paho floor acknowledges on arrival and keeps every outgoing message beyond its 20
  in flight in a queue without bound (its default); evflow acknowledges a message once it is in a
  subscription's queue or backlog (at most `max_held` messages and `max_held_bytes` on
  `mqtt-broker`, 50,000 and 8 MiB) and keeps at most `window` publishes unacknowledged in `mqtt out`.
- Overload: mosquitto (default config) drops the QoS 0 messages a subscriber does not take beyond its
  per-client queue (its `$SYS/broker/publish/messages/dropped` counts them), so its memory stays small
  ("broker peak MB"); Node-RED reads whatever arrives into its own memory; evflow keeps reading (its
  reader never waits for a consumer), holds a bounded backlog and drops beyond it, counted; the floor
  stops reading and lets TCP push back.
- Request p50 moves more between rounds for evflow than for the floor (in the latest run 0.40 to
  0.57 ms against 0.32 to 0.34). Inside evflow a request takes one scheduler pass from the trigger
  to the request and one from the reply to the result, as many as the floor's own loop, but one at a
  time it spends about 1.8 times the floor's CPU per request (1.4 times over the whole leg): trio's
  run loop and the engine's layers, on two cores that the broker, the responder and the driver
  share with it.
- Idle CPU is read from the kernel's accounting in ticks of 10 ms: over a 30 s leg, 0.100 % is 3
  ticks and 0.133 % is 4; a longer leg (`--duration`) tells them apart better.
- A row with messages "lost" did not forward the burst: its msg/s and CPU per message are what came
  out, and say more about the loss than about speed.
"""


def ensure_plot_python() -> Path:
    """A venv of the bench cache with matplotlib: a plotting tool, not a dependency of evflow."""
    python = TOOLS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)], check=True)
    if subprocess.run([str(python), "-c", "import matplotlib"], capture_output=True).returncode != 0:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "matplotlib"], check=True)
    return python


def write(results: dict[str, Any], json_path: Path) -> list[Path]:
    docs_dir = REPO_DIR / "docs"
    docs_dir.mkdir(exist_ok=True)
    png = docs_dir / "benchmarks.png"
    subprocess.run([str(ensure_plot_python()), str(BENCH_DIR / "plot.py"), str(json_path), str(png)], check=True)
    meta = results["meta"]
    settings = meta["settings"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    text = f"""# Benchmarks

evflow side by side with Node-RED 4 and a bare paho-mqtt forwarder, the floor of any paho-based
runtime: what evflow costs beyond that floor is what its engine adds. Measured by `bench/` (issue 10).

Run everything (about 20 minutes) and rewrite this page with the results:

```sh
.venv/bin/python bench/run.py --docs
```

`--quick` is a shorter look; `--systems`, `--parts`, `--qos`, `--n`, `--rounds`, `--duration` choose
what runs (`bench/run.py --help`).

## Latest results

{meta['date']}, evflow from {meta['evflow_source']}{'; ' + meta['note'] if meta['note'] else ''}.
N = {settings['n']:,} messages per throughput leg,
{settings['rounds']} round(s) (medians), idle and overload legs of {settings['duration']:g} s,
{settings['latency_count']} requests one at a time and {settings['request_count']:,} per in-flight level.

Machine: {meta['nproc']} cores ({meta['cpu']}), {meta['memory_gb']} GB, Linux {meta['kernel']};
Python {meta['python']} ({versions}); {meta['mosquitto']}; Node-RED {meta['node_red']} on node
{meta['node']}.

![Throughput per QoS and RSS of evflow, the paho floor and Node-RED](benchmarks.png)

{report.render_markdown_tables(results['summary'])}
## Reading the tables

{NOTES}
## How it is measured

{METHOD}"""
    page = docs_dir / "benchmarks.md"
    # The soak's section (bench/soak.py --docs) is not measured here: keep it.
    previous = page.read_text() if page.exists() else ""
    soak = previous.find("\n## Soak test")
    if soak >= 0:
        following = previous.find("\n## ", soak + 1)
        text = text.rstrip() + "\n" + previous[soak:following if following >= 0 else len(previous)].rstrip() + "\n"
    page.write_text(text)
    return [page, png]
