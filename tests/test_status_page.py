"""The monitor's status page (``runtime/monitor/page.html``) in a real headless Chromium driven by
Selenium, over a flow that runs in the same trio loop as the monitor's HTTP listener.

Selenium blocks: each browser session runs in a worker thread (``trio.to_thread.run_sync``) while the
flow and the listener go on. Every wait is a WebDriverWait deadline, never a sleep.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from evflow.runtime.monitor.app import Monitor
from evflow.runtime.monitor.http import serve_http
from evflow.runtime.mosquitto import MosquittoBroker
from evflow.runtime.testing import FlowUnderTest, run_flow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason=f"needs Chromium and its driver ({CHROMIUM}, {CHROMEDRIVER}): `sh scripts/bootstrap test` installs them "
    "(Debian packages chromium and chromium-driver)",
)

TAB = "t1"
EVIL = "<img src=x onerror=alert(1)>"
DEADLINE = 15.0


# ---- the browser and the page ----------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@asynccontextmanager
async def monitored(flow: list[dict[str, Any]], workdir: Path) -> AsyncIterator[tuple[FlowUnderTest, str]]:
    """The flow running, and the monitor over it on a free port: (the flow, the page's URL)."""
    async with run_flow(flow, workdir=workdir) as kit:
        monitor = Monitor(lambda: kit.engine)
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(serve_http, monitor.handle, "127.0.0.1", 0)
            try:
                yield kit, f"http://{host}:{port}/"
            finally:
                nursery.cancel_scope.cancel()


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, DEADLINE).until(condition, f"the page did not show {what} within {DEADLINE} s")


def text_of(driver: WebDriver, selector: str) -> str | None:
    return driver.execute_script("const el = document.querySelector(arguments[0]); return el && el.textContent;",
                                 selector)


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    until(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1", "its first state")


def console_problems(driver: WebDriver) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def select_node(driver: WebDriver, node_id: str) -> list[str]:
    """Click the node; the text of the trace entries the side panel shows."""
    driver.find_element(By.CSS_SELECTOR, f'[data-node-id="{node_id}"] rect').click()
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#trace li[data-trace]"), f"the trace of {node_id!r}")
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#trace li[data-trace]'), li => li.textContent);")


def save_screenshot(driver: WebDriver, tmp_path: Path) -> Path:
    path = tmp_path / "status-page.png"
    assert driver.save_screenshot(str(path)), "no screenshot"
    extra = os.environ.get("EVFLOW_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / path.name)
    print(f"status page screenshot: {path}" + (f" (and in {extra})" if extra else ""))
    return path


# ---- flows ---------------------------------------------------------------------------------------


def tab(label: str) -> dict[str, Any]:
    return {"id": TAB, "type": "tab", "label": label}


def inject(node_id: str, targets: list[str], **props: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "inject", "z": TAB, "name": "", "repeat": "0.2", "once": True, "onceDelay": 0.05,
            "topic": "", "payload": "beat", "payloadType": "str", "wires": [targets], **props}


def status_debug(node_id: str) -> dict[str, Any]:
    """A debug node that shows what it gets as its status, and prints nothing."""
    return {"id": node_id, "type": "debug", "z": TAB, "name": "", "active": False, "tosidebar": False,
            "console": False, "tostatus": True, "complete": "payload", "statusType": "auto", "wires": []}


def mqtt_flow(broker: MosquittoBroker) -> list[dict[str, Any]]:
    """A beat every 0.2 s, made a status by a change node, through the test broker to a debug node
    that shows it: a config node and one chain of wires."""
    green = '{"fill": "green", "shape": "dot", "text": "flowing"}'
    return [
        tab("Status page"),
        {"id": "b1", "type": "mqtt-broker", "name": "test broker", "broker": broker.host, "port": str(broker.port)},
        inject("tick", ["mark"], name="every 0.2 s", topic="evflow/test/beat"),
        {"id": "mark", "type": "change", "z": TAB, "name": "as a status", "wires": [["pub"]],
         "rules": [{"t": "set", "p": "payload", "pt": "msg", "to": green, "tot": "json"}]},
        {"id": "pub", "type": "mqtt out", "z": TAB, "name": "", "topic": "evflow/test/status", "qos": "0",
         "broker": "b1", "wires": []},
        {"id": "sub", "type": "mqtt in", "z": TAB, "name": "", "topic": "evflow/test/status", "qos": "0",
         "datatype": "json", "broker": "b1", "wires": [["show"]]},
        status_debug("show"),
    ]


# ---- tests ---------------------------------------------------------------------------------------


async def test_status_page_shows_the_flow_live(tmp_path: Path, broker: MosquittoBroker, browser: WebDriver) -> None:
    async with monitored(mqtt_flow(broker), tmp_path) as (kit, url):
        node_ids = [node.id for node in kit.engine.plan.nodes]

        def session() -> None:
            open_page(browser, url)
            missing = [i for i in node_ids if not browser.find_elements(By.CSS_SELECTOR, f'[data-node-id="{i}"]')]
            assert not missing, f"nodes not drawn: {missing}"
            assert browser.find_elements(By.CSS_SELECTOR, '.node.config[data-node-id="b1"]'), "b1 not as config"
            assert len(browser.find_elements(By.CSS_SELECTOR, "#flow path.wire")) == 3

            received = '[data-node-id="mark"] [data-counter="received"]'
            first = text_of(browser, received)
            assert first is not None and first.isdigit()
            until(browser, lambda d: text_of(d, received) != first, "the change node's received count moving")
            sent = '[data-node-id="sub"] [data-counter="sent"]'
            first = text_of(browser, sent)
            until(browser, lambda d: text_of(d, sent) != first, "the mqtt in node's sent count moving")
            until(browser, lambda d: text_of(d, '[data-node-id="show"] .status') == "flowing", "the debug status")
            until(browser, lambda d: text_of(d, "#badge") == "ready", "the flow ready")

            entries = select_node(browser, "mark")
            assert all("evflow/test/beat" in entry and '"flowing"' in entry for entry in entries), entries
            assert text_of(browser, "#panel-title") == "as a status"
            save_screenshot(browser, tmp_path)

            browser.set_window_size(800, 700)  # narrow: the drawing scrolls, the page does not
            assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            problems = console_problems(browser)
            assert not problems, f"console errors or warnings: {problems}"

        await trio.to_thread.run_sync(session)


async def test_status_page_shows_names_and_messages_as_text(tmp_path: Path, browser: WebDriver) -> None:
    flow = [
        tab(f"tab {EVIL}"),
        inject("evil", ["show"], name=EVIL, topic=EVIL, payload="<script>alert(2)</script>"),
        status_debug("show"),
    ]
    async with monitored(flow, tmp_path) as (_kit, url):

        def session() -> None:
            open_page(browser, url)
            assert text_of(browser, '[data-node-id="evil"] [data-field="name"]') == EVIL
            until(browser, lambda d: text_of(d, '[data-node-id="show"] .status') == "<script>alert(2)</script>",
                  "the debug status")
            entries = select_node(browser, "evil")
            assert EVIL in entries[0] and "<script>alert(2)</script>" in entries[0], entries
            assert text_of(browser, "#panel-title") == EVIL
            assert not browser.find_elements(By.CSS_SELECTOR, "#flow img, img, script[src]")
            assert browser.execute_script("return document.scripts.length") == 1
            problems = console_problems(browser)
            assert not problems, f"console errors or warnings: {problems}"

        await trio.to_thread.run_sync(session)
