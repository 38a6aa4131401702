"""The raw log's value types."""

import pytest

from taskfold.log import ConsumedRecord, Position


def test_position_round_trips_as_text() -> None:
    assert str(Position(3, 42)) == "3:42"
    assert Position.parse("3:42") == Position(3, 42)
    with pytest.raises(ValueError):
        Position.parse("42")


def test_consumed_record_header_and_position() -> None:
    r = ConsumedRecord("t", 1, 7, 0, "q", b"v", (("type", b"A"), ("type", b"B")))
    assert r.position == Position(1, 7)
    assert r.header("type") == b"A"
    assert r.header("task") is None
