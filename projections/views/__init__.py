"""The projection views: pure functions from applied records to rows (ARCHITECTURE §7).

`all_views()` lists them in a fixed order. Each view reads and writes only its own tables
in the batch it is given, so the order does not change any row; it is fixed anyway, so a
rebuild runs exactly what a live run ran.
"""

from __future__ import annotations

from projections.view import View
from projections.views.agents import AgentsView
from projections.views.analytics import AnalyticsView
from projections.views.deadletters import DeadLettersView
from projections.views.queues import QueuesView
from projections.views.rejections import RejectionsView
from projections.views.schedules import SchedulesView
from projections.views.sessions import SessionsView
from projections.views.tasks import TasksView
from projections.views.timeindex import TimeIndexView
from projections.views.transcripts import TranscriptsView
from projections.views.workflows import WorkflowsView


def all_views() -> list[View]:
    """Every view, in a fixed order."""
    return [TasksView(), QueuesView(), AgentsView(), AnalyticsView(), SessionsView(),
            DeadLettersView(), RejectionsView(), TimeIndexView(), TranscriptsView(),
            WorkflowsView(), SchedulesView()]


__all__ = ["all_views", "AgentsView", "AnalyticsView", "DeadLettersView", "QueuesView", "RejectionsView",
           "SessionsView", "TasksView", "TimeIndexView", "TranscriptsView",
           "WorkflowsView", "SchedulesView"]
