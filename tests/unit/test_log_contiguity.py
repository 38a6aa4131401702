"""Hole detection in reads: a fetch that leaves out an offset is read again, a lasting hole is taken."""

from __future__ import annotations

from dataclasses import dataclass

from taskfold.log.contiguity import REREADS, Contiguity


@dataclass
class M:
    offset: int


def offsets(messages: list[M]) -> list[int]:
    return [m.offset for m in messages]


def test_contiguous_runs_are_taken_whole() -> None:
    holes = Contiguity("events")
    holes.expect(0, 5)
    taken, again = holes.admit(0, [M(5), M(6), M(7)])
    assert (offsets(taken), again) == ([5, 6, 7], None)
    assert holes.next[0] == 8 and not holes.counts


def test_a_left_out_offset_cuts_the_run_and_is_read_again() -> None:
    holes = Contiguity("events")
    holes.expect(0, 5)
    taken, again = holes.admit(0, [M(5), M(7), M(8)])  # 6 left out
    assert (offsets(taken), again) == ([5], 6)
    taken, again = holes.admit(0, [M(6), M(7), M(8)])  # the read from 6 has it
    assert (offsets(taken), again) == ([6, 7, 8], None)
    assert holes.counts == {"reread": 1}


def test_a_hole_at_the_start_of_a_fetch_is_read_again() -> None:
    holes = Contiguity("events")
    holes.expect(3, 0)
    assert holes.admit(3, [M(1), M(2)]) == ([], 0)


def test_a_hole_that_lasts_is_taken_for_compaction_after_a_few_reads() -> None:
    holes = Contiguity("heartbeats")
    holes.expect(0, 0)
    for _ in range(REREADS):
        assert holes.admit(0, [M(2)]) == ([], 0)
    taken, again = holes.admit(0, [M(2), M(3)])
    assert (offsets(taken), again) == ([2, 3], None)
    assert holes.counts == {"reread": REREADS, "accepted": 1}


def test_records_already_taken_are_not_taken_twice() -> None:
    holes = Contiguity("events")
    holes.expect(0, 0)
    holes.admit(0, [M(0), M(1)])
    taken, again = holes.admit(0, [M(1), M(2)])
    assert (offsets(taken), again) == ([2], None)


def test_without_a_known_start_the_first_record_sets_it() -> None:
    holes = Contiguity("events")
    taken, _ = holes.admit(1, [M(40), M(41)])
    assert offsets(taken) == [40, 41] and holes.next[1] == 42
    assert holes.admit(1, [M(43)]) == ([], 42)


def test_a_position_past_the_last_record_taken_is_a_hole_at_the_end() -> None:
    holes = Contiguity("events")
    holes.expect(0, 0)
    holes.admit(0, [M(0), M(1)])  # the batch said it ended at 2, but offset 2 was left out
    assert holes.behind(0, 3) == 2
    assert holes.behind(0, 2) is None  # nothing skipped
    for _ in range(REREADS - 1):
        assert holes.behind(0, 3) == 2
    assert holes.behind(0, 3) is None and holes.next[0] == 3  # a control record, say
    assert holes.counts == {"reread": REREADS, "accepted": 1}
