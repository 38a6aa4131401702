"""How long the dashboard's overview takes with N tasks in the read models.

    .venv/bin/python bench/dashboard_overview.py [--tasks 100000] [--queues 4] [--runs 20] [--browser]

1. Fold N tasks into a fresh projection store with every view (`Projector.apply`, the
   gateway's own code; no broker: the log's content is what matters here, not how it got
   there). Over the last hour: 70% completed (submit, assign, start, complete), 2% failed
   twice and dead-lettered, the rest waiting in four priorities.
2. Serve that store with the gateway app (uvicorn on a free loopback port).
3. Time `GET /ui/api/overview` (what the overview page reads) `--runs` times and print
   min / median / max, then `--runs` successive pages of the task list under a few
   filters; with `--browser`, also the whole page in headless chromium, from
   navigation to the queues drawn, the same number of times.
Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import uvicorn

from projections.gateway.app import create_app
from projections.gateway.auth import Auth
from projections.gateway.deps import Runtime
from projections.projector import Projector
from projections.store import Store
from projections.views import all_views
from taskfold.log.eventlog import Recorded
from taskfold.core.testing import Events

PRIORITIES = ("critical", "high", "medium", "low")
BATCH = 5000  # events per Projector.apply (one write batch)


def events_of(queue: str, tasks: int, start_ms: int, span_ms: int):
    """The events of one queue: two agents, then each task's life, spread over the span."""
    e = Events(queue=queue, now=start_ms)
    yield e.join(f"{queue}-a1", slots=100, at=start_ms)
    yield e.join(f"{queue}-a2", slots=100, at=start_ms)
    for i in range(tasks):
        at = start_ms + span_ms * i // tasks
        task, agent = f"{queue}-t{i:07d}", f"{queue}-a{1 + i % 2}"
        yield e.submit(task, at=at, priority=PRIORITIES[i % 4], task_type="echo", max_attempts=2)
        roll = i % 100
        if roll < 70:
            yield e.assign(task, agent, at=at + 50)
            yield e.start(task, agent, at=at + 60)
            yield e.complete(task, agent, at=at + 60 + i % 500)
        elif roll < 72:
            for attempt in (1, 2):
                yield e.assign(task, agent, attempt=attempt, at=at + 50 * attempt)
                yield e.fail(task, agent, attempt=attempt, retryable=True, at=at + 50 * attempt + 10)


def build(path: Path, tasks: int, queues: int) -> int:
    """Fold the tasks into a store at `path`; the events applied."""
    store = Store(path)
    projector = Projector(store, all_views())
    now = int(time.time() * 1000)
    applied = 0
    for p in range(queues):
        offset, batch = 0, []
        for event in events_of(f"q{p}", tasks // queues, now - 3_600_000, 3_500_000):
            batch.append(Recorded(event, p, offset, 0))
            offset += 1
            if len(batch) == BATCH:
                projector.apply("events", batch)
                applied, batch = applied + len(batch), []
        if batch:
            projector.apply("events", batch)
            applied += len(batch)
    store.close()
    return applied


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(path: Path, port: int) -> uvicorn.Server:
    runtime = Runtime(live=SimpleNamespace(store=Store(path, read_only=True)), log=None,  # type: ignore[arg-type]
                      auth=Auth.disabled())
    server = uvicorn.Server(uvicorn.Config(create_app(runtime=runtime), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.05)
    return server


def api_times(url: str, runs: int) -> tuple[list[float], dict]:
    times, body = [], {}
    with httpx.Client(timeout=60) as client:
        for _ in range(runs):
            t0 = time.perf_counter()
            res = client.get(f"{url}/ui/api/overview")
            times.append((time.perf_counter() - t0) * 1000)
            res.raise_for_status()
            body = res.json()
    return times, body


def page_times(url: str, runs: int, **filters: str) -> list[float]:
    """Milliseconds per tasks page, following `next_cursor` for `runs` pages."""
    times, cursor = [], None
    with httpx.Client(timeout=60) as client:
        for _ in range(runs):
            t0 = time.perf_counter()
            params = {**filters, "limit": 50, **({"cursor": cursor} if cursor else {})}
            res = client.get(f"{url}/ui/api/tasks", params=params)
            times.append((time.perf_counter() - t0) * 1000)
            res.raise_for_status()
            cursor = res.json()["next_cursor"]
            if cursor is None:
                break
    return times


def browser_times(url: str, runs: int) -> list[float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
    times = []
    try:
        for _ in range(runs):
            driver.get("about:blank")
            t0 = time.perf_counter()
            driver.get(f"{url}/#/overview")
            WebDriverWait(driver, 60, poll_frequency=0.01).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "section.queue"))
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    return times


def spread(times: list[float]) -> str:
    return f"min {min(times):.1f} ms, median {statistics.median(times):.1f} ms, max {max(times):.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--queues", type=int, default=4)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--browser", action="store_true", help="also time the whole page in headless chromium")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    try:
        t0 = time.perf_counter()
        events = build(root / "store", args.tasks, args.queues)
        print(f"folded {args.tasks:,} tasks ({events:,} events) into the views in {time.perf_counter() - t0:.0f} s",
              flush=True)
        port = free_port()
        server = serve(root / "store", port)
        url = f"http://127.0.0.1:{port}"
        api, body = api_times(url, args.runs)
        waiting = sum(q["depth"] for q in body["queues"])
        print(f"GET /ui/api/overview ({len(body['queues'])} queues, {waiting:,} waiting): {spread(api)}")
        for filters in ({}, {"state": "queued", "queue": "q0"}, {"priority": "low"}, {"q": "q1-t00042"}):
            print(f"GET /ui/api/tasks {filters or '(no filter)'}, 50 a page, following the cursor: "
                  f"{spread(page_times(url, args.runs, **filters))}")
        page = browser_times(url, args.runs) if args.browser else []
        if page:
            print(f"overview page in chromium, navigation to queues drawn: {spread(page)}")
        server.should_exit = True
        print(json.dumps({"bench": "dashboard_overview", "tasks": args.tasks, "events": events, "runs": args.runs,
                          "api_ms_median": round(statistics.median(api), 1),
                          "page_ms_median": round(statistics.median(page), 1) if page else None}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
