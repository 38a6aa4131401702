"""The pre-check of an HTTP agent's report: steps 2 and 3 of `agents_http` (the fold's fence
rules, applied to this gateway's projection before anything is appended)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka.errors import KafkaError

from projections.gateway.deps import Runtime
from projections.gateway.errors import ApiError
from projections.projector import EVENTS
from taskfold.core.fold.attempts import AttemptEvent, fence
from taskfold.core.state import Task, TaskState


def refusal(task: Task, probe: AttemptEvent, *, retry: bool, caught_up: bool = False) -> ApiError | None:
    """Why the log has already settled against this report (step 3), or None to append it.

    `probe` is the report (or, for progress, a start it stands for); with `retry`, a
    report whose id the task has already seen is let through to fold as a duplicate.
    """
    attempt, agent_id = probe.attempt, probe.agent_id
    if attempt > task.attempt:
        return _newer(task, probe, caught_up=caught_up)
    if attempt == task.attempt and task.agent_id != agent_id:
        # Before the retry check: report ids name the attempt, not the agent, so another
        # agent's report would pass for a retry of the holder's.
        return ApiError(403, "not_holder", f"agent {agent_id} does not hold attempt {attempt} of task "
                        f"{task.task_id} (held by {task.agent_id})")
    if retry and task.seen(probe.event_id):
        return None
    if attempt < task.attempt:
        return ApiError(409, "stale_attempt", f"stale attempt {attempt}: the current attempt of task "
                        f"{task.task_id} is {task.attempt}", [("attempt", f"must be {task.attempt}")])
    problem = fence(task, probe)
    return None if problem is None else ApiError(409, "attempt_over", problem)


FOR_GOOD = frozenset({TaskState.completed, TaskState.cancelled})  # dead letters can be redriven: not for good


def _newer(task: Task, probe: AttemptEvent, *, caught_up: bool) -> ApiError | None:
    """An attempt the projection does not know even once caught up (step 3), or None when it may not be."""
    if task.state in FOR_GOOD:
        return ApiError(409, "attempt_over", f"task {task.task_id} is already {task.state.value}: attempt "
                        f"{probe.attempt} can never count")
    if not caught_up:
        return None  # the projection may lag the log: let the fold judge
    return ApiError(409, "stale_attempt", f"attempt {probe.attempt} of task {task.task_id} was never assigned: "
                    f"the current attempt is {task.attempt}", [("attempt", f"must be {task.attempt}")])


async def _caught_up(rt: Runtime) -> bool:
    """Step 2: wait until the projection applied the events log up to its end as of now; False if it could not."""
    end_offsets = getattr(rt.log, "end_offsets", None)
    if end_offsets is None:
        return False
    try:
        ends = await asyncio.wait_for(end_offsets(), rt.write_timeout_s)
        projector = rt.live.projector
        await rt.live.wait_for(lambda: all(projector.next_offset(EVENTS, p) >= end for p, end in ends.items()),
                               rt.write_timeout_s)
    except (KafkaError, OSError, TimeoutError):
        return False
    return True


async def current(rt: Runtime, find: Callable[[], Task], attempt: int) -> tuple[Task, bool]:
    """The task as `find` reads it from this gateway's fold, and whether that fold was caught
    up with the log first (step 2, only for an `attempt` newer than the fold knows)."""
    task = find()
    if attempt <= task.attempt or task.state in FOR_GOOD or not await _caught_up(rt):
        return task, False
    return find(), True
