"""The agents view: seats per queue, load, EWMA performance, quarantine, heartbeats, tasks held.

Tables (keys NUL-joined):
* `agent_seats`    agent, queue -> {agent_id, queue, slots, active, capabilities, labels, joined_at,
                   left_at, load (attempts held now), success_ewma, latency_ewma_ms,
                   consecutive_failures, quarantined_until, probe_task, quarantine_reason (what
                   tripped the breaker), completed, failed}
                   from the fold's seat and the scheduler's agent record (`Change.after.fleet`)
* `queue_agents`   queue, agent -> agent_id (the agents a queue has seen)
* `agent_beats`    agent -> the last heartbeat: {agent_id, sent_at, queues, load, slots, draining, position}
* `agent_tasks`    agent, task, queue -> {task_id, queue, first_attempt, last_attempt, attempts,
                   first_assigned_at, task_state, outcome, updated_at}: every task it ever held
* `agent_holding`  agent, queue, task -> {task_id, queue, attempt, task_state, assigned_at}: held now
* `agent_totals`   agent -> {tasks, attempts}: held ever

Heartbeats live in their own table so that a row never depends on how a live run
interleaved `events` and `heartbeats` (a rebuild applies all events first).
"""

from __future__ import annotations

from typing import Any

from projections.view import Change, Rows, Telemetry
from projections.views.viewrows import join
from projections.views.timing import attempt_began, attempt_ended, attempt_outcome
from taskfold.core.scheduling.fleet import trip_reason
from taskfold.core.scheduling.model import AgentRecord
from taskfold.core.state import Member, Task
from taskfold.core.telemetry import Heartbeat

SEATS = "agent_seats"
QUEUE_AGENTS = "queue_agents"
BEATS = "agent_beats"
AGENT_TASKS = "agent_tasks"
HOLDING = "agent_holding"
TOTALS = "agent_totals"


def seat_json(agent_id: str, queue: str, seat: Member | None, record: AgentRecord | None) -> dict[str, Any]:
    """An agent's seat in a queue, with what the scheduler learned about it there."""
    return {
        "agent_id": agent_id, "queue": queue,
        "slots": seat.slots if seat else 0, "active": seat.active if seat else False,
        "capabilities": sorted(seat.capabilities) if seat else [], "labels": dict(seat.labels) if seat else {},
        "joined_at": seat.joined_at if seat else None, "left_at": seat.left_at if seat else None,
        "load": len(seat.holding) if seat else 0,
        "success_ewma": record.success_ewma if record else None,
        "latency_ewma_ms": record.latency_ewma_ms if record else None,
        "consecutive_failures": record.consecutive_failures if record else 0,
        "quarantined_until": record.quarantined_until if record else None,
        "probe_task": record.probe_task if record else None,
        "quarantine_reason": trip_reason(record) if record and record.quarantined_until is not None else None,
        "completed": record.completed if record else 0, "failed": record.failed if record else 0,
    }


class AgentsView:
    """Seats, performance, heartbeats and task holdings of every agent."""

    name = "agents"

    def apply(self, change: Change, rows: Rows) -> None:
        agents: set[str] = set()
        if change.event.agent is not None:
            agents.add(change.event.agent)
        before_state = change.before.state
        for task in change.tasks:
            before = before_state.task(task.task_id)
            if before is not None and before.state.in_flight and before.agent_id:
                agents.add(before.agent_id)
            if task.state.in_flight and task.agent_id:
                agents.add(task.agent_id)
            self._holding(change, before, task, rows)
        for agent_id in sorted(agents):
            self._seat(change, agent_id, rows)

    def _seat(self, change: Change, agent_id: str, rows: Rows) -> None:
        queue = change.event.queue
        seat = change.after.state.member(agent_id)
        record = change.after.fleet.agents.get(agent_id)
        if seat is None and record is None:
            return
        if seat is change.before.state.member(agent_id) and record is change.before.fleet.agents.get(agent_id):
            return  # the fold's rows are persistent: the same objects mean nothing changed
        key = join(agent_id, queue)
        row = seat_json(agent_id, queue, seat, record)
        old = rows.get(SEATS, key)
        if old != row:
            rows.put(SEATS, key, row)
        if old is None:
            rows.put(QUEUE_AGENTS, join(queue, agent_id), agent_id)

    def _holding(self, change: Change, before: Task | None, after: Task, rows: Rows) -> None:
        at = change.event.occurred_at
        if attempt_ended(before, after):
            assert before is not None and before.agent_id is not None
            key = join(before.agent_id, after.task_id, after.queue)
            held = rows.get(AGENT_TASKS, key)
            if held is not None:
                rows.put(AGENT_TASKS, key, {**held, "task_state": after.state.value,
                                            "outcome": attempt_outcome(change.event, after), "updated_at": at})
            rows.delete(HOLDING, join(before.agent_id, after.queue, after.task_id))
        if not after.state.in_flight or after.agent_id is None:
            return
        agent_id = after.agent_id
        key = join(agent_id, after.task_id, after.queue)
        held = rows.get(AGENT_TASKS, key)
        began = attempt_began(before, after)
        if held is None:
            held = {"task_id": after.task_id, "queue": after.queue, "first_attempt": after.attempt,
                    "last_attempt": after.attempt, "attempts": 0, "first_assigned_at": after.assigned_at,
                    "task_state": after.state.value, "outcome": None, "updated_at": at}
        if began:
            self._count(agent_id, first=held["attempts"] == 0, rows=rows)
        rows.put(AGENT_TASKS, key, {**held, "last_attempt": after.attempt,
                                    "attempts": held["attempts"] + (1 if began else 0),
                                    "task_state": after.state.value, "outcome": None, "updated_at": at})
        rows.put(HOLDING, join(agent_id, after.queue, after.task_id),
                 {"task_id": after.task_id, "queue": after.queue, "attempt": after.attempt,
                  "task_state": after.state.value, "assigned_at": after.assigned_at})

    @staticmethod
    def _count(agent_id: str, *, first: bool, rows: Rows) -> None:
        totals = rows.get(TOTALS, agent_id) or {"tasks": 0, "attempts": 0}
        rows.put(TOTALS, agent_id, {"tasks": totals["tasks"] + (1 if first else 0),
                                    "attempts": totals["attempts"] + 1})

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        beat = item.record
        if not isinstance(beat, Heartbeat):
            return
        rows.put(BEATS, beat.agent_id, {
            "agent_id": beat.agent_id, "sent_at": beat.sent_at, "queues": list(beat.queues),
            "load": dict(beat.load), "slots": dict(beat.slots), "draining": beat.draining,
            "position": f"{item.partition}:{item.offset}"})
