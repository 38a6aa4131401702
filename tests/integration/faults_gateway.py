"""Fault scenario 8: an HTTP gateway SIGKILLed while clients wait on read-your-write submits.

Clients submit over HTTP with an Idempotency-Key each and wait for the verdict. Mid-load
the gateway is SIGKILLed; a second gateway (its own fresh store) starts, and every client
whose request died retries the same key there. What must hold:

- every key ends with exactly one admitted task, whatever the first gateway managed to
  append before it died (a retry of a landed write is answered 200 "duplicate" with the
  original task; one that never landed is answered 201);
- every 2xx names the task the log admitted for that key;
- read-your-write at the second gateway: right after its 2xx, a GET there finds the task;
- every task completes, and the audit of the whole log passes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from faults_support import FaultRun, Outcome
from taskfold.cli.cluster import wait_for_ready_file
from taskfold.core.events import TaskSubmitted

CLIENTS = 8
RETRY_S = 0.2
KILL_MOMENT_S = 20.0  # how long to look for a landed but unanswered submit to kill on


@dataclass
class Gateway:
    """The gateway clients talk to: the first one until `replaced` is set, then its replacement."""

    first: str
    url: str = ""
    replaced: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.url = self.first


@dataclass
class Answer:
    """The last answer one key got, and how it got there."""

    status: int = 0
    task_id: str | None = None
    duplicate: bool = False
    url: str = ""
    tries: int = 0
    errors: list[str] = field(default_factory=list)  # why each earlier try did not answer
    read_back: int | None = None  # the status of a GET at the same gateway right after a 2xx


async def start_gateway(run: FaultRun, name: str, state: Path, timeout: float) -> str:
    """Start a gateway with a fresh store; its URL once it listens and its projection has caught up."""
    ready = state / f"{name}.ready.json"
    process = run.cluster.gateway(name, "--no-auth", "--fresh", "--port", "0", "--ready-file", str(ready))
    info = await asyncio.to_thread(wait_for_ready_file, process, ready, timeout)
    if info is None:
        raise RuntimeError(f"gateway {name} did not start:\n{run.cluster.output(name)[-3000:]}")
    url = info["url"]
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while (await client.get("/readyz")).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway {name} not ready within {timeout} s")
            await asyncio.sleep(0.05)  # polling an HTTP condition with a deadline
    return url


async def submit_until_answered(gateway: Gateway, key: str, queue: str, answer: Answer, timeout: float) -> None:
    """POST one task with `key` until a gateway answers 2xx; a dead gateway's error waits for the next one."""
    body = {"queue": queue, "task_type": "echo", "payload": {"key": key}}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = gateway.url
        answer.tries += 1
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                response = await client.post("/v1/tasks", json=body, headers={"Idempotency-Key": key})
                if response.status_code in (200, 201):
                    data = response.json()
                    answer.status, answer.url = response.status_code, url
                    answer.task_id, answer.duplicate = data["task"]["task_id"], data["duplicate"]
                    answer.read_back = (await client.get(f"/v1/tasks/{answer.task_id}")).status_code
                    return
                answer.errors.append(f"{response.status_code} {response.text[:120]}")
        except httpx.HTTPError as exc:
            answer.errors.append(type(exc).__name__)
        if url == gateway.first:
            # The first gateway failed us (it is being killed): wait for its replacement.
            await asyncio.wait_for(gateway.replaced.wait(), max(0.1, deadline - time.monotonic()))
        else:
            await asyncio.sleep(RETRY_S)  # the replacement answered 503 or dropped us: back off, then retry
    raise TimeoutError(f"key {key} got no 2xx within {timeout} s: {answer.errors[-3:]}")


async def gateway_killed(run: FaultRun, sizes) -> Outcome:  # noqa: ANN001 (Sizes: faults_scenarios imports us)
    """SIGKILL the gateway while clients wait on read-your-write; they retry on a new one."""
    out = Outcome("8 gateway SIGKILL while clients wait on read-your-write")
    q, n, agents = "gw", sizes.gateway_submits, ["gw-agent-0", "gw-agent-1"]
    state = run.cluster.state_dir
    run.worker("worker-1")
    for agent in agents:
        run.agent(agent, "-q", f"{q}=4")
    gateway = Gateway(await start_gateway(run, "gateway-a", state, sizes.deadline_s))
    await run.agents_joined([q], agents, sizes.deadline_s)

    keys = [f"gw-key-{i}" for i in range(n)]
    answers = {key: Answer() for key in keys}
    pending: asyncio.Queue[str] = asyncio.Queue()
    for key in keys:
        pending.put_nowait(key)

    a_third = asyncio.Event()

    async def client() -> None:
        while not pending.empty():
            key = pending.get_nowait()
            await submit_until_answered(gateway, key, q, answers[key], sizes.deadline_s)
            if answered() >= n // 3:
                a_third.set()

    def answered() -> int:
        return sum(1 for a in answers.values() if a.status)

    clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    try:
        await asyncio.wait_for(a_third.wait(), sizes.deadline_s)
    except TimeoutError:
        raise TimeoutError(f"a third of {n} submits not answered within {sizes.deadline_s} s") from None
    # Kill at a moment the log holds a submit whose client still waits for its answer, so
    # some retries find their write landed (answered 200, duplicate) and others not (201).
    # (If the clients always hear back first, kill anyway after a while: every retry is then a 201.)
    mark = len(run.watcher.entries)
    try:
        await run.first(lambda e, v: isinstance(e, TaskSubmitted) and v.accepted
                        and not answers[e.idempotency_key].status, KILL_MOMENT_S, "a submit landed, not yet answered",
                        since=mark)
        caught = True
    except TimeoutError:
        caught = False
    answered_at_kill = answered()
    run.kill("gateway-a")
    killed_at = time.monotonic()
    url_b = await start_gateway(run, "gateway-b", state, sizes.deadline_s)
    ready_s = time.monotonic() - killed_at
    gateway.url = url_b
    gateway.replaced.set()
    await asyncio.gather(*clients)
    all_answered_s = time.monotonic() - killed_at
    quiet_s = await run.quiet(n, sizes.deadline_s)

    replay = await run.finish(out)
    admitted: dict[str, list[str]] = {}
    for event in replay.accepted(TaskSubmitted):
        admitted.setdefault(event.idempotency_key or "", []).append(event.task_id)
    retried = {k: a for k, a in answers.items() if a.errors}
    out.expect("task states", {"completed": n}, dict(out.facts["states"]))
    out.expect("keys without exactly one admitted task", [], [k for k in keys if len(admitted.get(k, [])) != 1][:5])
    out.expect("answers naming another task than the admitted one", [],
               [k for k, a in answers.items() if [a.task_id] != admitted.get(k)][:5])
    out.expect("answers of the new gateway not readable there at once", [],
               [k for k, a in answers.items() if a.url == url_b and a.read_back != 200][:5])
    out.expect("retried keys answered 201 or 200-duplicate", len(retried),
               sum(1 for a in retried.values() if (a.status, a.duplicate) in ((201, False), (200, True))))
    out.note(submits=n, answered_before_kill=answered_at_kill, killed_with_a_landed_submit_unanswered=caught,
             retried_after_kill=len(retried),
             retries_answered=Counter("200 duplicate (landed before the kill)" if a.duplicate else "201 (never landed)"
                                      for a in retried.values()),
             errors_seen=Counter(e.split(" ")[0] for a in retried.values() for e in a.errors),
             kill_to_new_gateway_ready_s=ready_s, kill_to_every_key_answered_s=all_answered_s,
             then_to_quiescence_s=quiet_s)
    return out
