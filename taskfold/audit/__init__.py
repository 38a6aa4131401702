"""Invariants checked from the log alone (the core of `taskfold audit`)."""

from taskfold.audit.invariants import Auditor, AuditReport, Violation, audit, audit_events
from taskfold.audit.report import RULES

__all__ = ["Auditor", "AuditReport", "RULES", "Violation", "audit", "audit_events"]
