"""``evflow run``: run flow files until SIGINT/SIGTERM, then stop in phases (a second signal: at once).

SIGHUP reloads: the flow files are read and validated again; only when they are valid do the
running flows drain and stop and the new ones start. An invalid file leaves the running flows as
they are, and the log says why.

Under systemd (``NOTIFY_SOCKET``): READY=1 once the flows run, STATUS= lines, STOPPING=1 when a
stop begins, and WATCHDOG=1 while the loop is responsive and the flow is ready (see
:mod:`evflow.runtime.systemd`). With ``--http``: the monitor (:mod:`evflow.runtime.monitor`).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ..engine import FlowEngine
from ..flows import CredentialsError, FlowInvalid, load_plan
from ..validate import FlowPlan
from ._running import run_trio

if TYPE_CHECKING:
    from ..systemd import Notifier

log = logging.getLogger("evflow.run")


class _Flows:
    """The flows that run now: one engine, replaced on a reload (None in between)."""

    def __init__(self) -> None:
        self.engine: FlowEngine | None = None
        self.stopping = trio.Event()
        self.forced = False


def _load(args: argparse.Namespace) -> FlowPlan:
    return load_plan(args.flows, credentials=args.credentials, node_red_credentials=args.node_red_credentials,
                     skip_unsupported=args.skip_unsupported)


def _engine(plan: FlowPlan, args: argparse.Namespace) -> FlowEngine:
    return FlowEngine(plan, stop_timeout=args.stop_timeout, drain_timeout=args.drain_timeout,
                      close_timeout=args.close_timeout, node_log_levels=dict(args.node_log_level or ()))


async def run_flow(plan: FlowPlan, args: argparse.Namespace, notifier: Notifier | None = None) -> int:
    flows = _Flows()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            reload_requests, reloads = trio.open_memory_channel[None](1)
            nursery.start_soon(_on_signals, signals, flows, reload_requests, nursery.cancel_scope, notifier)
            if args.http is not None:
                from ..monitor.app import Monitor
                from ..monitor.http import serve_http

                host, port = args.http
                address = await nursery.start(serve_http, Monitor(lambda: flows.engine).handle, host, port)
                log.info("monitor on http://%s/ (/ready, /metrics, /healthz)", _host_port(*address))
            if notifier is not None and notifier.watchdog_interval is not None:
                from ..monitor.readiness import flow_readiness
                from ..systemd import keep_watchdog

                await nursery.start(partial(keep_watchdog, notifier, lambda: flow_readiness(flows.engine).ready,
                                            reason=lambda: flow_readiness(flows.engine).reason))
            while not flows.stopping.is_set():
                next_plan = await _run_until_stopped(_engine(plan, args), flows, reloads, args, notifier)
                if next_plan is None:
                    break
                plan = next_plan
            nursery.cancel_scope.cancel()
    return 1 if flows.forced else 0


async def _run_until_stopped(engine: FlowEngine, flows: _Flows, reloads: trio.MemoryReceiveChannel[None],
                             args: argparse.Namespace, notifier: Notifier | None) -> FlowPlan | None:
    """Run ``engine`` until it stops: asked to by a signal (returns None), or for a reload with a
    valid new plan (returns it)."""
    new_plan: FlowPlan | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        flows.engine = engine
        if flows.stopping.is_set():  # a stop signal came while the flows started
            engine.request_stop()
        if notifier is not None:
            notifier.ready(f"flows running: {len(engine.plan.nodes)} nodes")

        async def reload_when_asked() -> None:
            nonlocal new_plan
            async for _ in reloads:
                candidate = _reloaded(args)
                if candidate is not None and not flows.stopping.is_set():
                    new_plan = candidate
                    if notifier is not None:
                        notifier.status("reloading: the flows drain and stop, the new ones start")
                    engine.request_stop()
                    return

        nursery.start_soon(reload_when_asked)
        await engine.stopped.wait()
        flows.engine = None
        nursery.cancel_scope.cancel()
    return new_plan


def _reloaded(args: argparse.Namespace) -> FlowPlan | None:
    log.info("SIGHUP: reading the flow files again")
    try:
        plan = _load(args)
    except CredentialsError as exc:
        log.error("reload refused, the running flows go on: %s", exc)
        return None
    except FlowInvalid as invalid:
        for problem in invalid.problems:
            log.error("reload refused, the running flows go on: %s", problem)
        return None
    for warning in plan.warnings:
        log.warning("%s", warning)
    log.info("reload: the flow files are valid; stopping the running flows to start them")
    return plan


async def _on_signals(signals: Any, flows: _Flows, reload_requests: trio.MemorySendChannel[None],
                      everything: trio.CancelScope, notifier: Notifier | None) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            if not flows.stopping.is_set():
                try:
                    reload_requests.send_nowait(None)
                except trio.WouldBlock:
                    log.info("SIGHUP: a reload is already on its way")
            continue
        if flows.stopping.is_set():
            flows.forced = True
            log.warning("%s again: stopping now, without finishing the shutdown", name)
            everything.cancel()
            return
        log.info("%s: stopping", name)
        flows.stopping.set()
        if notifier is not None:
            notifier.stopping("stopping: the flows drain and close")
        if flows.engine is not None:
            flows.engine.request_stop()


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run(args: argparse.Namespace) -> int:
    try:
        plan = _load(args)
    except CredentialsError as exc:
        print(f"evflow run: error: {exc}", file=sys.stderr)
        return 1
    except FlowInvalid as invalid:
        for problem in invalid.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in plan.warnings:
        log.warning("%s", warning)
    if args.http is not None and args.http[0] != "localhost" and not ipaddress.ip_address(args.http[0]).is_loopback:
        log.warning("monitor on %s: readable (read-only) by anyone who can reach this address",
                    _host_port(*args.http))
    from ..systemd import Notifier

    notifier = Notifier.from_environment()
    try:
        return run_trio("run", run_flow, plan, args, notifier)
    finally:
        if notifier is not None:
            notifier.close()
