"""Python clients of taskfold: `AsyncClient` and `Client`, over Kafka or the HTTP gateway."""

from taskfold.clients.asyncclient import AsyncClient
from taskfold.clients.errors import Duplicate, NotFound, Refused, TaskfoldError, TimedOut, Unavailable
from taskfold.clients.models import AgentView, QueueView, Receipt, SeatView, StreamItem, TaskView, VerdictView
from taskfold.clients.sync import Client

__all__ = ["AgentView", "AsyncClient", "Client", "Duplicate", "NotFound", "QueueView", "Receipt", "Refused",
           "SeatView", "StreamItem", "TaskView", "TaskfoldError", "TimedOut", "Unavailable", "VerdictView"]
