"""The rejections view: every event the fold rejected, with its reason, for audit.

Table:
* `rejections`  position key -> {position, partition, offset, event_type, event_id, queue,
                task_id, agent_id, actor, occurred_at, reason}
"""

from __future__ import annotations

from projections.view import Change, Rows, Telemetry

REJECTIONS = "rejections"


class RejectionsView:
    """Rejected events in log order (per partition)."""

    name = "rejections"

    def apply(self, change: Change, rows: Rows) -> None:
        if change.verdict.outcome != "rejected":
            return
        event = change.event
        rows.put(REJECTIONS, change.key, {
            "position": change.position, "partition": change.partition, "offset": change.offset,
            "event_type": event.event_type, "event_id": event.event_id, "queue": event.queue,
            "task_id": event.task, "agent_id": event.agent, "actor": event.actor,
            "occurred_at": event.occurred_at, "reason": change.verdict.reason})

    def telemetry(self, item: Telemetry, rows: Rows) -> None:
        """Rejections are verdicts on events only."""
