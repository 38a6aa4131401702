"""Workflows: a DAG of tasks over one or more queues, submitted whole (see `spec`)."""

from taskfold.workflows.spec import NodeSpec, WorkflowSpec, node_of, parse_spec, workflow_events
from taskfold.workflows.submit import WorkflowAppended, submit_workflow

__all__ = ["NodeSpec", "WorkflowAppended", "WorkflowSpec", "node_of", "parse_spec", "submit_workflow",
           "workflow_events"]
