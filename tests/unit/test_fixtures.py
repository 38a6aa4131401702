"""Every published schema version has an encoded sample, and the current reader reads them all.

The samples in `tests/fixtures/` are written once by `make_fixtures.py` and never
regenerated, so this is the proof that old bytes on the log stay readable.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas.catalog import Catalog
from taskfold.log.wire import decode_record, record_class

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE_NAME = re.compile(r"^(?P<type>[A-Za-z0-9]+)\.v(?P<version>[0-9]+)\.bin$")
CATALOG = Catalog.load()
VERSIONS = {(v.event_type, v.version): v for v in CATALOG.versions()}
FILES = sorted(FIXTURES.glob("*.bin"))


def test_every_schema_version_has_a_fixture_and_every_fixture_a_version() -> None:
    found = {(m["type"], int(m["version"])) for m in map(FIXTURE_NAME.match, (f.name for f in FILES)) if m}
    missing = sorted(f"{t}.v{v}.bin" for t, v in set(VERSIONS) - found)
    orphans = sorted(f"{t}.v{v}.bin" for t, v in found - set(VERSIONS))
    assert not missing, f"no sample for {missing}: run python tests/fixtures/make_fixtures.py"
    assert not orphans, f"samples without a schema version in schemas/avro: {orphans}"
    assert all(FIXTURE_NAME.match(f.name) for f in FILES), "fixture names must be <EventType>.v<N>.bin"


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_fixture_decodes_with_the_current_reader(path: Path) -> None:
    match = FIXTURE_NAME.match(path.name)
    assert match, f"{path.name}: fixture names must be <EventType>.v<N>.bin"
    entry = VERSIONS.get((match["type"], int(match["version"])))
    assert entry is not None, f"{path.name}: no schema {match['type']}.v{match['version']}.avsc"
    value = path.read_bytes()
    # The sample must really have been written with the version its name claims.
    assert value[2:10] == entry.fingerprint, f"{path.name} was not written with {entry.path.name}"
    # Events and telemetry records (heartbeats, progress chunks) alike.
    record = decode_record(value)
    assert type(record) is record_class(match["type"])
