"""What the monitor (`evflow run --http`, issue 18) costs, side by side in one run, as ratios.

    .venv/bin/python bench/monitor_cost.py [--baseline REV] [--n 20000] [--rounds 3] [--idle 20]

Three evflows on the same legs (bench/run.py's forwarding throughput at QoS 0, and its idle leg):

* baseline: evflow at REV (default: the last commit before the monitor), installed into a venv of
  its own under the bench's cache: what "do not move" is measured against;
* off: this tree, listener off (the default);
* on: this tree with ``--http``, scraped as a person and Prometheus would: ``/metrics`` and the status
  page's ``/api/state`` once a second each, from a thread of this script.

Each figure is the median over rounds: CPU µs per forwarded message, idle and peak RSS, start to the
first forwarded message, idle CPU. The report prints each and the ratios off/baseline, on/off.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench's modules, when run from anywhere

from common import CACHE_DIR  # noqa: E402
from legs import LegFailed, idle, throughput  # noqa: E402
from systems import Evflow, Running  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The monitor came with runtime/monitor/: the baseline is the commit before the one that added it.
MONITOR_FILE = "runtime/monitor/__init__.py"


def baseline_rev() -> str:
    added = subprocess.run(["git", "log", "--diff-filter=A", "--format=%H", "--", MONITOR_FILE],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not added:
        raise SystemExit("monitor_cost: runtime/monitor/ is not committed yet: give --baseline REV")
    return added[-1] + "~1"


def install_baseline(rev: str) -> Path:
    """evflow at ``rev`` in a venv of its own (made once per commit), as a user would install it."""
    commit = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    venv = CACHE_DIR / f"evflow-{commit[:12]}"
    script = venv / "bin" / "evflow"
    if script.exists():
        return script
    with tempfile.TemporaryDirectory(prefix="evflow-baseline-") as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(tree)],
                           check=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=True)
    return script


class Installed(Evflow):
    """evflow from another installation's script."""

    def __init__(self, script: Path, label: str) -> None:
        super().__init__()
        self.command = [str(script)]
        self.name = self.label = label


class Scraper:
    """GETs ``paths`` once a second each until stopped."""

    def __init__(self, port: int, paths: tuple[str, ...]) -> None:
        self.port, self.paths = port, paths
        self.stopped = threading.Event()
        self.answers = 0
        self.failures = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            for path in self.paths:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as answer:
                        answer.read()
                    self.answers += 1
                except OSError:
                    self.failures += 1  # still starting: the legs check forwarding, not this

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


class Monitored(Evflow):
    """This tree's evflow with the listener on and scraped."""

    def __init__(self) -> None:
        super().__init__()
        self.name = self.label = "on"
        self.scrapers: list[Scraper] = []
        self.answers = self.failures = 0

    def start(self, kind: str, qos: int, port: int, workdir: Path) -> Running:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            http_port = probe.getsockname()[1]
        self.run_options = ["--http", f"127.0.0.1:{http_port}"]
        running = super().start(kind, qos, port, workdir)
        self.scrapers.append(Scraper(http_port, ("/metrics", "/api/state")))
        return running

    def stop_scrapers(self) -> None:
        for scraper in self.scrapers:
            scraper.stop()
            self.answers += scraper.answers
            self.failures += scraper.failures
        self.scrapers.clear()


def measure(system: Any, n: int, idle_s: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="evflow-monitor-cost-") as scratch:
        forward = throughput(system, "forward", 0, n, Path(scratch))
    _leg_done(system)
    if forward["lost"]:
        raise LegFailed(f"{system.label}: {forward['lost']} of {n} messages lost")
    quiet = idle(system, idle_s)
    _leg_done(system)
    return {"cpu_us_per_msg": forward["cpu_us_per_msg"], "idle_rss_mb": forward["idle_rss_mb"],
            "peak_rss_mb": forward["peak_rss_mb"], "start_s": forward["start_s"],
            "idle_cpu_percent": quiet["cpu_percent"]}


def _leg_done(system: Any) -> None:
    if isinstance(system, Monitored):
        system.stop_scrapers()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="the commit to compare with (default: before the monitor)")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=20.0, metavar="S", help="seconds of the idle leg")
    args = parser.parse_args()
    rev = args.baseline or baseline_rev()
    monitored = Monitored()
    systems: dict[str, Any] = {"baseline": Installed(install_baseline(rev), "baseline"), "off": Evflow(),
                               "on": monitored}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
    for _ in range(args.rounds):
        for name, system in systems.items():  # interleaved: a drift of the machine hits all three
            rounds[name].append(measure(system, args.n, args.idle))
    figures = {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
               for name, results in rounds.items()}
    print(f"evflow's monitor: baseline {rev}, median of {args.rounds} rounds; {args.n} messages at QoS 0, "
          f"idle leg {args.idle:g} s; 'on' scraped /metrics and /api/state once a second "
          f"({monitored.answers} answers, {monitored.failures} failed while it started)")
    print(f"{'figure':22s} {'baseline':>10s} {'off':>10s} {'on':>10s} {'off/base':>9s} {'on/off':>8s}")
    for key in figures["off"]:
        base, off, on = figures["baseline"][key], figures["off"][key], figures["on"][key]
        print(f"{key:22s} {base:10.3f} {off:10.3f} {on:10.3f} {off / base:8.2f}x {on / off:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
