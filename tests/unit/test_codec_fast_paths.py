"""The codec's fast paths (issue 12) change no byte on the wire and no verdict or error.

`encode_record` skips the Avro schema check for validated models and `Codec.decode` keeps
how to read each writer fingerprint. The bytes must equal the published samples, every
record must round-trip, and every bad input must fail with the words it failed with before
the fast paths (the reasons below were recorded from the code before them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Annotated, get_args, get_origin

import pytest

import schemas.codec as codec_module
from schemas.catalog import Catalog
from schemas.codec import MAGIC, Codec, PoisonMessage, default_codec, encode, headers
from taskfold.core.events import EVENT_CLASSES, Candidate, TaskAssigned
from taskfold.core.telemetry import RECORD_CLASSES
from taskfold.log.wire import decode_record, encode_record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
_spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)
SAMPLES = {**make_fixtures.sample_events(), **make_fixtures.sample_records()}
CATALOG = default_codec().catalog
FAILED = dict(event_id="e", queue="q", occurred_at=1, actor="a", task_id="t", attempt=1, agent_id="g", error="boom")
INT32 = (-(2**31), 2**31 - 1)
WHERE = "TaskAssigned written with TaskAssigned.v1.avsc, read with TaskAssigned.v1.avsc"


def _assigned(candidates: int) -> TaskAssigned:
    sample = SAMPLES["TaskAssigned"]
    seats = [Candidate(agent_id=f"agent-{i}", score=1.0 - i / 7, load=i % 3, slots=4, eligible=i % 5 != 4,
                       reason="no free slot" if i % 5 == 4 else None) for i in range(candidates)]
    return TaskAssigned.model_validate({**sample.model_dump(), "candidates": seats})


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_encoding_a_sample_gives_the_bytes_of_its_published_fixture(type_name: str) -> None:
    current = CATALOG.current(type_name)
    fixture = FIXTURES / f"{type_name}.v{current.version}.bin"
    value, _ = encode_record(SAMPLES[type_name])
    assert value == fixture.read_bytes()
    assert value == encode(type_name, SAMPLES[type_name].model_dump(mode="json"))  # the checked path too


@pytest.mark.parametrize("record", [*SAMPLES.values(), _assigned(16)], ids=[*SAMPLES, "TaskAssigned-16"])
def test_decode_of_encode_is_the_record(record: Any) -> None:
    value, _ = encode_record(record)
    assert decode_record(value) == record
    assert decode_record(bytearray(value)) == record == decode_record(memoryview(value))


def test_encode_record_does_not_check_the_schema_of_a_validated_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any) -> str:
        raise AssertionError("the schema check ran for a validated model")

    monkeypatch.setattr(codec_module, "_record_mismatch", refuse)
    for record in [*SAMPLES.values(), _assigned(16)]:
        encode_record(record)


@pytest.mark.parametrize("type_name", sorted(SAMPLES))
def test_encode_record_headers_are_the_task_and_agent_properties(type_name: str) -> None:
    record = SAMPLES[type_name]
    assert encode_record(record)[1] == headers(type_name, record.task, record.agent)


def test_encode_record_never_misses_an_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    # A miss goes through pydantic's __getattr__, which builds an AttributeError: about
    # 3 µs, a third of encoding a small event without a task or an agent.
    def miss(self: Any, name: str) -> Any:
        raise AssertionError(f"encode_record looked up the missing attribute {name!r}")

    for type_name in ("AgentLeft", "TaskCancelRequested", "Heartbeat"):
        monkeypatch.setattr(type(SAMPLES[type_name]), "__getattr__", miss)
        encode_record(SAMPLES[type_name])


def test_decode_looks_each_writer_fingerprint_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = Codec(Catalog.load())
    lookups: list[bytes] = []
    writer = codec.catalog.writer
    monkeypatch.setattr(codec.catalog, "writer", lambda fp: lookups.append(fp) or writer(fp))
    value, _ = encode_record(SAMPLES["TaskStarted"])
    old = (FIXTURES / "TaskSubmitted.v1.bin").read_bytes()
    for _ in range(3):
        assert codec.decode(value)[0] == "TaskStarted"
        assert codec.decode(old)[1]["dependencies_may_follow"] is False  # v1 read through the v2 reader
    assert sorted(lookups) == sorted([value[2:10], old[2:10]])


def _poison(data: Any) -> tuple[str, str | None]:
    with pytest.raises(PoisonMessage) as caught:
        decode_record(data)
    return caught.value.reason, caught.value.event_type


def _assigned_bytes() -> bytes:
    return encode_record(SAMPLES["TaskAssigned"])[0]


@pytest.mark.parametrize(("data", "reason", "event_type"), [
    (lambda: b"", "0 bytes is shorter than the 10-byte single-object header", None),
    (lambda: _assigned_bytes()[:9], "9 bytes is shorter than the 10-byte single-object header", None),
    (lambda: b"\x00\x01" + _assigned_bytes()[2:], "marker bytes are 0001, not c301 (Avro single-object encoding)",
     None),
    (lambda: MAGIC + bytes(range(1, 9)) + _assigned_bytes()[10:],
     "unknown writer schema fingerprint 0102030405060708", None),
    (lambda: "abc", "value is str, not bytes", None),
    (lambda: _assigned_bytes()[:20], f"{WHERE}: cannot read body: EOFError: Expected 9 bytes, read 4",
     "TaskAssigned"),
    (lambda: _assigned_bytes()[:-1], f"{WHERE}: cannot read body: EOFError", "TaskAssigned"),
    (lambda: _assigned_bytes() + b"\x00", f"{WHERE}: 1 bytes left after the record", "TaskAssigned"),
    (lambda: _assigned_bytes()[:10] + b"\xff" * 30,
     f"{WHERE}: cannot read body: IndexError: string index out of range", "TaskAssigned"),
    (lambda: encode("TaskFailed", {**FAILED, "attempt": 0}),
     "TaskFailed fails validation: attempt: Input should be greater than or equal to 1", "TaskFailed"),
    (lambda: encode("TaskFailed", {**FAILED, "queue": "no spaces"}),
     "TaskFailed fails validation: queue: String should match pattern '^[A-Za-z0-9._#:-]+$'", "TaskFailed"),
    (lambda: encode("TaskCompleted", {**{k: v for k, v in FAILED.items() if k != "error"}, "result": "{no"}),
     "TaskCompleted fails validation: result: Value error, result must be JSON text: "
     "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)", "TaskCompleted"),
], ids=["empty", "short", "magic", "fingerprint", "str", "truncated", "last-byte", "trailing", "garbage",
        "attempt-0", "queue-name", "json-result"])
def test_poison_reasons_are_unchanged(data: Any, reason: str, event_type: str | None) -> None:
    assert _poison(data()) == (reason, event_type)


MISMATCH = "TaskFailed record does not match TaskFailed.v2.avsc: "
SURROGATE = "cannot encode TaskFailed: 'utf-8' codec can't encode character '\\ud800' in position 0: surrogates not allowed"


@pytest.mark.parametrize(("record", "message"), [
    ({k: v for k, v in FAILED.items() if k != "error"}, MISMATCH + "missing field(s) error"),
    ({**FAILED, "colour": "red"}, MISMATCH + "field(s) not in the schema colour"),
    ({**FAILED, "attempt": 2**31}, MISMATCH + "taskfold.events.TaskFailed.attempt is 2147483648, expected int"),
    ({**FAILED, "retryable": "yes"}, MISMATCH + "taskfold.events.TaskFailed.retryable is 'yes', expected boolean"),
    ({**FAILED, "error": "\ud800"}, SURROGATE),
], ids=["missing", "extra", "int32", "boolean", "surrogate"])
def test_encode_errors_are_unchanged_on_both_paths(record: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        default_codec().encode("TaskFailed", record)
    assert str(caught.value) == message
    # encode_valid trusts what a validated model dumps (no unknown keys, ints in range,
    # types right); where the writer refuses the record, it explains it in the same words.
    try:
        default_codec().encode_valid("TaskFailed", record)
    except ValueError as exc:
        assert str(exc) == message


@pytest.mark.parametrize(("update", "message"), [
    ({"retryable": "yes"}, MISMATCH + "taskfold.events.TaskFailed.retryable is 'yes', expected boolean"),
    ({"attempt": "2"}, MISMATCH + "taskfold.events.TaskFailed.attempt is '2', expected int"),
    ({"error": "\ud800"}, SURROGATE),
], ids=["boolean", "int", "surrogate"])
def test_a_model_changed_without_validation_still_fails_naming_the_field(update: dict, message: str) -> None:
    # model_copy(update=...) skips validation; fastavro alone would write "yes" as true.
    record = SAMPLES["TaskFailed"].model_copy(update=update)
    with pytest.raises(ValueError) as caught:
        encode_record(record)
    assert str(caught.value) == message


@pytest.mark.parametrize("type_name", sorted({*EVENT_CLASSES, *RECORD_CLASSES}))
def test_every_avro_int_is_bounded_to_32_bits_by_its_model(type_name: str) -> None:
    # fastavro writes any Python int into an Avro int; only the model's bounds keep it in
    # range once encode_record no longer runs the schema check.
    model = EVENT_CLASSES.get(type_name) or RECORD_CLASSES[type_name]
    out_of_range = [f"{path} allows {low}..{high}"
                    for path, (low, high) in _avro_ints(model, CATALOG.current(type_name).schema)
                    if low < INT32[0] or high > INT32[1]]
    assert not out_of_range, f"{type_name}: Avro ints the model does not bound to 32 bits: {out_of_range}"


def _avro_ints(model: Any, record: dict[str, Any], where: str = "") -> list[tuple[str, tuple[float, float]]]:
    """(field path, the model's bounds) of every Avro int in a record, its nested records, maps and arrays."""
    found = []
    for avro_field in record["fields"]:
        info = model.model_fields[avro_field["name"]]
        found += _ints_in(avro_field["type"], info.annotation, list(info.metadata), f"{where}{avro_field['name']}")
    return found


def _ints_in(avro_type: Any, annotation: Any, marks: list, path: str) -> list[tuple[str, tuple[float, float]]]:
    while get_origin(annotation) is Annotated:  # constraints written inside list[...] or dict[...]
        marks = marks + [m for a in get_args(annotation)[1:] for m in getattr(a, "metadata", [a])]
        annotation = get_args(annotation)[0]
    if isinstance(avro_type, list):  # ["null", X] is `X | None`
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _ints_in(avro_type[1], inner[0] if inner else annotation, marks, path)
    if avro_type == "int":
        lows = [m.ge for m in marks if getattr(m, "ge", None) is not None]
        highs = [m.le for m in marks if getattr(m, "le", None) is not None]
        return [(path, (max(lows, default=float("-inf")), min(highs, default=float("inf"))))]
    if not isinstance(avro_type, dict):
        return []
    if avro_type["type"] == "array":
        return _ints_in(avro_type["items"], get_args(annotation)[0], [], f"{path}[]")
    if avro_type["type"] == "map":
        return _ints_in(avro_type["values"], get_args(annotation)[1], [], f"{path}{{}}")
    if avro_type["type"] == "record":
        return _avro_ints(annotation, avro_type, f"{path}.")
    return []
