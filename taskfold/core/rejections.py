"""The kind of a rejection: a short, bounded label for a verdict's free-text reason.

Reasons name tasks, agents and attempts, so they cannot label a metric (every task would
be a new series). `rejection_kind` maps each reason the fold gives to one of `KINDS`, in
the order below (the first pattern that matches wins); a reason no pattern knows is
`other`, and a test folds every rule's reason to keep that list short.
"""

from __future__ import annotations

import re

_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile(pattern)) for kind, pattern in (
    ("misrouted", r"^misrouted: "),
    ("clock_skew", r"^clock skew: "),
    ("too_large", r"bytes, over the limit of"),
    ("already_submitted", r"was already submitted|already exists|was already used by task|cannot depend on itself"),
    ("unknown_task", r"^unknown task "),
    ("stale_attempt", r"^stale attempt |is not the next attempt|^attempt \d+ of task .* is over|has already started"),
    ("not_holder", r"does not hold attempt"),
    ("slots_full", r"holds \d+ of its \d+ slots"),
    ("concurrency_limit", r"^concurrency key .* is at its limit"),
    ("not_joined", r"has not joined queue"),
    ("agent_left", r"has (already )?left queue|left \(\w+\) holding"),
    ("not_eligible", r"lacks required capabilities|does not match label"),
    ("not_waiting", r"is blocked on|until \d+, assignment is at|is not waiting on|is (assigned|running): attempt"),
    ("cancel_race", r"cancel of task .* was (requested first|already requested)|no cancel was requested"),
    ("task_state", r"^task \S+ is already \w+$|only dead-lettered tasks"),
    ("invalid_workflow", r"^nodes|^workflow "),
    ("no_rule", r"has no rule in the fold"),
))
KINDS = tuple(kind for kind, _ in _KINDS) + ("other",)


def rejection_kind(reason: str | None) -> str:
    """The bounded label of a rejection reason (one of KINDS)."""
    text = reason or ""
    for kind, pattern in _KINDS:
        if pattern.search(text):
            return kind
    return "other"
