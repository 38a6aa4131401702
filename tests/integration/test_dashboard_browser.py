"""The dashboard in a real browser (issue 14): Debian's headless chromium, driven by selenium,
against a real `taskfold dev --demo` (its own Tansu broker, worker, demo agents and gateway).

Each page's screenshot goes to test-artifacts/screenshots/. `scripts/ensure-chromium`
installs chromium and chromium-driver when they are missing (the README's test command and
.ci/run run it first).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.integration.test_dev_supervision import dev_env, running_dev
from tests.integration.test_gateway_cli import running_gateway

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
UP_S = 90.0
SETTLE_S = 60.0  # a few demo tasks through a busy shared machine
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync")
ECHOES = [f"echo-{i}" for i in range(1, 6)]


def until(condition: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """condition()'s first truthy value (an exception counts as not yet); AssertionError naming `what` after
    the deadline."""
    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while True:
        try:
            found = condition()
            if found:
                return found
        except Exception as exc:  # noqa: BLE001 - a page still loading: try again until the deadline
            last = exc
        assert time.monotonic() < deadline, f"{what} did not happen in {deadline_s} s (last error: {last!r})"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A `taskfold dev --demo` with a free gateway port: (gateway URL, its directory)."""
    cwd = tmp_path_factory.mktemp("dashboard-dev")
    with running_dev(cwd, "--demo", "--gateway-port", "0") as (_, output):
        line = next(l for l in output.wait_for("Ctrl-C to stop", UP_S).splitlines() if l.startswith("gateway: "))
        yield line.split()[1], cwd


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium and chromium-driver are missing: run scripts/ensure-chromium"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="taskfold-chromium-")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1000"):
        options.add_argument(flag)
    b = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield b
    finally:
        b.quit()
        shutil.rmtree(profile, ignore_errors=True)


def submit(url: str, task_id: str, task_type: str, payload: dict, **fields: Any) -> None:
    body = {"queue": "demo", "task_type": task_type, "task_id": task_id, "payload": payload, **fields}
    res = httpx.post(f"{url}/v1/tasks", json=body, timeout=30)
    assert res.status_code == 201, res.text


def task(url: str, task_id: str, headers: dict | None = None) -> dict:
    return httpx.get(f"{url}/v1/tasks/{task_id}", headers=headers, timeout=30).json()


@pytest.fixture(scope="module")
def seeded(dev: tuple[str, Path]) -> dict[str, Any]:
    """Five echoes completed, then a task that fails until it is dead-lettered; `before_dead` is a
    moment after the echoes and before the dead letter's first event."""
    url, _ = dev
    for i, task_id in enumerate(ECHOES):
        submit(url, task_id, "echo", {"i": i}, priority="high")
    until(lambda: all(task(url, t)["state"] == "completed" for t in ECHOES), SETTLE_S, "the echoes completing")
    before_dead = max(task(url, t)["finished_at"] for t in ECHOES)
    submit(url, "doomed", "flaky", {"p": 1.0}, max_attempts=2, backoff={"initial_ms": 10})
    until(lambda: task(url, "doomed")["state"] == "dead_lettered", SETTLE_S, "the flaky task dead-lettered")
    return {"url": url, "before_dead": before_dead}


def shot(b: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    b.save_screenshot(str(SHOTS / f"{name}.png"))


def open_page(b: WebDriver, url: str, fragment: str, ready: str) -> None:
    """Load a page and wait until the element `ready` (CSS) is on it."""
    b.get(f"{url}/{fragment}")
    until(lambda: b.find_elements(By.CSS_SELECTOR, ready), 30, f"{ready} on {fragment}")


def text(b: WebDriver, css: str) -> str:
    return b.find_element(By.CSS_SELECTOR, css).text


def test_every_page_shows_the_read_models_now_and_as_of_a_past_moment(browser: WebDriver, seeded: dict) -> None:
    b, url = browser, seeded["url"]
    open_page(b, url, "#/overview", "#completed-demo")
    until(lambda: text(b, "#completed-demo") == "5" and text(b, "#dead-demo") == "1", 30, "overview counts")
    assert text(b, "#depth-demo") == "0" and text(b, "#agents-online") == "2"
    assert "submit→complete" in text(b, "[data-queue=demo] table.latency")
    shot(b, "overview")

    open_page(b, url, "#/tasks?queue=demo", "#task-table tbody tr")
    states = {r.get_attribute("data-task-id"): r.get_attribute("data-state")
              for r in b.find_elements(By.CSS_SELECTOR, "#task-table tbody tr")}
    assert states == {**dict.fromkeys(ECHOES, "completed"), "doomed": "dead_lettered"}
    shot(b, "tasks")
    open_page(b, url, "#/tasks?state=dead_lettered", "#task-table tbody tr")
    rows = b.find_elements(By.CSS_SELECTOR, "#task-table tbody tr")
    assert [r.get_attribute("data-task-id") for r in rows] == ["doomed"]

    open_page(b, url, "#/task/echo-1", "#timeline li[data-type=TaskCompleted]")
    timeline = b.find_elements(By.CSS_SELECTOR, "#timeline li")
    assert [li.get_attribute("data-type") for li in timeline] == ["TaskSubmitted", "TaskAssigned", "TaskStarted",
                                                                  "TaskCompleted"]
    assert {li.get_attribute("data-verdict") for li in timeline} == {"accepted"}
    until(lambda: "completed" in text(b, "#task-state"), 10, "the task's state")
    explain = text(b, "#timeline li[data-type=TaskAssigned] .explain")
    assert "demo-agent-1" in explain and "demo-agent-2" in explain and "strategy" in explain
    assert b.find_elements(By.CSS_SELECTOR, "#attempts tr[data-attempt='1']")

    open_page(b, url, "#/agents", "[data-agent=demo-agent-2]")
    assert len(b.find_elements(By.CSS_SELECTOR, "section.agent")) == 2
    assert "closed" in text(b, "[data-agent=demo-agent-1] table")
    assert "last heartbeat" in text(b, "[data-agent=demo-agent-1]")
    shot(b, "agents")

    open_page(b, url, "#/dead-letters", "#dead-letters tbody tr")
    assert "attempts exhausted" in text(b, "#dead-letters tr[data-task-id=doomed]")
    shot(b, "dead-letters")

    as_of = seeded["before_dead"]  # the same pages, folded up to before the dead letter existed
    open_page(b, url, f"#/overview?as_of={as_of}", "#completed-demo")
    assert text(b, "#completed-demo") == "5" and text(b, "#dead-demo") == "0"
    assert f"As of {as_of}" in text(b, "#asof-banner")
    shot(b, "overview-as-of")
    open_page(b, url, f"#/dead-letters?as_of={as_of}", "#no-dead-letters")
    open_page(b, url, f"#/tasks?queue=demo&as_of={as_of}", "#task-table tbody tr")
    assert len(b.find_elements(By.CSS_SELECTOR, "#task-table tbody tr")) == 5


def test_a_task_is_followed_live_until_it_completes_without_a_reload(browser: WebDriver, seeded: dict,
                                                                   dev: tuple[str, Path]) -> None:
    b, url = browser, seeded["url"]
    submit(url, "live-1", "streaming", {"chunks": 30, "delay_ms": 150})
    open_page(b, url, "#/task/live-1", "#task-state")
    b.execute_script("window.__sameDocument = 'yes'")
    first = until(lambda: text(b, "#task-state"), 10, "the task's state")
    assert first != "completed", "the task finished before the page showed it: nothing was followed live"
    until(lambda: b.find_elements(By.CSS_SELECTOR, "#transcript .chunk"), 60, "the first progress chunk")
    # the gateway dies mid-stream; dev restarts it on the same URL and the page's EventSource
    # resumes from its Last-Event-ID: the rest of the transcript arrives once, with no gap
    gateway = json.loads((dev[1] / ".taskfold" / "dev.json").read_text())["processes"]["gateway"]
    os.kill(gateway, signal.SIGKILL)
    until(lambda: text(b, "#live") == "finished", 120, "the stream's end after the gateway came back")
    live = b.find_element(By.ID, "live")
    assert int(live.get_attribute("data-reconnects") or 0) >= 1, "the stream never dropped: nothing resumed"
    assert live.get_attribute("data-duplicates") is None
    until(lambda: "completed" in text(b, "#task-state"), 30, "the header showing the task completed")
    types = [li.get_attribute("data-type") for li in b.find_elements(By.CSS_SELECTOR, "#timeline li")]
    assert types[0] == "TaskSubmitted" and types[-1] == "TaskCompleted"
    chunks = b.find_elements(By.CSS_SELECTOR, "#transcript .chunk")
    assert len(chunks) == 34 and chunks[1].get_attribute("data-kind") == "tool_call"  # 30 tokens + 4, in order
    assert b.execute_script("return window.__sameDocument") == "yes"  # never reloaded
    shot(b, "task-detail")
    b.set_window_size(420, 900)  # a phone: nothing wider than the window but the tables' own scrollers
    try:
        open_page(b, url, "#/overview", "#completed-demo")
        assert b.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(b, "overview-narrow")
        open_page(b, url, "#/task/live-1", "#timeline li[data-type=TaskCompleted]")
        assert b.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        shot(b, "task-detail-narrow")
    finally:
        b.set_window_size(1280, 1000)


def sign_in(b: WebDriver, url: str, token: str) -> None:
    b.get(f"{url}/#/dead-letters")
    until(lambda: b.find_element(By.ID, "token").is_displayed() or b.find_elements(By.ID, "signout"), 30, "the page")
    if b.find_elements(By.ID, "signout"):
        b.find_element(By.ID, "signout").click()
        until(lambda: b.find_element(By.ID, "token").is_displayed(), 10, "the sign-in form")
    b.find_element(By.ID, "token").send_keys(token)
    b.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    until(lambda: b.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr"), 30, "the dead letters after sign-in")


def test_a_reader_cannot_redrive_and_an_admin_can(browser: WebDriver, seeded: dict, dev: tuple[str, Path]) -> None:
    b, (_, cwd) = browser, dev
    env = {**dev_env(), "TASKFOLD_TOKENS": "read-tok:submitter+auditor,adm-tok:admin"}
    with running_gateway(env, cwd, "--name", "with-auth") as (url, _, _):
        b.get(f"{url}/#/overview")
        until(lambda: b.find_element(By.ID, "token").is_displayed(), 30, "the sign-in form")
        assert "read-tok" not in b.current_url
        sign_in(b, url, "read-tok")
        redrive = b.find_element(By.CSS_SELECTOR, "tr[data-task-id=doomed] button.redrive")
        assert not redrive.is_enabled()
        shot(b, "dead-letters-reader")
        # the button is only a hint: the gateway itself refuses the reader's session, CSRF token and all
        status = b.execute_async_script("""
            const done = arguments[0];
            fetch('/ui/session').then(r => r.json()).then(s => fetch('/v1/dead-letters/doomed/redrive',
                {method: 'POST', headers: {'X-CSRF-Token': s.csrf}})).then(r => done(r.status));""")
        assert status == 403
        assert task(url, "doomed", {"Authorization": "Bearer adm-tok"})["state"] == "dead_lettered"
        before = httpx.get(f"{url}/v1/tasks/doomed/history", headers={"Authorization": "Bearer adm-tok"})
        assert "TaskRedriven" not in before.text
        sign_in(b, url, "adm-tok")
        button = until(lambda: [x for x in b.find_elements(By.CSS_SELECTOR, "tr[data-task-id=doomed] button.redrive")
                                if x.is_enabled()], 30, "the admin's redrive button")
        button[0].click()
        until(lambda: b.find_elements(By.ID, "redriven-doomed"), 30, "the redrive answered")
        history = httpx.get(f"{url}/v1/tasks/doomed/history", headers={"Authorization": "Bearer adm-tok"}).json()
        redriven = [r for r in history["events"] if r["event"]["type"] == "TaskRedriven"]
        assert [r["verdict"]["outcome"] for r in redriven] == ["accepted"]  # once, by the admin (it fails again after)
        assert "admin" in redriven[0]["event"]["actor"]
