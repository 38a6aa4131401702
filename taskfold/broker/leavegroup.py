"""The one process-wide aiokafka fix for Tansu: LeaveGroup at generation 0 (BROKER.md).

Deviation: a new Tansu group starts at generation 0, and aiokafka skips LeaveGroup there.
aiokafka 0.14.0, `aiokafka/consumer/group_coordinator.py`,
`GroupCoordinator._maybe_leave_group` sends LeaveGroup only `if self.generation > 0`.
Every first-generation member on Tansu therefore stops without leaving, and the next
member of the group waits until the stale one's session expires (7-18 s measured with
6 s sessions, 4 s with 2 s sessions). `install` replaces that method on the class (so it
also covers consumers that faust creates) with one that also leaves at generation 0, then
defers to the original. Harmless on Kafka, which never hands out generation 0, but
`settings.apply_fixes` installs it only for Tansu all the same.
Alternative without a patch: static membership (`group_instance_id`), a constant 6 s.
`tests/integration/test_tansu_deviations.py` shows the deviation, so the fix can go once
the broker is fixed.
"""

from __future__ import annotations

import logging

from aiokafka import errors as Errors
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger(__name__)

_ORIGINAL_MAYBE_LEAVE_GROUP = GroupCoordinator._maybe_leave_group


async def _maybe_leave_group_also_at_generation_0(self: GroupCoordinator) -> None:
    # Same minimal-effort LeaveGroup as aiokafka's, for the one case it skips: a member
    # that joined and got generation 0, which only Tansu hands out (Kafka starts at 1;
    # aiokafka's "not joined" value is -1). Static members (group_instance_id) must not
    # leave, exactly as in aiokafka.
    if self.generation == 0 and self.member_id and self._group_instance_id is None:
        try:
            await self._send_req(LeaveGroupRequest(self.group_id, self.member_id))
        except Errors.KafkaError as err:
            log.warning("LeaveGroup at generation 0 failed: %s", err)
        else:
            log.info("LeaveGroup at generation 0 succeeded (Tansu fix)")
        self.reset_generation()  # the original below now only resets again
    await _ORIGINAL_MAYBE_LEAVE_GROUP(self)


_maybe_leave_group_also_at_generation_0.taskfold_fix = True  # type: ignore[attr-defined]


def install() -> None:
    """Make aiokafka leave the group at generation 0 too (idempotent)."""
    if not installed():
        GroupCoordinator._maybe_leave_group = _maybe_leave_group_also_at_generation_0


def uninstall() -> None:
    """Restore aiokafka's own `_maybe_leave_group` (for tests that show the deviation)."""
    GroupCoordinator._maybe_leave_group = _ORIGINAL_MAYBE_LEAVE_GROUP


def installed() -> bool:
    """True if install() is in effect."""
    return bool(getattr(GroupCoordinator._maybe_leave_group, "taskfold_fix", False))
