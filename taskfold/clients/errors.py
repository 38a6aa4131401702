"""What a client call can fail with; every exception names its cause."""

from __future__ import annotations

from collections.abc import Sequence


class TaskfoldError(Exception):
    """Base of every client error."""


class Refused(TaskfoldError):
    """The request was refused: a bad field (nothing appended), or the fold rejected the event.

    `problems` lists (field, reason) pairs; `position` is where a rejected event was
    appended (it changed nothing), None when nothing was appended.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = (), *,
                 position: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = list(problems)
        self.position = position

    @property
    def fields(self) -> list[str]:
        """The fields named by the problems."""
        return [field for field, _ in self.problems]


class Duplicate(Refused):
    """The task id is already taken, or the idempotency key was used for a different request.

    `task_id` names the task that holds the id or first used the key.
    """

    def __init__(self, message: str, task_id: str, problems: Sequence[tuple[str, str]] = (), *,
                 position: str | None = None) -> None:
        super().__init__(message, problems, position=position)
        self.task_id = task_id


class NotFound(TaskfoldError):
    """No such task (or queue)."""


class TimedOut(TaskfoldError):
    """The wait ended before the task did (or before a write was judged); `task_id` names it."""

    def __init__(self, message: str, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class Unavailable(TaskfoldError):
    """The broker or the gateway did not answer, or answered with a server error."""
