"""The dashboard's as-of: every page read from the projections as they were at a time or offsets.

The read models answer "as of" the way `taskfold replay --as-of` does: fold the log up to
the cut into a store of its own (`projections.rebuild`, the same views, the same cut
rule), then read it with the same queries as the live store. So every page, not just a
task's row, shows what was true then.

Protocol:
1. Parse `as_of`: epoch ms or ISO-8601 (a time cut), or `p:o,p:o` (an offsets cut: each
   listed partition before offset o; unlisted partitions are left out, as in replay).
2. Look the cut up among the stores already built (at most `keep`, least recently used
   dropped and wiped); build it once, under a lock, into `<gateway store>.asof/<cut>`.
3. Serve it read-only. The directory is wiped when the gateway exits, or, after a crash,
   when the next gateway on that store first needs an as-of store.

The build runs on a thread of its own, so the gateway keeps serving meanwhile.

A read-only gateway has no log to fold: its as-of answers 409 (serve the as-of store
itself with `taskfold gateway --store PATH --read-only` instead).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from projections.gateway.errors import ApiError
from projections.gateway.reads import parse_as_of
from projections.rebuild import CutError, rebuild
from projections.store import Store
from taskfold.log.eventlog import Cut

OFFSETS = re.compile(r"^\d+:\d+(,\d+:\d+)*$")


@dataclass(frozen=True)
class AsOf:
    """A parsed `as_of`: the cut, and how the page should name it."""

    cut: Cut
    label: str

    @property
    def key(self) -> str:
        """A directory name for the cut's store."""
        return hashlib.sha256(self.label.encode()).hexdigest()[:16]

    def moment_ms(self) -> int | None:
        """The time the cut stands for, when it is a time cut."""
        return self.cut.until_ms


def parse(text: str) -> AsOf:
    """An AsOf from `as_of`; a 422 naming the field when it is neither a time nor offsets."""
    text = text.strip()
    if OFFSETS.match(text):
        offsets = {}
        for part in text.split(","):
            partition, offset = part.split(":")
            offsets[int(partition)] = int(offset)
        return AsOf(Cut(offsets=offsets), "offsets " + ",".join(f"{p}:{o}" for p, o in sorted(offsets.items())))
    ms = parse_as_of(text)  # 422 naming as_of when it is not a time either
    return AsOf(Cut(until_ms=ms), f"time {ms}")


class AsOfStores:
    """As-of stores built from the gateway's log, the last `keep` kept open."""

    def __init__(self, root: Path, live: Any, keep: int = 3) -> None:
        self.root = root
        shutil.rmtree(root, ignore_errors=True)  # left by a gateway that died before it could wipe them
        self.live = live
        self.keep = keep
        self.open: OrderedDict[str, Store] = OrderedDict()
        self.lock = asyncio.Lock()

    async def store(self, as_of: AsOf) -> Store:
        """The store of the cut, built on first use (steps 2 and 3 of the module docstring)."""
        if getattr(self.live, "projector", None) is None or not getattr(self.live, "bootstrap", None):
            raise ApiError(409, "no_log", "this gateway serves a prebuilt store and has no log to fold as of "
                           "another moment", [("as_of", "not available on a read-only gateway")])
        async with self.lock:  # one build at a time: each reads the whole log up to the cut
            if as_of.key in self.open:
                self.open.move_to_end(as_of.key)
                return self.open[as_of.key]
            path = self.root / as_of.key
            try:
                # on a thread with its own event loop: the fold is CPU work, and this gateway's loop
                # keeps serving (its streams, its writes) while a long log is replayed
                await asyncio.to_thread(asyncio.run, rebuild(
                    self.live.bootstrap, self.live.topics, path, self.live.projector.views, tansu=self.live.tansu,
                    cut=as_of.cut))
            except CutError as exc:
                raise ApiError(422, "invalid_request", f"the request is not valid: as_of: {exc}",
                               [("as_of", str(exc))]) from None
            self.open[as_of.key] = Store(path, read_only=True)
            while len(self.open) > self.keep:
                _, old = self.open.popitem(last=False)
                old.close()
                Store.wipe(old.path)
            return self.open[as_of.key]

    def close(self) -> None:
        """Close every as-of store and wipe their directory."""
        for store in self.open.values():
            store.close()
        self.open.clear()
        shutil.rmtree(self.root, ignore_errors=True)
