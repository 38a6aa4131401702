"""The HTTP transport: the gateway's REST routes and its Server-Sent Events, with a bearer token.

The gateway does the read-your-write wait itself (ARCHITECTURE §7): a write's answer
already carries the fold's verdict. Its error bodies (`{"error": {"code", "message",
"problems"}}`) become the client's exceptions (`_error`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from taskfold.core.events import TaskSubmitted
from taskfold.workflows.spec import WorkflowSpec

from taskfold.clients.errors import Duplicate, NotFound, Refused, TaskfoldError, TimedOut, Unavailable
from taskfold.clients.models import (AgentView, QueueView, Receipt, SeatView, StreamItem, TaskView, VerdictView,
                                     WorkflowReceipt)
from taskfold.clients.verdicts import rejection

Item = tuple[TaskSubmitted, bool]
RECONNECTS = 5  # a stream that drops is resumed from its cursor this many times in a row at most


class HttpTransport:
    """httpx against one gateway."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, transport=transport,
                                       timeout=httpx.Timeout(timeout))

    async def start(self) -> None:
        """Nothing to do: httpx connects on the first request."""

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _call(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise Unavailable(f"the gateway at {self.url} does not answer ({type(exc).__name__}: {exc})") from None
        if response.status_code >= 400:
            raise _error(response)
        return response

    # writes

    async def submit(self, items: Sequence[Item]) -> list[Receipt | Refused]:
        """POST /v1/tasks for one, /v1/tasks/batch for several."""
        if len(items) == 1:
            event, given = items[0]
            try:
                response = await self._call("POST", "/v1/tasks", json=request_body(event, given))
            except Refused as exc:
                return [exc]
            return [Receipt.model_validate(response.json())]
        body = {"tasks": [request_body(event, given) for event, given in items]}
        response = await self._call("POST", "/v1/tasks/batch", json=body)
        return [_batch_item(row) for row in response.json()["results"]]

    async def submit_workflow(self, spec: WorkflowSpec, events: Sequence[TaskSubmitted]) -> WorkflowReceipt:
        """POST /v1/workflows (the gateway expands the spec the same way)."""
        response = await self._call("POST", "/v1/workflows", json=spec.model_dump(mode="json", exclude_none=True))
        return WorkflowReceipt.model_validate(response.json())

    async def cancel(self, task_id: str, queue: str | None, reason: str | None, actor: str | None) -> Receipt:
        """POST /v1/tasks/{id}/cancel (the gateway records its token's name as the actor)."""
        response = await self._call("POST", f"/v1/tasks/{quote(task_id, safe='')}/cancel",
                                    json={"reason": reason}, params=_queue(queue))
        return Receipt.model_validate(response.json())

    async def redrive(self, task_id: str, queue: str | None, extra_attempts: int, reason: str | None,
                      actor: str | None) -> Receipt:
        """POST /v1/dead-letters/{id}/redrive (admin tokens only)."""
        response = await self._call("POST", f"/v1/dead-letters/{quote(task_id, safe='')}/redrive",
                                    json={"extra_attempts": extra_attempts, "reason": reason}, params=_queue(queue))
        return Receipt.model_validate(response.json())

    # reads

    async def get(self, task_id: str, queue: str | None) -> TaskView:
        """GET /v1/tasks/{id}."""
        response = await self._call("GET", f"/v1/tasks/{quote(task_id, safe='')}", params=_queue(queue))
        return TaskView.model_validate(response.json())

    async def wait(self, task_id: str, queue: str | None, timeout: float | None) -> TaskView:
        """Follow the task's stream until it ends, then read the task; TimedOut after `timeout` s."""
        task = await self.get(task_id, queue)
        if task.finished:
            return task
        try:
            async with asyncio.timeout(timeout):
                async for item in self.stream(task_id, queue, None, True):
                    if item.kind == "end":
                        break
                return await self.get(task_id, queue)
        except TimeoutError:
            raise TimedOut(f"task {task_id} is still {task.state.value} after {timeout:g} s", task_id) from None

    async def stream(self, task_id: str, queue: str | None, after: str | None,
                     follow: bool) -> AsyncIterator[StreamItem]:
        """GET /v1/tasks/{id}/events as StreamItems, resumed from the last cursor if the connection drops."""
        cursor, drops = after, 0
        while True:
            try:
                async for item in self._stream_once(task_id, queue, cursor, follow):
                    drops = 0
                    if item.cursor is not None:
                        cursor = item.cursor
                    yield item
                return
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                drops += 1
                if drops > RECONNECTS:
                    raise Unavailable(f"the stream of task {task_id} dropped {drops} times in a row: {exc}") from None

    async def _stream_once(self, task_id: str, queue: str | None, after: str | None,
                           follow: bool) -> AsyncIterator[StreamItem]:
        headers = {"Last-Event-ID": after} if after else {}
        params = {**_queue(queue), "follow": "true" if follow else "false"}
        path = f"/v1/tasks/{quote(task_id, safe='')}/events"
        try:
            request = self._http.build_request("GET", path, headers=headers, params=params,
                                               timeout=httpx.Timeout(30.0, read=None))
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise Unavailable(f"the gateway at {self.url} does not answer ({type(exc).__name__}: {exc})") from None
        try:
            if response.status_code == 204:  # terminal, nothing after the cursor
                task = await self.get(task_id, queue)
                yield StreamItem(kind="end", state=task.state)
                return
            if response.status_code >= 400:
                await response.aread()
                raise _error(response)
            async for message in _messages(response.aiter_lines()):
                yield message
        finally:
            await response.aclose()

    async def queues(self) -> list[QueueView]:
        """GET /v1/queues, with each queue's agents' slots and load from GET /v1/agents."""
        queues = (await self._call("GET", "/v1/queues")).json()["queues"]
        agents = await self.agents()
        out = []
        for row in queues:
            seats = [s for a in agents for s in a.seats if s.queue == row["queue"] and s.active]
            out.append(QueueView(queue=row["queue"], states=row["states"], depth=row["depth"],
                                 oldest_waiting_age_ms=row.get("oldest_waiting_age_ms"), agents=len(seats),
                                 slots=sum(s.slots for s in seats), load=sum(s.load for s in seats)))
        return out

    async def agents(self) -> list[AgentView]:
        """GET /v1/agents."""
        out = []
        for row in (await self._call("GET", "/v1/agents")).json()["agents"]:
            beat = row.get("heartbeat") or {}
            out.append(AgentView(agent_id=row["agent_id"], seats=[SeatView.model_validate(s) for s in row["queues"]],
                                 last_heartbeat_at=beat.get("sent_at"), draining=beat.get("draining", False)))
        return out


def request_body(event: TaskSubmitted, given: bool) -> dict[str, Any]:
    """The POST /v1/tasks body of a submit; the task id only when the caller named it (an
    idempotent retry must not differ by a generated id)."""
    body = event.model_dump(mode="json", exclude={"event_id", "occurred_at", "actor", "causation_id"})
    body["payload"] = json.loads(event.payload)
    if not given:
        del body["task_id"]
    return body


def _queue(queue: str | None) -> dict[str, str]:
    return {"queue": queue} if queue else {}


def _batch_item(row: dict[str, Any]) -> Receipt | Refused:
    if row["status"] < 400:
        return Receipt.model_validate(row)
    if row["verdict"] == "duplicate":  # the key was used by another request meanwhile
        original = (row.get("task") or {}).get("task_id", "unknown")
        return Duplicate(f"conflict: {row['reason']}", original, [("idempotency_key", row["reason"])],
                         position=row["position"])
    return rejection(row["reason"], row["position"])


def _error(response: httpx.Response) -> TaskfoldError:
    """The client error of a gateway error answer."""
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        code, message, error = f"http_{response.status_code}", response.text[:500], {}
    problems = [(p["field"], p["reason"]) for p in error.get("problems", [])]
    status = response.status_code
    if status == 404:
        return NotFound(message)
    if code == "idempotency_conflict":
        return Duplicate(f"conflict: {message}", error.get("task_id", "unknown"), problems,
                         position=(error.get("positions") or [None])[0])
    if code == "rejected":
        return rejection(message.removeprefix("rejected: "), error.get("position"))
    if code == "write_pending":
        task_ids = error.get("task_ids") or [None]
        return TimedOut(message, task_ids[0])
    if status >= 500:
        return Unavailable(f"the gateway answered {status} {code}: {message}")
    return Refused(message, problems or [(_field_of(status), message)])


def _field_of(status: int) -> str:
    return {401: "token", 403: "token", 413: "body", 415: "body"}.get(status, "(request)")


async def _messages(lines: AsyncIterator[str]) -> AsyncIterator[StreamItem]:
    """Server-Sent Events (`event:`, `data:`, `id:` lines, a blank line ends each) as StreamItems."""
    name, data, last_id = None, [], None
    async for line in lines:
        if line.startswith(":"):
            continue  # keep-alive comment
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                last_id = value
            continue
        if data:
            yield _item(name or "message", json.loads("\n".join(data)), last_id)
        name, data = None, []


def _item(name: str, data: dict[str, Any], cursor: str | None) -> StreamItem:
    if name == "end":
        return StreamItem(kind="end", state=data.get("state"))
    if name == "progress":
        return StreamItem(kind="progress", cursor=cursor, chunk=data["chunk"])
    return StreamItem(kind="event", cursor=cursor, event_type=name, event=data["event"],
                      verdict=VerdictView.model_validate(data["verdict"]))
