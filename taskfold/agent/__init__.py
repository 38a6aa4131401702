"""The agent SDK (ARCHITECTURE §6): write an agent in ten lines.

    agent = Agent("agent-1", queues={"emails": 4}, labels={"region": "eu"}, capabilities=["smtp"])

    @agent.handler("send")
    async def send(task: TaskContext) -> dict:
        await task.progress("log", "sending")
        return {"ok": True}

    asyncio.run(agent.run())  # broker: argument, TASKFOLD_BOOTSTRAP, or the running `taskfold dev`
"""

from taskfold.agent.agent import Agent
from taskfold.agent.attempts import NonRetryable, TaskContext
from taskfold.broker.connection import NoBroker
from taskfold.broker.topics import partitions_of, queue_partition  # part of the SDK's API
from taskfold.core.telemetry import ChunkKind

__all__ = ["Agent", "ChunkKind", "NoBroker", "NonRetryable", "TaskContext", "partitions_of", "queue_partition"]
