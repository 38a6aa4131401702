"""taskfold: event-sourced coordination for workers and agents.

`taskfold.Client` and `taskfold.AsyncClient` are loaded on first use, so `import taskfold`
stays light (no aiokafka, httpx or pydantic models until a client is asked for).
"""

from typing import Any

_CLIENTS = {"Client", "AsyncClient", "Refused", "Duplicate", "NotFound", "TimedOut", "Unavailable", "TaskfoldError"}


def __getattr__(name: str) -> Any:
    if name in _CLIENTS:
        import taskfold.clients

        return getattr(taskfold.clients, name)
    raise AttributeError(f"module 'taskfold' has no attribute {name!r}")


__all__ = sorted(_CLIENTS)
