"""A worker keeps its local stores only after a clean stop (streams/localstate.py)."""

from pathlib import Path

from streams.localstate import CLEAN_STOP, discard_unclean, mark_clean_stop


def stores(tabledir: Path) -> list[Path]:
    paths = [tabledir / f"rows-{p}.db" for p in range(3)]
    for path in paths[:2]:  # partition 2 has no store yet
        path.mkdir(parents=True)
        (path / "000001.log").write_bytes(b"rows")
    return paths


def test_after_a_kill_every_store_is_discarded(tmp_path: Path) -> None:
    paths, said = stores(tmp_path), []
    gone = discard_unclean(tmp_path, paths, said.append)
    assert gone == paths[:2] and not any(p.exists() for p in paths)
    assert "did not stop cleanly" in said[0]


def test_after_a_clean_stop_the_stores_stay_and_the_mark_is_spent(tmp_path: Path) -> None:
    paths, said = stores(tmp_path), []
    mark_clean_stop(tmp_path)
    assert discard_unclean(tmp_path, paths, said.append) == []
    assert all(p.exists() for p in paths[:2]) and said == []
    # The mark is for one run: if this run is killed, the next start must not trust the stores.
    assert not (tmp_path / CLEAN_STOP).exists()
    assert discard_unclean(tmp_path, paths, said.append) == paths[:2]


def test_a_first_start_has_nothing_to_discard(tmp_path: Path) -> None:
    said: list[str] = []
    assert discard_unclean(tmp_path / "new", [tmp_path / "new" / "rows-0.db"], said.append) == [] and said == []
