"""The pydantic classes (events, and the telemetry records heartbeat and progress chunk) and
the current `.avsc` of each type describe the same records.

Same field names in the same order, same types (nullability, nested records and enums
included) and same defaults. Failures name the event type and the field path.
"""

from __future__ import annotations

import types
from enum import Enum
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, TypeAdapter

from schemas.catalog import NAMESPACE, Catalog
from taskfold.core.events import EVENT_CLASSES
from taskfold.core.telemetry import RECORD_CLASSES

CATALOG = Catalog.load()
# Every schema in the catalog is either an event (folded, with the envelope) or a telemetry record.
ALL_CLASSES: dict[str, type[BaseModel]] = {**EVENT_CLASSES, **RECORD_CLASSES}
EVENT_VERSIONS = [v for v in CATALOG.versions() if v.event_type in EVENT_CLASSES]
PRIMITIVES = {str: ("string",), bool: ("boolean",), float: ("double",), int: ("int", "long")}
ENVELOPE = ["event_id", "queue", "occurred_at", "actor", "causation_id", "correlation_id"]


def _strip(annotation: Any) -> Any:
    """The annotation without its Annotated[...] constraints."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _resolve(avro_type: Any, names: dict[str, Any]) -> Any:
    """A named-type reference replaced by its definition."""
    return names.get(avro_type, avro_type) if isinstance(avro_type, str) else avro_type


def _kind(avro_type: Any) -> str:
    if isinstance(avro_type, list):
        return "union " + str(avro_type)
    return avro_type if isinstance(avro_type, str) else avro_type["type"]


def type_mismatches(annotation: Any, avro_type: Any, names: dict[str, Any], where: str) -> list[str]:
    """Differences between a pydantic annotation and an Avro type, each naming the field path."""
    annotation, avro_type = _strip(annotation), _resolve(avro_type, names)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(others) == len(args):
            return [f"{where}: pydantic type {annotation} is not `X | None`; the contract has no other unions"]
        if not (isinstance(avro_type, list) and len(avro_type) == 2 and avro_type[0] == "null"):
            return [f"{where}: pydantic is optional ({annotation}), avsc type must be [\"null\", X], "
                    f"is {avro_type!r}"]
        return type_mismatches(others[0], avro_type[1], names, where)
    if isinstance(avro_type, list):
        return [f"{where}: avsc type is a union {avro_type!r}, pydantic type {annotation} is not optional"]
    kind = _kind(avro_type)
    if annotation in PRIMITIVES:
        expected = PRIMITIVES[annotation]
        ok = kind in expected
        return [] if ok else [f"{where}: pydantic {annotation.__name__} needs avsc {' or '.join(expected)}, is {kind}"]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        symbols = [member.value for member in annotation]
        if kind != "enum" or avro_type["name"] != f"{NAMESPACE}.{annotation.__name__}":
            return [f"{where}: pydantic enum {annotation.__name__} needs avsc enum "
                    f"{NAMESPACE}.{annotation.__name__}, is {avro_type.get('name', kind) if isinstance(avro_type, dict) else kind}"]
        return [] if avro_type["symbols"] == symbols else [
            f"{where}: enum {annotation.__name__} symbols differ: avsc {avro_type['symbols']}, pydantic {symbols}"]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if kind != "record" or avro_type["name"] != f"{NAMESPACE}.{annotation.__name__}":
            return [f"{where}: pydantic model {annotation.__name__} needs avsc record "
                    f"{NAMESPACE}.{annotation.__name__}, is {kind}"]
        return record_mismatches(annotation, avro_type, names, where)
    if origin is list:
        if kind != "array":
            return [f"{where}: pydantic list needs avsc array, is {kind}"]
        return type_mismatches(args[0], avro_type["items"], names, f"{where}[]")
    if origin is dict:
        if kind != "map" or _strip(args[0]) is not str:
            return [f"{where}: pydantic {annotation} needs avsc map (with str keys), is {kind}"]
        return type_mismatches(args[1], avro_type["values"], names, f"{where}{{}}")
    return [f"{where}: pydantic type {annotation} has no Avro mapping in this test"]


def default_mismatches(model: type[BaseModel], name: str, avro_field: dict[str, Any], where: str) -> list[str]:
    """Differences between a pydantic default and an avsc default (both or neither, and equal)."""
    info = model.model_fields[name]
    if info.is_required():
        return [f"{where}: avsc has default {avro_field['default']!r}, pydantic field is required"] \
            if "default" in avro_field else []
    if "default" not in avro_field:
        return [f"{where}: pydantic has a default, avsc has none"]
    # The avsc default is JSON; dump the pydantic default the way the codec sends it.
    expected = TypeAdapter(info.annotation).dump_python(info.get_default(call_default_factory=True), mode="json")
    if expected != avro_field["default"]:
        return [f"{where}: default differs: avsc {avro_field['default']!r}, pydantic {expected!r}"]
    return []


def record_mismatches(model: type[BaseModel], record: dict[str, Any], names: dict[str, Any], where: str) -> list[str]:
    """Differences between a pydantic model and an Avro record, field by field."""
    avro_names = [f["name"] for f in record["fields"]]
    model_names = list(model.model_fields)
    problems = []
    if avro_names != model_names:
        first = next((i for i, (a, m) in enumerate(zip(avro_names, model_names)) if a != m),
                     min(len(avro_names), len(model_names)))
        problems.append(
            f"{where}: field names or order differ from position {first}: "
            f"avsc {avro_names[first:]}, pydantic {model_names[first:]}")
    for avro_field in record["fields"]:
        name = avro_field["name"]
        if name not in model.model_fields:
            continue
        path = f"{where}.{name}"
        problems += type_mismatches(model.model_fields[name].annotation, avro_field["type"], names, path)
        problems += default_mismatches(model, name, avro_field, path)
    return problems


def test_every_event_class_has_a_schema_and_every_schema_a_class() -> None:
    classes, schemas = set(ALL_CLASSES), set(CATALOG.event_types())
    assert classes - schemas == set(), f"classes without a schema in schemas/avro: {sorted(classes - schemas)}"
    assert schemas - classes == set(), (
        f"schemas without a class in taskfold/core/events.py or taskfold/core/telemetry.py: {sorted(schemas - classes)}")


def test_telemetry_records_are_not_events() -> None:
    # The fold and EVENT_CLASSES hold only the event types of ARCHITECTURE section 4.
    assert set(EVENT_CLASSES) & set(RECORD_CLASSES) == set()


@pytest.mark.parametrize("type_name", sorted(ALL_CLASSES))
def test_current_schema_matches_event_class(type_name: str) -> None:
    if type_name not in CATALOG:
        pytest.fail(f"{type_name}: no schema file schemas/avro/{type_name}.v<N>.avsc")
    current = CATALOG.current(type_name)
    cls = ALL_CLASSES[type_name]
    problems = record_mismatches(cls, current.schema, current.schema["__named_schemas"], type_name)
    assert not problems, f"{current.path.name} differs from {cls.__module__}.{type_name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("entry", EVENT_VERSIONS, ids=lambda e: e.path.name)
def test_every_version_starts_with_the_envelope(entry) -> None:
    names = [f["name"] for f in entry.schema["fields"]]
    assert names[: len(ENVELOPE)] == ENVELOPE, f"{entry.path.name}: envelope fields must come first, in order"


@pytest.mark.parametrize("entry", CATALOG.versions(), ids=lambda e: e.path.name)
def test_times_are_long_and_every_named_type_has_a_doc(entry) -> None:
    # Milliseconds since the epoch overflow a 32-bit Avro int in 1970 + 25 days.
    problems = []
    for named in entry.schema["__named_schemas"].values():
        if not named.get("doc"):
            problems.append(f"{named['name']} has no doc")
        for fld in named.get("fields", []):
            if fld["name"].endswith("_ms") or fld["name"] in ("occurred_at", "not_before"):
                branches = fld["type"] if isinstance(fld["type"], list) else [fld["type"]]
                if "int" in branches:
                    problems.append(f"{named['name']}.{fld['name']} is a time in ms and must be long")
    assert not problems, f"{entry.path.name}: " + "; ".join(problems)


def test_the_contract_check_names_type_and_field() -> None:
    # Guard the guard: a wrong schema must produce a message naming the field path.
    from taskfold.core.events import TaskFailed

    current = CATALOG.current("TaskFailed")
    broken = {**current.schema, "fields": [
        {**f, "type": "int"} if f["name"] == "retryable" else f for f in current.schema["fields"]]}
    problems = record_mismatches(TaskFailed, broken, current.schema["__named_schemas"], "TaskFailed")
    assert problems == ["TaskFailed.retryable: pydantic bool needs avsc boolean, is int"]
