"""Invariants checked from the log alone (the core of `taskfold audit`)."""

from taskfold.audit.invariants import AuditReport, Violation, audit, audit_events

__all__ = ["AuditReport", "Violation", "audit", "audit_events"]
