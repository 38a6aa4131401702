"""The worker's /healthz, /readyz and /metrics (served by taskfold.ops.probes), read at scrape time.

Readiness, in order (the first that fails is the answer's `why_not`):

1. The consumer group has assigned this worker its partitions of `events` (none is ready
   too: a standby worker, when workers outnumber partitions).
2. The rows table of those partitions is recovered (the worker rebuilt its queues).
3. The heartbeats have been read up to their end (liveness is known).
4. Every owned partition has been read up to the high watermark once since it was
   assigned (the worker decides on the log as it is, not on history).

Metrics come from the processor's counters, the scheduler's queues and the consumer's
positions, so recording them costs the fold nothing but a counter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streams.app import Topology
from taskfold.ops.probes import Readiness, counter, gauge

VERDICTS = ("accepted", "duplicate", "rejected")
APPENDED = ("decisions", "timer")  # assignments; lease expiries, timeouts and lost agents
ERRORS = ("append_errors", "core_errors")


class WorkerProbe:
    """Follows the worker's assignments and recoveries; answers readiness and collects metrics."""

    def __init__(self, topology: Topology, events_topic: str, worker_id: str) -> None:
        self.topology, self.events, self.worker_id = topology, events_topic, worker_id
        self.assigned: set[int] | None = None  # events partitions of the last assignment; None before one
        self.recovered = False
        topology.app.on_partitions_assigned.connect(self._on_assigned)
        topology.app.on_partitions_revoked.connect(self._on_revoked)
        topology.table.on_recover(self._on_recovered)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    async def _on_assigned(self, sender: object, assigned: set, **kwargs: object) -> None:
        self.assigned = {tp.partition for tp in assigned if tp.topic == self.events}
        self.recovered = False

    async def _on_revoked(self, sender: object, revoked: set, **kwargs: object) -> None:
        self.recovered = False

    async def _on_recovered(self) -> None:
        self.recovered = True

    def lag(self) -> dict[int, int]:
        """Records behind the last fetched high watermark, per owned partition where known."""
        catch_up, behind = self.topology.processor.catch_up, {}
        for partition in sorted(self.assigned or ()):
            end = catch_up.highwater(partition)
            done = catch_up.read.get(partition, catch_up.position(partition))
            if end is not None and done is not None:
                behind[partition] = max(0, end - done)
        return behind

    def readiness(self) -> Readiness:
        """Steps 1-4 of the module docstring."""
        processor = self.topology.processor
        if self.assigned is None:
            return Readiness(False, f"no partitions of {self.events} assigned yet (the consumer group's "
                                    "first rebalance has not finished)")
        owned = sorted(self.assigned)
        if not self.recovered:
            return Readiness(False, f"recovering the table rows of partitions {owned}")
        if not processor.ready():
            return Readiness(False, "reading the heartbeats up to their end (agent liveness unknown)")
        behind = [p for p in owned if not processor.catch_up.settled(p)]
        if behind:
            lag = self.lag()
            return Readiness(False, f"partitions {behind} of {self.events} not caught up with the log yet",
                             {"lag": {str(p): lag[p] for p in behind if p in lag}})
        why = f"partitions {owned} assigned and caught up" if owned else \
            f"standby: no partition of {self.events} assigned (more workers than partitions)"
        return Readiness(True, why, {"partitions": owned, "worker": self.worker_id})

    def collect(self) -> Iterator[Metric]:
        """Prometheus families of the worker, read now."""
        processor = self.topology.processor
        counts = Counter(processor.counts)
        yield gauge("taskfold_worker_ready", "1 when /readyz answers 200", 1.0 if self.readiness().ready else 0.0)
        yield gauge("taskfold_worker_partitions", "partitions of events this worker owns", len(self.assigned or ()))
        yield counter("taskfold_worker_records", "records of events read", counts["records"])
        verdicts = CounterMetricFamily("taskfold_worker_events_folded", "events folded, by verdict",
                                       labels=["outcome"])
        for outcome in VERDICTS:
            verdicts.add_metric([outcome], counts[outcome])
        yield verdicts
        rejections = CounterMetricFamily("taskfold_worker_rejections", "events the fold rejected, by event type "
                                         "and kind of reason (taskfold.core.rejections)", labels=["event_type", "reason"])
        for (event_type, kind), n in sorted(Counter(processor.rejections).items()):
            rejections.add_metric([event_type, kind], n)
        yield rejections
        yield counter("taskfold_worker_poison", "undecodable records copied to poison", counts["poison"])
        appended = CounterMetricFamily("taskfold_worker_appended_events", "events appended: assignments "
                                       "(decisions) and the clock's (timer)", labels=["what"])
        for what in APPENDED:
            appended.add_metric([what], counts[what])
        yield appended
        yield counter("taskfold_worker_appends", "appends (one per decision or timer round)", counts["appends"])
        errors = CounterMetricFamily("taskfold_worker_errors", "appends that failed, core failures", labels=["kind"])
        for kind in ERRORS:
            errors.add_metric([kind], counts[kind])
        yield errors
        yield counter("taskfold_worker_backfilled", "records read again to fill a gap", counts["backfilled"])
        relayed = Counter(self.topology.relay.counts)
        yield counter("taskfold_worker_relay_resolutions", "DependencyResolved appended by the relay",
                       relayed["resolutions"])
        yield from self._lag()
        yield from self._queues()

    def _lag(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily("taskfold_worker_lag_records", "records behind the high watermark, per owned "
                                "partition of events", labels=["partition"])
        for partition, behind in self.lag().items():
            lag.add_metric([str(partition)], behind)
        yield lag

    def _queues(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily("taskfold_worker_waiting_tasks", "tasks waiting for an agent, per queue, "
                                    "priority and state (queued, scheduled, retry_wait)",
                                    labels=["queue", "priority", "state"])
        seats = {name: GaugeMetricFamily(f"taskfold_worker_{name}", text, labels=["queue"]) for name, text in (
            ("agents", "agents seated in the queue"), ("slots", "slots of the agents seated in the queue"),
            ("held_attempts", "attempts held by the queue's agents (assigned or running)"))}
        for queue, folded in sorted(self.topology.processor.scheduler.queues.items()):
            state = folded.state
            by = Counter((t.priority.value, t.state.value) for t in map(state.tasks.get, state.waiting) if t)
            for (priority, task_state), n in sorted(by.items()):
                waiting.add_metric([queue, priority, task_state], n)
            active = [m for m in state.members.values() if m.active]
            seats["agents"].add_metric([queue], len(active))
            seats["slots"].add_metric([queue], sum(m.slots for m in active))
            seats["held_attempts"].add_metric([queue], sum(len(m.holding) for m in active))
        yield waiting
        yield from seats.values()

