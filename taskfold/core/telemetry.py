"""Records that are not events: agent heartbeats and the progress of running attempts.

They share the events' Avro single-object encoding and schema catalog (same namespace,
`taskfold.events`, which the catalog requires), but the fold never sees them: heartbeats
go to the `heartbeats` topic (key = agent id) and progress chunks to `progress`
(key = queue). `tests/unit/test_contract.py` keeps these classes equal to their `.avsc`.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Field

from taskfold.core.events import INT_MAX, Attempt, Millis, QueueName

Count = Annotated[int, Field(ge=0, le=INT_MAX)]


class ChunkKind(str, Enum):
    """What a progress chunk carries."""

    text = "text"
    tool_call = "tool_call"
    tool_result = "tool_result"
    message = "message"
    log = "log"


class TelemetryRecord(BaseModel):
    """Base of the non-event records; `record_type` names the schema, like `event_type`."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)
    record_type: ClassVar[str]

    @property
    def task(self) -> str | None:
        """The task this record is about, if any (the `task` header)."""
        return getattr(self, "task_id", None)

    @property
    def agent(self) -> str | None:
        """The agent that sent this record (the `agent` header)."""
        return getattr(self, "agent_id", None)


class Heartbeat(TelemetryRecord):
    """An agent is alive: its queues, and per queue its slots and how many it is running."""

    record_type: ClassVar[str] = "Heartbeat"
    agent_id: Annotated[str, Field(min_length=1)]
    queues: list[QueueName] = Field(default_factory=list)
    sent_at: Millis
    load: dict[str, Count] = Field(default_factory=dict)
    slots: dict[str, Count] = Field(default_factory=dict)
    draining: bool = False


class ProgressChunk(TelemetryRecord):
    """One piece of the output of a running attempt; `seq` orders the chunks of an attempt."""

    record_type: ClassVar[str] = "ProgressChunk"
    chunk_id: Annotated[str, Field(min_length=1)]
    task_id: Annotated[str, Field(min_length=1)]
    attempt: Attempt
    agent_id: Annotated[str, Field(min_length=1)]
    queue: QueueName
    seq: Count
    kind: ChunkKind
    content: str
    occurred_at: Millis


AnyTelemetry = Union[Heartbeat, ProgressChunk]

RECORD_CLASSES: dict[str, type[TelemetryRecord]] = {
    cls.record_type: cls for cls in AnyTelemetry.__args__  # type: ignore[attr-defined]
}
