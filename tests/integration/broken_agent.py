"""An agent whose every attempt fails, for the circuit-breaker scenario (run as a child process)."""

from taskfold.agent import Agent, TaskContext

agent = Agent("broken", queues={"breaker": 1}, heartbeat_interval=0.2)


@agent.handler("sleep")
async def always_fails(task: TaskContext) -> None:
    raise RuntimeError(f"broken agent fails attempt {task.attempt} of {task.task_id}")
