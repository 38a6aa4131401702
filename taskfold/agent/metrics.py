"""An agent's /healthz, /readyz and /metrics (served by taskfold.ops.probes), read at scrape time.

Ready means joined: the agent has folded its queues up to the end of the log and appended
AgentJoined, and is not draining (a draining agent takes no new work, so an orchestrator
should send it none). Metrics come from the agent's own counters and fold, plus one
histogram of attempt durations, timed around each handler.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from taskfold.agent.agent import Agent
from taskfold.agent.attempts import Handler, TaskContext
from taskfold.ops.probes import Readiness, counter, gauge

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
OUTCOMES = ("completed", "failed", "cancelled", "handed_back")  # reports appended, from Agent.stats
EVENTS = ("heartbeats", "report_errors", "reconciled", "rejoined", "poison", "left")


class AgentProbe:
    """Readiness and metrics of one Agent; times its handlers from here on."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        self.durations = Histogram("taskfold_agent_attempt_duration_seconds", "handler run time per attempt, by "
                                   "queue, task type and how it ended (completed, failed, stopped)",
                                   ["queue", "task_type", "outcome"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.registry.register(self)
        for task_type, handler in list(agent.handlers.items()):
            agent.handlers[task_type] = self._timed(handler)

    def _timed(self, handler: Handler) -> Handler:
        """The handler, observing its run time into `durations`."""
        if getattr(handler, "__taskfold_timed__", False):
            return handler

        @functools.wraps(handler)
        async def timed(task: TaskContext):  # noqa: ANN202 - whatever the handler returns
            began, outcome = time.monotonic(), "failed"
            try:
                result = await handler(task)
                outcome = "completed"
                return result
            except asyncio.CancelledError:
                outcome = "stopped"  # cancelled, revoked, timed out or drained
                raise
            finally:
                self.durations.labels(task.queue, task.task_type, outcome).observe(time.monotonic() - began)

        timed.__taskfold_timed__ = True  # type: ignore[attr-defined]
        return timed

    def readiness(self) -> Readiness:
        """Ready once joined and caught up, until it drains."""
        agent, queues = self.agent, sorted(self.agent.slots)
        if agent.draining:
            return Readiness(False, f"agent {agent.agent_id} is draining: it takes no new work")
        if not agent.ready.is_set():
            return Readiness(False, f"agent {agent.agent_id} has not joined {queues} yet (folding them up to "
                                    "the end of the log, then AgentJoined)")
        return Readiness(True, f"agent {agent.agent_id} joined {queues} and caught up",
                         {"agent": agent.agent_id, "slots": dict(agent.slots)})

    def collect(self) -> Iterator[Metric]:
        """Prometheus families of the agent, read now."""
        agent, stats = self.agent, Counter(self.agent.stats)
        yield gauge("taskfold_agent_ready", "1 when /readyz answers 200", 1.0 if self.readiness().ready else 0.0)
        yield gauge("taskfold_agent_draining", "1 while the agent drains", 1.0 if agent.draining else 0.0)
        yield from self._seats()
        outcomes = CounterMetricFamily("taskfold_agent_attempts", "attempt reports appended, by outcome",
                                       labels=["agent", "outcome"])
        for outcome in OUTCOMES:
            outcomes.add_metric([agent.agent_id, outcome], stats[outcome])
        yield outcomes
        for name in EVENTS:
            yield counter(f"taskfold_agent_{name}", f"{name.replace('_', ' ')} (Agent.stats)", stats[name])

    def _seats(self) -> Iterator[Metric]:
        agent = self.agent
        families = {name: GaugeMetricFamily(f"taskfold_agent_{name}", text, labels=["agent", "queue"])
                    for name, text in (("slots", "slots in the queue"),
                                       ("running_attempts", "attempts whose handler runs now"),
                                       ("held_attempts", "attempts the fold says this agent holds "
                                                         "(assigned or started)"))}
        running = agent.load()
        for queue, slots in sorted(agent.slots.items()):
            member = agent.ledger.state(queue).member(agent.agent_id)
            families["slots"].add_metric([agent.agent_id, queue], slots)
            families["running_attempts"].add_metric([agent.agent_id, queue], running.get(queue, 0))
            families["held_attempts"].add_metric([agent.agent_id, queue], len(member.holding) if member else 0)
        yield from families.values()
