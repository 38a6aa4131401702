"""HTTP submit throughput and read-your-write latency through the gateway.

    .venv/bin/python bench/http_submit.py [--tasks 5000] [--concurrency 16] [--queues 8] [--json]

Starts its own broker (TASKFOLD_BOOTSTRAP, a container or Tansu, as the tests do), creates
the topics, runs one `taskfold gateway` process (auth on) and, in this process, N
concurrent keep-alive HTTP connections that POST /v1/tasks until M tasks are submitted. Every POST
returns only once the gateway's projection has applied the event (read-your-write), so its
latency is append + ack + the projection reading the event back + the verdict. No scheduler
runs: a submit's verdict is the gateway's own fold. Prints submits/s and latency
p50/p95/p99/max, and with --json one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path


from taskfold.broker.harness import start_broker
from taskfold.broker.topics import TopicNames, ensure_topics
from taskfold.cli.cluster import LocalCluster, wait_for_ready_file
from workload import percentile  # bench/ is on sys.path when a script here runs

TOKEN = f"bench-{uuid.uuid4().hex}"
WARMUP = 50  # requests before the clock starts: connections, first fetches



async def run(args: argparse.Namespace) -> dict:
    broker = start_broker()
    topics = TopicNames(f"bench.{uuid.uuid4().hex[:8]}.")
    state = Path(tempfile.mkdtemp(prefix="taskfold-http-bench-"))
    os.environ["TASKFOLD_TOKENS"] = f"{TOKEN}:submitter"  # the gateway child inherits it
    try:
        await ensure_topics(broker.bootstrap, topics, partitions=args.partitions)
        cluster = LocalCluster(broker.bootstrap, topics, broker.is_tansu, state / "state", log_dir=state)
        ready = state / "gateway.json"
        process = cluster.gateway("bench-gateway", "--port", "0", "--ready-file", str(ready))
        try:
            found = wait_for_ready_file(process, ready, timeout=60)
            if found is None:
                raise RuntimeError(f"the gateway did not start:\n{cluster.output('bench-gateway')[-3000:]}")
            result = await measure(args, found["url"])
            return {**result, "broker": broker.kind}
        finally:
            cluster.stop_all(timeout=20)
    finally:
        broker.stop()


async def measure(args: argparse.Namespace, url: str) -> dict:
    await clients(url, WARMUP, args.concurrency, args.queues, "warmup", [])
    latencies: list[float] = []
    started = time.perf_counter()
    await clients(url, args.tasks, args.concurrency, args.queues, "task", latencies)
    elapsed = time.perf_counter() - started
    ms = [s * 1000 for s in latencies]
    return {
        "tasks": args.tasks, "concurrency": args.concurrency, "queues": args.queues, "seconds": round(elapsed, 2),
        "submits_per_s": round(args.tasks / elapsed, 1),
        "latency_ms": {"p50": round(percentile(ms, 50), 2), "p95": round(percentile(ms, 95), 2),
                       "p99": round(percentile(ms, 99), 2), "max": round(max(ms), 2)},
        "python": platform.python_version(), "cpus": os.cpu_count(),
    }


async def clients(url: str, total: int, concurrency: int, queues: int, prefix: str, latencies: list[float]) -> None:
    """`concurrency` keep-alive connections POSTing until `total` tasks are submitted; each answer must be 201.

    A bare HTTP/1.1 client on asyncio streams: on two cores a full client library spends
    about as much CPU per request as the gateway, and would measure itself.
    """
    host, port = url.removeprefix("http://").rsplit(":", 1)
    numbers = iter(range(total))

    async def one_client() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for n in numbers:
                body = json.dumps({"queue": f"bench-{n % queues}", "task_type": "echo", "task_id": f"{prefix}-{n}",
                                   "payload": {"n": n}}).encode()
                head = (f"POST /v1/tasks HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
                sent = time.perf_counter()
                writer.write(head.encode() + body)
                status, answer = await read_response(reader)
                latencies.append(time.perf_counter() - sent)
                if status != 201:
                    raise RuntimeError(f"task {n}: {status} {answer[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(one_client() for _ in range(concurrency)))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 response with a Content-Length (all the gateway's JSON answers)."""
    status = int((await reader.readline()).split()[1])
    length = None
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise RuntimeError("a response without Content-Length")
    return status, await reader.readexactly(length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queues", type=int, default=8, help="queues the tasks are spread over")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    lat = result["latency_ms"]
    print(f"{result['tasks']} submits over HTTP, {result['concurrency']} clients, broker {result['broker']}: "
          f"{result['submits_per_s']:,.1f} submits/s in {result['seconds']} s")
    print(f"read-your-write POST latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
