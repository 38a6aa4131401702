"""`decide`: which waiting tasks go to which agents now, as TaskAssigned events to append.

Pure: the time, the heartbeats and this worker's own not-yet-read-back decisions
(`pending`) are arguments. The fold stays the arbiter; decide only proposes events the
fold will accept when they are appended after `pending`. One round:

1. Book what the state and `pending` already hold: slots per agent, holders per
   concurrency key, tasks taken, sticky agents, probes, the round-robin cursor.
2. Take due tasks by strict priority (critical first), then FIFO by arrival.
3. Skip a task whose concurrency key is at its limit.
4. Judge every active seat for the task: alive, breaker, slots, capabilities, labels.
5. Pick: the session's sticky agent when it can take the task (or wait for it up to
   `session_fallback_ms`), else a probe for an agent whose quarantine cooled down,
   else the best score of the queue's strategy (ties by agent id).
6. Book the pick so later tasks of the round see it; a task nobody can take is skipped
   and the round goes on (a GPU task must not starve CPU work).

The caller drops a `pending` decision once it reads that event back from the log,
whatever its verdict; one the state already reflects is ignored here anyway.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from taskfold.core.events import Candidate, TaskAssigned
from taskfold.core.policies import derived_event_id
from taskfold.core.scheduling.fleet import quarantined, record, trip_reason
from taskfold.core.scheduling.line import Line
from taskfold.core.scheduling.liveness import silence_ms
from taskfold.core.scheduling.model import AgentRecord, Fleet, QueuePolicy
from taskfold.core.scheduling.strategies import Context, Option, rank, scorer
from taskfold.core.state import Member, QueueState, Task, TaskState

ASSIGN_INDEX = 0  # derived_event_id index of a TaskAssigned; timers use 1, 2 and 3
FIRST_LOOK = 64  # waiting tasks ordered at first in a round; grows eightfold when passed
# A task assigned ahead should start within this share of its start lease, so that a deep
# prefetch never turns a slow agent's holdings into TaskLeaseExpired (a breaker failure).
START_SHARE = 0.5


def decide(
    state: QueueState,
    fleet: Fleet,
    policy: QueuePolicy,
    *,
    queue: str,
    now_ms: int,
    heartbeats: Mapping[str, int],
    pending: Sequence[TaskAssigned] = (),
    actor: str = "scheduler",
    line: Line | None = None,
) -> list[TaskAssigned]:
    """The assignments to append now, each one accepted by the fold after `pending`.

    `line`, when the caller keeps one in step with `state.waiting`, saves ordering the
    waiting index in every round (`Line`); the decisions are the same either way.
    """
    scorer(policy.strategy)  # an unknown strategy fails before anything is decided
    round_ = _Round(state, fleet, policy, now_ms, heartbeats, line)
    for assigned in pending:
        round_.book_pending(assigned)
    decisions: list[TaskAssigned] = []
    if not round_.has_room():
        return decisions  # a backlog with every seat busy: skip sorting the whole queue
    for task in round_.waiting():
        if not round_.has_room(task.priority.rank):
            # Every seat is full, silent or cooling for this priority, so for every later task
            # too (the line is in priority order): a full prefetch must not scan the backlog.
            break
        if round_.key_full(task):
            continue
        fits = round_.fits(task)
        choice = round_.choose(task, fits)
        if choice is None:
            continue
        agent_id, strategy, scores = choice
        decisions.append(_assignment(task, agent_id, strategy, fits, scores, round_, queue, actor))
        round_.book(task, agent_id)
    return decisions


@dataclass(frozen=True, slots=True)
class Fit:
    """How one seat stands for one task: a problem (readable) or none, and what kind."""

    agent_id: str
    load: int
    slots: int
    problem: str | None = None
    waitable: bool = False  # the problem passes with time: busy, silent, cooling down
    probe: bool = False  # the task would be the agent's one probe after a quarantine
    tier: int = 0  # 0: a free slot, 1: prefetch room, 2: one over the bound (strictly higher priority)


@dataclass
class _Round:
    """One decide call: the inputs, plus what has been given out on top of the fold's state."""

    state: QueueState
    fleet: Fleet
    policy: QueuePolicy
    now_ms: int
    heartbeats: Mapping[str, int]
    line: Line | None = None
    seats: list[Member] = field(init=False)
    load: dict[str, int] = field(init=False)
    keys: dict[str, int] = field(init=False)
    unstarted: dict[str, int] = field(init=False)  # agent -> best (smallest) priority rank it holds unstarted
    ahead: dict[str, int] = field(init=False)  # agent -> how many it may hold beyond its slots now
    taken: set[str] = field(default_factory=set)
    sticky: dict[str, str] = field(default_factory=dict)  # session -> agent, for this round
    probes: set[str] = field(default_factory=set)
    cursor: int = field(init=False)
    _problems: dict[str, tuple[int, tuple[str | None, bool, bool]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seats = sorted((m for m in self.state.members.values() if m.active), key=lambda m: m.agent_id)
        self.load = {m.agent_id: len(m.holding) for m in self.seats}
        self.keys = {key: len(held) for key, held in self.state.holders.items()}
        tasks = self.state.tasks
        self.unstarted = {m.agent_id: min((tasks[t].priority.rank for t in m.holding
                                           if tasks[t].state == TaskState.assigned), default=99) for m in self.seats}
        self.ahead = {m.agent_id: ahead_bound(m, record(self.fleet, m.agent_id), self.policy) for m in self.seats}
        self.cursor = self.fleet.cursor

    def book_pending(self, assigned: TaskAssigned) -> None:
        """Count a decision of ours that the log has not given back yet."""
        task = self.state.task(assigned.task_id)
        # A decision the state already reflects (or that lost a race) holds nothing extra.
        if task is None or task.state.terminal or task.attempt >= assigned.attempt or task.task_id in self.taken:
            return
        self.book(task, assigned.agent_id)

    def book(self, task: Task, agent_id: str) -> None:
        """Count one more attempt of `task` held by the agent, as the fold and observe will."""
        agent = record(self.fleet, agent_id)
        if agent.quarantined_until is not None and agent.probe_task is None:
            self.probes.add(agent_id)  # the first assignment of a quarantined agent is its probe
        self.load[agent_id] = self.load.get(agent_id, 0) + 1
        self.unstarted[agent_id] = min(self.unstarted.get(agent_id, 99), task.priority.rank)
        if task.concurrency_key is not None:
            self.keys[task.concurrency_key] = self.keys.get(task.concurrency_key, 0) + 1
        if task.session_id is not None:
            self.sticky[task.session_id] = agent_id
        self.taken.add(task.task_id)
        self.cursor += 1

    def waiting(self) -> Iterator[Task]:
        """Due tasks not yet taken, by priority (critical first), then arrival.

        A round usually places a few tasks from a long line, so the line is not sorted
        whole: the first `n` entries are taken with heapq (the values of the waiting
        index compare in scheduling order), and `n` grows only if the round goes on past
        them (tasks not due, or that no seat fits).
        """
        entries, tasks = self.state.waiting, self.state.tasks
        if self.line is not None and self.line.matches(entries):
            for entry in self.line.entries:
                task_id, due_at = entry[2], entry[3]
                # An entry the state does not hold as is would be a missed update: skip it.
                if due_at <= self.now_ms and task_id not in self.taken and entries.get(task_id) == entry:
                    yield tasks[task_id]
            return
        n, seen = FIRST_LOOK, 0
        while seen < len(entries):
            line = heapq.nsmallest(n, entries.values())
            for _, _, task_id, due_at in line[seen:]:
                if due_at <= self.now_ms and task_id not in self.taken:
                    yield tasks[task_id]
            seen, n = len(line), n * 8

    def key_full(self, task: Task) -> bool:
        """True when the task's concurrency key already has `concurrency_limit` holders."""
        key = task.concurrency_key
        return key is not None and self.keys.get(key, 0) >= task.concurrency_limit

    def has_room(self, rank: int = 0) -> bool:
        """True when some seat could take a task of that priority rank (or better) right now."""
        return any(self._seat_problem(seat)[0] is None and self._room(seat, rank) for seat in self.seats)

    def _room(self, seat: Member, rank: int) -> bool:
        ahead = self.ahead[seat.agent_id]
        held, bound = self.load[seat.agent_id], seat.slots + ahead
        return held < bound or (ahead > 0 and held == bound and rank < self.unstarted.get(seat.agent_id, 99))

    def fits(self, task: Task) -> list[Fit]:
        """Every active seat judged for the task, by agent id."""
        fits = []
        for seat in self.seats:
            # A mismatch comes first: it never passes, so a session must not wait for it.
            problem, waitable, probe = match_problem(seat, task), False, False
            if problem is None:
                problem, waitable, probe = self._seat_problem(seat)
            tier = self._tier(seat, task)
            if problem is None and tier is None:
                problem, waitable = _busy(self.load[seat.agent_id], seat, self.ahead[seat.agent_id]), True
            fits.append(Fit(seat.agent_id, self.load[seat.agent_id], seat.slots, problem, waitable, probe, tier or 0))
        best = min((f.tier for f in fits if f.problem is None), default=0)
        # Slots first, then prefetch; one over the bound only when every seat's prefetch is full.
        return [f if f.problem is not None or f.tier == best else
                Fit(f.agent_id, f.load, f.slots, f"has room only in a lower tier ({f.tier} > {best})", True, f.probe,
                    f.tier) for f in fits]

    def _tier(self, seat: Member, task: Task) -> int | None:
        """Where the task would sit on the seat, within the fold's `seat_room` and the time bound
        (`ahead_bound`); None for no room."""
        held, ahead = self.load[seat.agent_id], self.ahead[seat.agent_id]
        if held < seat.slots:
            return 0
        if task.concurrency_key is not None:
            return None  # a keyed task takes a free slot only: the key counts running tasks
        bound = seat.slots + ahead
        if held < bound:
            return 1
        if ahead and held == bound and task.priority.rank < self.unstarted.get(seat.agent_id, 99):
            return 2
        return None

    def _seat_problem(self, seat: Member) -> tuple[str | None, bool, bool]:
        """(problem, waitable, probe) for the seat whatever the task.

        Asked for every seat by `has_room` and `fits`, several times a round: kept until a
        booking changes the seat's load (the only input that changes within a round).
        """
        held = self.load[seat.agent_id]
        known = self._problems.get(seat.agent_id)
        if known is not None and known[0] == held:
            return known[1]
        problem = self._judge_seat(seat, held)
        self._problems[seat.agent_id] = (held, problem)
        return problem

    def _judge_seat(self, seat: Member, held: int) -> tuple[str | None, bool, bool]:
        silent = silence_ms(seat, self.heartbeats, self.now_ms)
        if silent > self.policy.lease_ms:
            return f"silent for {silent} ms (lease {self.policy.lease_ms} ms)", True, False
        agent = record(self.fleet, seat.agent_id)
        probe = agent.quarantined_until is not None
        if quarantined(agent, self.now_ms):
            return f"quarantined until {agent.quarantined_until}: {trip_reason(agent)}", True, False
        if probe and agent.probe_task is not None:
            return f"on probation: probe task {agent.probe_task} must end first", True, False
        if probe and seat.agent_id in self.probes:
            return "on probation: its probe task was just decided and must end first", True, False
        ahead = self.ahead[seat.agent_id]
        if held >= seat.slots + ahead + (1 if ahead else 0):
            return _busy(held, seat, ahead), True, probe
        return None, False, probe

    def choose(self, task: Task, fits: list[Fit]) -> tuple[str, str, dict[str, float]] | None:
        """(agent, strategy label, scores) for the task, or None when it must wait."""
        usable = [f for f in fits if f.problem is None]
        context = Context(self.policy, {f.agent_id: n for n, f in enumerate(fits)}, self.cursor)
        options = [Option(f.agent_id, f.load, f.slots, record(self.fleet, f.agent_id)) for f in usable]
        ranked = rank(options, self.policy.strategy, context)
        scores = {option.agent_id: score for option, score in ranked}
        sticky = self._sticky_agent(task)
        if sticky is not None:
            fit = next((f for f in fits if f.agent_id == sticky), None)
            if fit is not None and fit.problem is None:
                return sticky, "probe" if fit.probe else "session", scores
            if fit is not None and fit.waitable and not self._waited_out(task):
                return None  # the sticky agent is only busy or briefly away: keep the session's context
        probes = [f.agent_id for f in usable if f.probe]
        if probes:
            # A probe goes first: it is how a quarantined agent earns its way back, and a
            # score-based strategy would otherwise starve it behind healthier agents.
            return probes[0], "probe", scores
        if not ranked:
            return None
        return ranked[0][0].agent_id, self.policy.strategy, scores

    def _sticky_agent(self, task: Task) -> str | None:
        if task.session_id is None:
            return None
        if task.session_id in self.sticky:
            return self.sticky[task.session_id]
        session = self.fleet.sessions.get(task.session_id)
        return session.agent_id if session is not None else None

    def _waited_out(self, task: Task) -> bool:
        since = task.due_at if task.due_at is not None else task.submitted_at
        return self.now_ms - since >= self.policy.session_fallback_ms


def ahead_bound(seat: Member, agent: AgentRecord, policy: QueuePolicy) -> int:
    """How many attempts the seat may hold beyond its slots in this round.

    Its announced prefetch, bounded by time: held tasks start one slot-length after another,
    so at the agent's observed run time (latency EWMA) the last one must start within
    START_SHARE of `start_within_ms`. Before a first completion the run time is unknown and
    nothing is assigned ahead: quick tasks learn it in one round trip, and a long task
    prefetched on a guess would lose its start lease and count as the agent's failure.
    Nor is anything assigned ahead while the agent's last attempt failed: a failing agent
    may be quarantined next, and it would still run what it holds (it does not see the
    worker's breaker), so it holds no more than its slots.
    A bound the fold does not know: it only ever assigns fewer than `slots + prefetch`.
    """
    if not seat.prefetch or agent.latency_ewma_ms is None or agent.consecutive_failures:
        return 0
    fits = seat.slots * policy.start_within_ms * START_SHARE / max(agent.latency_ewma_ms, 1.0)
    return min(seat.prefetch, int(fits))


def _busy(held: int, seat: Member, ahead: int) -> str:
    if not seat.prefetch:
        return f"busy: holds {held} of {seat.slots} slots"
    bounded = "" if ahead == seat.prefetch else f" ({ahead} ahead at its run time)"
    return f"busy: holds {held} of {seat.slots} slots and prefetch {seat.prefetch}{bounded}"


def match_problem(seat: Member, task: Task) -> str | None:
    """Why the seat can never take this task (capabilities, labels), or None."""
    missing = sorted(task.required_capabilities - seat.capabilities)
    if missing:
        return f"lacks capabilities {missing}"
    labels = dict(seat.labels)
    for key, value in task.labels:
        if key not in labels:
            return f"needs label {key}={value}, has no {key}"
        if labels[key] != value:
            return f"needs label {key}={value}, has {key}={labels[key]}"
    return None


def _assignment(
    task: Task, agent_id: str, strategy: str, fits: list[Fit], scores: dict[str, float],
    round_: _Round, queue: str, actor: str,
) -> TaskAssigned:
    attempt = task.attempt + 1
    candidates = [
        Candidate(agent_id=f.agent_id, score=scores.get(f.agent_id, 0.0), load=f.load, slots=f.slots,
                  eligible=f.problem is None, reason=f.problem)
        for f in fits
    ]
    return TaskAssigned(
        # Derived from the attempt alone: two schedulers deciding the same attempt write the
        # same id, so the fold takes the first and calls the second a duplicate.
        event_id=derived_event_id(f"{queue}/{task.task_id}/{attempt}", ASSIGN_INDEX),
        queue=queue, occurred_at=round_.now_ms, actor=actor, causation_id=None,
        correlation_id=task.correlation_id, task_id=task.task_id, attempt=attempt,
        agent_id=agent_id, lease_ms=round_.policy.lease_ms, strategy=strategy, candidates=candidates,
    )
