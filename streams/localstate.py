"""A worker's local RocksDB stores that belong to another log are discarded before it starts.

faust keeps, in each local partition store, the changelog offset the store reflects. When
the log behind it is gone (the embedded broker keeps its log in memory, so every
`taskfold dev` starts a new one), that offset is past the changelog's end and faust's
recovery stops the worker with `ConsistencyError: persisted offset > highwater`. The
store holds nothing the new log knows, so it is removed and recovery starts from zero.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from aiokafka.errors import UnknownTopicOrPartitionError

from taskfold.log import LogReader

FAUST_OFFSET_KEY = b"__faust\x00offset__"  # faust.stores.rocksdb.Store.offset_key


async def changelog_ends(bootstrap: str, tansu: bool, topic: str) -> dict[int, int]:
    """{partition: end} of the changelog topic, from the Fetch high watermark ({} if it does not exist)."""
    async with LogReader(bootstrap, tansu=tansu) as reader:
        try:
            return await reader.end_offsets(topic)
        except UnknownTopicOrPartitionError:
            return {}


def persisted_offset(path: Path) -> int | None:
    """The changelog offset a faust partition store says it reflects (None: no store, or none kept)."""
    if not path.exists():
        return None
    import rocksdict

    # Read-only: takes no lock, and leaves the store exactly as it was.
    db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True),
                         access_type=rocksdict.AccessType.read_only())
    try:
        raw = db.get(FAUST_OFFSET_KEY)
    finally:
        db.close()
    return int(raw) if raw is not None else None


def discard_stale(
    store_path: Callable[[int], Path], ends: Mapping[int, int], partitions: int, report: Callable[[str], None],
) -> list[int]:
    """Remove the partition stores whose offset is past the changelog's end; returns their partitions."""
    stale = []
    for partition in range(partitions):
        path = store_path(partition)
        offset = persisted_offset(path)
        if offset is not None and offset >= ends.get(partition, 0):
            shutil.rmtree(path)
            stale.append(partition)
    if stale:
        report(f"discarded local stores of partitions {stale}: they reflect a log this broker does not have")
    return stale
