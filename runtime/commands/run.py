"""``evflow run``: run flow files until SIGINT/SIGTERM, then stop in phases (a second signal: at once)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from ..engine import FlowEngine
from ..flows import CredentialsError, FlowInvalid, load_plan
from ._running import run_trio

log = logging.getLogger("evflow.run")


async def run_flow(engine: FlowEngine) -> int:
    forced = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(engine.run)

            async def on_signals() -> None:
                async for signum in signals:
                    if engine_stopping.is_set():
                        nonlocal forced
                        forced = True
                        log.warning("%s again: stopping now, without finishing the shutdown", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s: stopping", signal.Signals(signum).name)
                    engine_stopping.set()
                    engine.request_stop()

            engine_stopping = trio.Event()
            nursery.start_soon(on_signals)
            await _wait_engine_done(engine, nursery)
    return 1 if forced else 0


async def _wait_engine_done(engine: FlowEngine, nursery: trio.Nursery) -> None:
    # engine.run returns after its last phase; then nothing else is needed in this nursery.
    await engine.stopped.wait()
    nursery.cancel_scope.cancel()


def run(args: argparse.Namespace) -> int:
    try:
        plan = load_plan(args.flows, credentials=args.credentials, node_red_credentials=args.node_red_credentials,
                         skip_unsupported=args.skip_unsupported)
    except CredentialsError as exc:
        print(f"evflow run: error: {exc}", file=sys.stderr)
        return 1
    except FlowInvalid as invalid:
        for problem in invalid.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in plan.warnings:
        log.warning("%s", warning)
    engine = FlowEngine(plan, stop_timeout=args.stop_timeout, drain_timeout=args.drain_timeout,
                        close_timeout=args.close_timeout)
    return run_trio("run", run_flow, engine)
