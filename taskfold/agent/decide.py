"""What an agent does about each folded event: pure decisions, no I/O.

The agent folds its queues' events with the shared fold and asks these functions what
to do. Every decision rests on the fold's verdict and state, never on the raw event
alone, so the agent runs exactly the assignments everyone else sees as accepted.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from taskfold.core.reports import AttemptKey
from taskfold.core.events import AgentJoined, AgentLeft, Event, LeaveReason, TaskAssigned, TaskCompleted
from taskfold.core.state import QueueState, Task, Verdict


@dataclass(frozen=True, slots=True)
class Run:
    """Start a handler for an attempt this agent holds."""

    key: AttemptKey
    task: Task


@dataclass(frozen=True, slots=True)
class HandBack:
    """Give an attempt back without running it (the agent is draining)."""

    key: AttemptKey
    task: Task


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop a running handler: a cancel was requested, or the log took the attempt away."""

    key: AttemptKey
    reason: Literal["cancel", "revoked"]


@dataclass(frozen=True, slots=True)
class AcknowledgeCancel:
    """Append TaskCancelled for an attempt whose cancel was requested and that is not running."""

    key: AttemptKey
    task: Task


@dataclass(frozen=True, slots=True)
class Rejoin:
    """Join a queue again: a scheduler declared this agent lost while it was alive."""

    queue: str


Action = Run | HandBack | Stop | AcknowledgeCancel | Rejoin


def held_attempt(task: Task | None, agent_id: str) -> AttemptKey | None:
    """The attempt of `task` that `agent_id` holds now, if any."""
    if task is None or not task.state.in_flight or task.agent_id != agent_id:
        return None
    return AttemptKey(task.queue, task.task_id, task.attempt)


def react(state: QueueState, event: Event, verdict: Verdict, agent_id: str,
          running: Collection[AttemptKey], draining: bool) -> list[Action]:
    """The actions one folded event calls for; `state` is the queue's state after it."""
    if isinstance(event, TaskAssigned):
        if not (verdict.accepted and event.agent_id == agent_id):
            return []  # someone else's work, or a decision the fold refused
        task = state.task(event.task_id)
        key = held_attempt(task, agent_id)
        return [] if key is None or key in running else [_take(key, task, draining)]  # type: ignore[arg-type]
    if isinstance(event, TaskCompleted) and event.agent_id == agent_id and not verdict.accepted:
        # Log order decided a race: a cancel landed before our completion. The attempt
        # stays ours until we acknowledge the cancel.
        task = state.task(event.task_id)
        key = held_attempt(task, agent_id)
        if key is not None and key.attempt == event.attempt and task.cancel_requested:  # type: ignore[union-attr]
            return [AcknowledgeCancel(key, task)]  # type: ignore[arg-type]
        return []
    if not verdict.accepted:
        return []
    actions = _check_running(state, event, agent_id, running)
    if (isinstance(event, AgentLeft) and event.agent_id == agent_id and event.reason == LeaveReason.lost
            and not draining):
        # A scheduler took silence (its heartbeat view lagged, or ours stalled) for death.
        # Without a new seat this live agent would be offered nothing for as long as it runs.
        actions.append(Rejoin(event.queue))
    return actions


def resume(state: QueueState, agent_id: str, running: Collection[AttemptKey], draining: bool) -> list[Action]:
    """After catching up: what to do with the attempts the agent still holds (from an earlier run)."""
    seat = state.member(agent_id)
    if seat is None:
        return []
    actions: list[Action] = []
    for task_id in sorted(seat.holding):
        task = state.task(task_id)
        key = held_attempt(task, agent_id)
        if key is None or key in running:
            continue
        actions.append(AcknowledgeCancel(key, task) if task.cancel_requested else _take(key, task, draining))  # type: ignore[arg-type, union-attr]
    return actions


def _take(key: AttemptKey, task: Task, draining: bool) -> Action:
    return HandBack(key, task) if draining else Run(key, task)


def _check_running(state: QueueState, event: Event, agent_id: str, running: Collection[AttemptKey]) -> list[Action]:
    """Stop running attempts that this accepted event cancelled or took away."""
    own_seat = isinstance(event, (AgentJoined, AgentLeft)) and event.agent_id == agent_id
    actions: list[Action] = []
    for key in sorted(running):
        if key.queue != event.queue or not (own_seat or key.task_id == event.task):
            continue
        task = state.task(key.task_id)
        if held_attempt(task, agent_id) != key:
            actions.append(Stop(key, "revoked"))
        elif task.cancel_requested:  # type: ignore[union-attr]
            actions.append(Stop(key, "cancel"))
    return actions
