"""The Avro codec: single-object framing, round trips, poison bytes, evolution, bad schema files."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.catalog import Catalog, SchemaFileError, default_directory, fingerprint64
from schemas.codec import MAGIC, Codec, PoisonMessage, decode, default_codec, encode, header_value, headers
from taskfold.core.events import (
    EVENT_CLASSES, Backoff, Candidate, Priority, TaskAssigned, TaskSubmitted,
)
from taskfold.log.wire import decode_event, encode_event

_spec = importlib.util.spec_from_file_location(
    "make_fixtures", Path(__file__).resolve().parents[1] / "fixtures" / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
SAMPLES = make_fixtures.sample_events()
FAILED_V1 = dict(event_id="e", queue="q", occurred_at=1, actor="a", task_id="t", attempt=1,
                 agent_id="g", error="boom")


# --- framing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("canonical", "expected"), [
    # Vectors from the Avro repository, share/test/data/schema-tests.txt (signed Java longs).
    ('"null"', 7195948357588979594),
    ('"int"', 8247732601305521295),
    ('{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
    ('{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}', 7843277075252814651),
])
def test_fingerprint_matches_avro_spec_vectors_little_endian(canonical: str, expected: int) -> None:
    assert fingerprint64(canonical) == expected.to_bytes(8, "little", signed=True)


def test_value_is_marker_then_writer_fingerprint_then_body() -> None:
    value, _ = encode_event(SAMPLES["TaskFailed"])
    current = default_codec().catalog.current("TaskFailed")
    assert value[:2] == b"\xc3\x01" == MAGIC
    assert value[2:10] == current.fingerprint == fingerprint64(current.canonical_form)


# --- round trips -----------------------------------------------------------------------

def test_there_is_a_sample_of_every_event_type() -> None:
    assert set(SAMPLES) == set(EVENT_CLASSES)


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_sample_round_trips_to_an_equal_event(event_type: str) -> None:
    event = SAMPLES[event_type]
    value, _ = encode_event(event)
    assert decode_event(value) == event
    assert decode(value)[0] == event_type


ids = st.text(min_size=1, max_size=12)
maybe_ids = st.none() | ids
millis = st.integers(0, 2**63 - 1)
int32 = st.integers(-(2**31), 2**31 - 1)
json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
).map(json.dumps)
envelopes = dict(
    event_id=ids, queue=st.from_regex(r"[A-Za-z0-9._#:-]{1,40}", fullmatch=True), occurred_at=millis,
    actor=ids, causation_id=maybe_ids, correlation_id=maybe_ids)
task_submitted = st.builds(
    TaskSubmitted, **envelopes, task_id=ids, task_type=ids, priority=st.sampled_from(Priority),
    payload=json_text, not_before=st.none() | millis, timeout_ms=st.integers(1, 2**63 - 1),
    max_attempts=st.integers(1, 1000),
    backoff=st.builds(Backoff, initial_ms=millis, multiplier=st.floats(1.0, 100.0), max_ms=millis,
                      jitter=st.floats(0.0, 1.0)),
    depends_on=st.lists(ids, max_size=3), session_id=maybe_ids, concurrency_key=maybe_ids,
    concurrency_limit=st.integers(1, 2**31 - 1), labels=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
    required_capabilities=st.lists(ids, max_size=3), idempotency_key=maybe_ids)
task_assigned = st.builds(
    TaskAssigned, **envelopes, task_id=ids, attempt=st.integers(1, 2**31 - 1), agent_id=ids,
    lease_ms=st.integers(1, 2**63 - 1), strategy=ids,
    candidates=st.lists(st.builds(
        Candidate, agent_id=ids, score=st.floats(allow_nan=False, allow_infinity=False),
        load=st.integers(0, 2**31 - 1), slots=st.integers(0, 2**31 - 1),
        eligible=st.booleans(), reason=maybe_ids), max_size=4))


@given(task_submitted)
def test_any_task_submitted_round_trips(event: TaskSubmitted) -> None:
    assert decode_event(encode_event(event)[0]) == event


@given(task_assigned)
def test_any_task_assigned_round_trips(event: TaskAssigned) -> None:
    assert decode_event(encode_event(event)[0]) == event


# --- headers ---------------------------------------------------------------------------

@pytest.mark.parametrize(("event_type", "expected"), [
    ("TaskAssigned", [("type", b"TaskAssigned"), ("task", b"task-1"), ("agent", b"agent-a")]),
    ("TaskSubmitted", [("type", b"TaskSubmitted"), ("task", b"task-1")]),
    ("AgentJoined", [("type", b"AgentJoined"), ("agent", b"agent-a")]),
    ("WorkflowSubmitted", [("type", b"WorkflowSubmitted")]),
])
def test_headers_carry_type_task_and_agent(event_type: str, expected: list) -> None:
    _, hdrs = encode_event(SAMPLES[event_type])
    assert hdrs == expected
    assert header_value(hdrs, "type") == event_type


def test_header_value_reads_text_and_misses_cleanly() -> None:
    hdrs = headers("TaskStarted", task_id="t-é", agent_id=None)
    assert header_value(hdrs, "task") == "t-é"
    assert header_value(hdrs, "agent") is None
    assert header_value(None, "type") is None
    assert header_value([("type", b"\xff")], "type") is None


# --- poison ----------------------------------------------------------------------------

def _poison(data: bytes) -> PoisonMessage:
    with pytest.raises(PoisonMessage) as caught:
        decode(data)
    assert caught.value.reason
    return caught.value


def test_poison_empty_short_and_wrong_magic() -> None:
    value, _ = encode_event(SAMPLES["TaskFailed"])
    assert "shorter" in _poison(b"").reason
    assert "shorter" in _poison(value[:9]).reason
    assert "c301" in _poison(b"\x00\x01" + value[2:]).reason


def test_poison_unknown_fingerprint_names_it() -> None:
    value, _ = encode_event(SAMPLES["TaskFailed"])
    assert "0102030405060708" in _poison(MAGIC + bytes(range(1, 9)) + value[10:]).reason


@pytest.mark.parametrize("event_type", sorted(SAMPLES))
def test_poison_every_truncation_and_trailing_bytes(event_type: str) -> None:
    value, _ = encode_event(SAMPLES[event_type])
    for end in range(10, len(value)):
        assert _poison(value[:end]).event_type == event_type
    assert "left after" in _poison(value + b"\x00").reason


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_poison(data: bytes) -> None:
    try:
        decode_event(data)
    except PoisonMessage:
        pass


@settings(max_examples=300)
@given(st.sampled_from(sorted(SAMPLES)), st.binary(max_size=200))
def test_garbage_body_behind_a_known_fingerprint_raises_only_poison(event_type: str, body: bytes) -> None:
    try:
        decode_event(MAGIC + default_codec().catalog.current(event_type).fingerprint + body)
    except PoisonMessage:
        pass


def test_avro_valid_but_pydantic_invalid_is_poison_naming_the_field() -> None:
    value = encode("TaskFailed", {**FAILED_V1, "attempt": 0})
    with pytest.raises(PoisonMessage) as caught:
        decode_event(value)
    assert caught.value.event_type == "TaskFailed" and "attempt" in caught.value.reason


def test_schema_without_event_class_is_poison(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "Mystery", "namespace": "taskfold.events", "doc": "?",
              "fields": [{"name": "x", "type": "int"}]}
    (tmp_path / "Mystery.v1.avsc").write_text(json.dumps(schema))
    codec = Codec(Catalog.load(tmp_path))
    with pytest.raises(PoisonMessage, match="Mystery"):
        decode_event(codec.encode("Mystery", {"x": 1}), codec)


# --- encode errors ---------------------------------------------------------------------

def test_encode_unknown_type_is_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'TaskExploded'"):
        encode("TaskExploded", {})


@pytest.mark.parametrize(("record", "named"), [
    ({k: v for k, v in FAILED_V1.items() if k != "error"}, "error"),
    ({**FAILED_V1, "colour": "red"}, "colour"),
    ({**FAILED_V1, "attempt": 2**31}, "attempt"),
    ({**FAILED_V1, "retryable": "yes"}, "retryable"),
])
def test_encode_bad_record_is_value_error_naming_the_field(record: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        encode("TaskFailed", record)


# --- catalog and evolution -------------------------------------------------------------

@pytest.fixture
def schema_dir(tmp_path: Path) -> Path:
    """A copy of the published v1 schemas, to add versions to."""
    for path in default_directory().glob("*.avsc"):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def _add_version(directory: Path, event_type: str, version: int, extra_fields: list[dict]) -> None:
    schema = json.loads((directory / f"{event_type}.v1.avsc").read_text())
    schema["fields"] += extra_fields
    (directory / f"{event_type}.v{version}.avsc").write_text(json.dumps(schema))


def _only_v1(directory: Path, event_type: str = "TaskFailed") -> Codec:
    """Drop the published later versions of a type from the copy: these tests add their own v2."""
    for path in directory.glob(f"{event_type}.v*.avsc"):
        if path.name != f"{event_type}.v1.avsc":
            path.unlink()
    return Codec(Catalog.load(directory))


def test_catalog_lists_versions_and_finds_writers(schema_dir: Path) -> None:
    _only_v1(schema_dir)
    _add_version(schema_dir, "TaskFailed", 2, [{"name": "category", "type": "string", "default": "unknown"}])
    catalog = Catalog.load(schema_dir)
    failed = [(v.event_type, v.version, v.path.name) for v in catalog.versions() if v.event_type == "TaskFailed"]
    assert failed == [("TaskFailed", 1, "TaskFailed.v1.avsc"), ("TaskFailed", 2, "TaskFailed.v2.avsc")]
    assert catalog.current("TaskFailed").version == 2
    assert catalog.writer(catalog.current("TaskFailed").fingerprint).version == 2
    assert catalog.writer(b"\x00" * 8) is None
    with pytest.raises(KeyError, match="Nope"):
        catalog.current("Nope")


def test_v1_bytes_read_through_v2_reader_get_the_default(schema_dir: Path) -> None:
    old = _only_v1(schema_dir)
    _add_version(schema_dir, "TaskFailed", 2, [{"name": "category", "type": "string", "default": "unknown"}])
    new = Codec(Catalog.load(schema_dir))
    v1_bytes = old.encode("TaskFailed", FAILED_V1)
    assert new.decode(v1_bytes) == ("TaskFailed", {**FAILED_V1, "causation_id": None, "correlation_id": None,
                                                   "retryable": True, "category": "unknown"})
    v2_bytes = new.encode("TaskFailed", {**FAILED_V1, "category": "oom"})
    assert v2_bytes[2:10] != v1_bytes[2:10]
    assert new.decode(v2_bytes)[1]["category"] == "oom"
    # A reader whose catalog lacks v2 cannot read v2 bytes: schemas ship before writers use them.
    assert "unknown writer schema fingerprint" in pytest.raises(PoisonMessage, old.decode, v2_bytes).value.reason


def test_new_field_without_default_loads_but_old_bytes_become_poison(schema_dir: Path) -> None:
    old = _only_v1(schema_dir)
    _add_version(schema_dir, "TaskFailed", 2, [{"name": "category", "type": "string"}])
    new = Codec(Catalog.load(schema_dir))  # Avro itself accepts the file ...
    v1_bytes = old.encode("TaskFailed", FAILED_V1)
    with pytest.raises(PoisonMessage) as caught:  # ... but v1 bytes no longer resolve.
        new.decode(v1_bytes)
    assert "category" in caught.value.reason and "TaskFailed.v1.avsc" in caught.value.reason


BAD_FILES = [
    ("TaskFailed.v2.avsc", '{"type": "record", "name": ', "not valid JSON"),
    ("TaskFailed.v2.avsc", '["null"]', "top level"),
    ("TaskFailed.v2.avsc", {"fields": [{"name": "a", "type": "strnig"}]}, "field 'a'"),
    ("TaskFailed.v2.avsc", {"fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]}, "'a' appears twice"),
    ("TaskFailed.v2.avsc", {"fields": [{"name": "a", "type": ["string", "null"], "default": None}]}, "first branch"),
    ("TaskFailed.v2.avsc", {"fields": [{"name": "a", "type": "int", "default": "1"}]}, "field 'a'"),
    ("TaskFailed.v2.avsc", {"name": "TaskFialed"}, "file name requires 'taskfold.events.TaskFailed'"),
    ("TaskFailed.v2.avsc", {"namespace": "other"}, "file name requires"),
    ("TaskFailed.v2.avsc", {"name": None}, "not a valid Avro schema"),
    ("TaskFailed.avsc", {}, "file name must look like"),
    ("TaskFailed.v0.avsc", {}, "versions start at 1"),
    ("TaskFailed.v01.avsc", {}, "duplicate version 1"),
    ("TaskFailed.v2.avsc", {"doc": "only the doc changed"}, "same parsing canonical form as TaskFailed.v1.avsc"),
]


@pytest.mark.parametrize(("file_name", "content", "message"), BAD_FILES, ids=[m for _, _, m in BAD_FILES])
def test_malformed_schema_file_is_schema_file_error_naming_it(schema_dir: Path, file_name: str, content, message: str) -> None:
    if isinstance(content, dict):  # a change to a copy of TaskFailed.v1
        schema = json.loads((schema_dir / "TaskFailed.v1.avsc").read_text())
        schema.update({k: v for k, v in content.items() if k != "fields"})
        schema["fields"] += content.get("fields", [])
        content = json.dumps(schema)
    (schema_dir / file_name).write_text(content)
    with pytest.raises(SchemaFileError) as caught:
        Catalog.load(schema_dir)
    assert file_name in str(caught.value)
    assert message in str(caught.value)


def test_schemas_package_does_not_import_taskfold() -> None:
    # The codec is a pure bytes layer; only taskfold.log.wire knows the pydantic classes.
    code = "import sys, schemas.codec; print(sorted(m for m in sys.modules if m.startswith('taskfold')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
