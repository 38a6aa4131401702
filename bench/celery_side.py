"""The standard workload on Celery with Redis (threads pool), for the comparison mode.

Starts Debian's `redis-server` on a free loopback port (installing it with apt-get when it
is missing and we are root), `agents` Celery workers with `-P threads -c slots` and
prefetch 1, submits the workload with Redis priorities, and reads each task's clock
readings back from a Redis list. Nothing of taskfold is used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from workload import PRIORITIES, Spec, Timing

HERE = Path(__file__).resolve().parent
CELERY_PRIORITY = dict(zip(PRIORITIES, (0, 3, 6, 9), strict=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], check=True,
                       stdout=subprocess.DEVNULL, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        path = shutil.which("redis-server")
    if path is None:
        raise SystemExit("the Celery comparison needs Debian's redis-server: apt-get install redis-server")
    return path


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class CeleryRig:
    """Redis and Celery workers, started once and reused across runs."""

    def __init__(self, agents: int, slots: int) -> None:
        import redis

        self.dir = Path(tempfile.mkdtemp(prefix="taskfold-celery-"))
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self.redis_proc = subprocess.Popen(
            [redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.redis = redis.Redis.from_url(self.url)
        wait_until(self._redis_up, 10, "redis-server")
        env = {**os.environ, "BENCH_REDIS_URL": self.url, "PYTHONPATH": str(HERE)}
        self.workers = [
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", "threads", "-c", str(slots),
                 "--prefetch-multiplier", "1", "-Q", "bench", "-n", f"w{i}@bench", "--without-gossip",
                 "--without-mingle", "--without-heartbeat", "-O", "fair", "--loglevel", "WARNING"],
                cwd=HERE, env=env, stdout=open(self.dir / f"w{i}.log", "wb"), stderr=subprocess.STDOUT)
            for i in range(agents)
        ]
        os.environ["BENCH_REDIS_URL"] = self.url
        sys.path.insert(0, str(HERE))
        import celery_app

        celery_app.app.conf.broker_url = self.url
        # A rig started earlier in this process (the other mode) left the app's connection
        # pools on its Redis, stopped since; Celery drops them after a fork, and so do we.
        celery_app.app._after_fork()
        self.app = celery_app
        try:
            wait_until(self._workers_up, 60, "Celery workers")
        except BaseException:
            self.stop()  # leave no Redis or Celery worker behind
            raise

    def _redis_up(self) -> bool:
        try:
            return bool(self.redis.ping())
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    def _workers_up(self) -> bool:
        replies = self.app.app.control.ping(timeout=0.5) or []
        return len(replies) >= len(self.workers)

    def processes(self) -> dict[str, psutil.Process]:
        out = {"redis": psutil.Process(self.redis_proc.pid)}
        out.update({f"celery-worker-{i}": psutil.Process(p.pid) for i, p in enumerate(self.workers)})
        return out

    def run(self, specs: list[Spec], sleep_ms: int, rate: float | None) -> list[Timing]:
        """Submit every task (at `rate` per second, or all at once) and wait for all of them."""
        self.redis.delete(self.app.DONE)
        priority = {s.task_id: s.priority for s in specs}
        started = time.perf_counter()
        for i, spec in enumerate(specs):
            if rate:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            self.app.work.apply_async((spec.task_id, time.time_ns(), sleep_ms),
                                      priority=CELERY_PRIORITY[spec.priority])
        timings = []
        deadline = time.monotonic() + 600
        while len(timings) < len(specs):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Celery finished {len(timings)} of {len(specs)} tasks in 600 s")
            item = self.redis.blpop([self.app.DONE], timeout=5)
            if item is not None:
                r = json.loads(item[1])
                timings.append(Timing(r["id"], priority[r["id"]], r["submitted"], r["started"], r["finished"]))
        return timings

    def stop(self) -> None:
        for p in self.workers:
            p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.redis_proc.terminate()
        self.redis_proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
