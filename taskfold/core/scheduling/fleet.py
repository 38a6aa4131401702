"""`observe`: the scheduler's memory (`Fleet`) folded from the same events as the queue.

Only events the fold accepted change anything, so every worker that folds the log reaches
the same Fleet. What each accepted event means for its agent:

* success (sample 1): TaskCompleted. Its run time (completion minus the attempt's
  start, or minus its assignment when it never reported a start) feeds the latency EWMA.
* failure (sample 0): TaskFailed (retryable or not), TaskTimedOut, TaskLeaseExpired, and
  every attempt an agent still held when it left with reason `lost`. Each is an attempt
  the agent did not bring home, whatever the cause.
* no sample: TaskCancelled (the user stopped it), and attempts held by an agent that left
  `drained` (an orderly shutdown somebody asked for is not a fault of the agent).

Circuit breaker: `breaker_failures` consecutive failures quarantine the agent until
`occurred_at + breaker_cooldown_ms`. The first assignment accepted for a quarantined agent
is its probe (`decide` makes one only after the cool-down). The probe's success lifts the
quarantine and clears the failures; its failure quarantines the agent again; a probe that
ends without a sample (cancel, drain) lets a new probe through. Any success resets the
consecutive failures, but only a probe lifts a quarantine. So the failure that set the
quarantine's end is kept as its trip (the consecutive failures then, its task, time and
kind): `trip_reason` says what opened the breaker, not what the counter says now.

Sessions: an accepted assignment of a task with a session makes its agent the session's
sticky agent. The round-robin cursor counts accepted assignments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from taskfold.core.events import (
    AgentJoined,
    AgentLeft,
    Event,
    LeaveReason,
    TaskAssigned,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskLeaseExpired,
    TaskTimedOut,
)
from taskfold.core.fold import evolve
from taskfold.core.scheduling.model import AgentRecord, Fleet, QueuePolicy, Session
from taskfold.core.state import EMPTY, QueueState, Verdict, replaced

# How each kind of failure reads in a breaker's trip reason.
FAILURE_KINDS = {TaskFailed: "failed", TaskTimedOut: "timed out", TaskLeaseExpired: "lease expired"}


def observe(
    fleet: Fleet, before: QueueState, after: QueueState, event: Event, verdict: Verdict, policy: QueuePolicy
) -> Fleet:
    """Fold one event of the queue (with the fold's states around it) into the scheduler's memory."""
    if not verdict.accepted:
        return fleet
    match event:
        case TaskAssigned():
            return _assigned(fleet, after, event)
        case TaskCompleted():
            return _put(fleet, _completed(record(fleet, event.agent_id), before, event, policy))
        case TaskFailed() if event.handed_back:  # given back unstarted: no sample, like a drain
            return _put(fleet, _no_sample(record(fleet, event.agent_id), event.task_id))
        case TaskFailed() | TaskTimedOut() | TaskLeaseExpired():
            kind = FAILURE_KINDS[type(event)]
            failed = _failure(record(fleet, event.agent_id), event.task_id, event.occurred_at, policy, kind)
            return _put(fleet, failed)
        case TaskCancelled():
            return _put(fleet, _no_sample(record(fleet, event.agent_id), event.task_id))
        case AgentJoined():
            return _put(fleet, record(fleet, event.agent_id))
        case AgentLeft():
            return _put(fleet, _left(record(fleet, event.agent_id), before, event, policy))
    return fleet


def replay(
    events: Iterable[Event], policy: QueuePolicy, state: QueueState = EMPTY, fleet: Fleet | None = None
) -> tuple[QueueState, Fleet, list[Verdict]]:
    """Fold one queue's events into its state and the scheduler's memory together (a rebuild)."""
    fleet = fleet if fleet is not None else Fleet()
    verdicts = []
    for event in events:
        after, verdict = evolve(state, event)
        fleet = observe(fleet, state, after, event, verdict, policy)
        state = after
        verdicts.append(verdict)
    return state, fleet, verdicts


def replace(row, **changes):  # type: ignore[no-untyped-def]
    """dataclasses.replace, the fold's cheaper way (`taskfold.core.state.replaced`): observe runs per event."""
    return replaced(row, changes)


def record(fleet: Fleet, agent_id: str) -> AgentRecord:
    """What the fleet knows about an agent; a fresh record (the neutral prior) if nothing yet."""
    return fleet.agents.get(agent_id) or AgentRecord(agent_id)


def quarantined(agent: AgentRecord, now_ms: int) -> bool:
    """True while the agent's breaker is open and its cool-down has not ended."""
    return agent.quarantined_until is not None and now_ms < agent.quarantined_until


def _put(fleet: Fleet, agent: AgentRecord) -> Fleet:
    return replace(fleet, agents=fleet.agents.set(agent.agent_id, agent))


def _ewma(old: float, sample: float, alpha: float) -> float:
    return alpha * sample + (1.0 - alpha) * old


def _assigned(fleet: Fleet, after: QueueState, event: TaskAssigned) -> Fleet:
    agent = record(fleet, event.agent_id)
    if agent.quarantined_until is not None and agent.probe_task is None:
        agent = replace(agent, probe_task=event.task_id)
    sessions = fleet.sessions
    task = after.task(event.task_id)
    if task is not None and task.session_id is not None:
        sessions = sessions.set(task.session_id, Session(event.agent_id, event.occurred_at))
    agents = fleet.agents.set(agent.agent_id, agent)
    return replace(fleet, agents=agents, sessions=sessions, cursor=fleet.cursor + 1)


def _completed(agent: AgentRecord, before: QueueState, event: TaskCompleted, policy: QueuePolicy) -> AgentRecord:
    task = before.task(event.task_id)
    began = None if task is None else (task.started_at if task.started_at is not None else task.assigned_at)
    latency = agent.latency_ewma_ms
    if began is not None:
        # Clamp: producers' clocks may disagree by a few ms, a run never takes negative time.
        run_ms = float(max(0, event.occurred_at - began))
        latency = run_ms if latency is None else _ewma(latency, run_ms, policy.ewma_alpha)
    agent = replace(
        agent, success_ewma=_ewma(agent.success_ewma, 1.0, policy.ewma_alpha), latency_ewma_ms=latency,
        consecutive_failures=0, completed=agent.completed + 1,
    )
    if agent.probe_task == event.task_id:
        agent = replace(agent, quarantined_until=None, probe_task=None)
    return agent


def _failure(agent: AgentRecord, task_id: str, at: int, policy: QueuePolicy, kind: str) -> AgentRecord:
    failures = agent.consecutive_failures + 1
    agent = replace(
        agent, success_ewma=_ewma(agent.success_ewma, 0.0, policy.ewma_alpha),
        consecutive_failures=failures, failed=agent.failed + 1,
    )
    probing = agent.probe_task == task_id
    if probing or failures >= policy.breaker_failures:
        # max: a late failure must never shorten a quarantine already running.
        until = max(at + policy.breaker_cooldown_ms, agent.quarantined_until or 0)
        probe = None if probing else agent.probe_task
        agent = replace(agent, quarantined_until=until, probe_task=probe)
        if until == at + policy.breaker_cooldown_ms:  # this failure set the end: it is the trip
            agent = replace(agent, tripped_failures=failures, tripped_task=task_id, tripped_at=at,
                            tripped_by=f"probe {kind}" if probing else kind)
    return agent


def trip_reason(agent: AgentRecord, show_time: Callable[[int], str] = str) -> str:
    """What opened the agent's breaker: the failures then, not the counter now."""
    if agent.tripped_at is None or agent.tripped_by is None:  # a record written before trips were kept
        return f"{agent.consecutive_failures} consecutive failures"
    at = show_time(agent.tripped_at)
    if agent.tripped_by.startswith("probe "):
        return f"its probe task {agent.tripped_task} {agent.tripped_by.removeprefix('probe ')} at {at}"
    return (f"{agent.tripped_failures} consecutive failures, the last on task {agent.tripped_task} "
            f"({agent.tripped_by}) at {at}")


def _no_sample(agent: AgentRecord, task_id: str) -> AgentRecord:
    return replace(agent, probe_task=None) if agent.probe_task == task_id else agent


def _left(agent: AgentRecord, before: QueueState, event: AgentLeft, policy: QueuePolicy) -> AgentRecord:
    seat = before.member(event.agent_id)
    held = sorted(seat.holding) if seat is not None else []
    for task_id in held:
        if event.reason == LeaveReason.lost:
            agent = _failure(agent, task_id, event.occurred_at, policy, "agent lost")
        else:
            agent = _no_sample(agent, task_id)
    return agent
