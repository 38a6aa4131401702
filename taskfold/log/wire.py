"""The bridge between the pydantic records and the Avro codec: record <-> Kafka value and headers.

`schemas.codec` moves plain dicts; this module turns an event (or a telemetry record:
heartbeat, progress chunk) into such a dict (enums as their symbols, nested models as
dicts) and validates decoded dicts back into models. A decoded record that pydantic
refuses is as poisonous as bytes Avro refuses, so both raise `PoisonMessage`.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from schemas.codec import Codec, Headers, PoisonMessage, default_codec, header_value, headers
from taskfold.core.events import EVENT_CLASSES, Event, UnknownEventType, event_class
from taskfold.core.telemetry import RECORD_CLASSES, TelemetryRecord

__all__ = [
    "PoisonMessage", "decode_event", "decode_record", "encode_event", "encode_record", "event_headers",
    "header_value", "record_class", "record_type",
]

Record = Event | TelemetryRecord


def event_headers(event: Event) -> Headers:
    """The Kafka headers `type`, `task` and `agent` of an event."""
    return headers(event.event_type, event.task, event.agent)


def encode_event(event: Event, codec: Codec | None = None) -> tuple[bytes, Headers]:
    """The Kafka value (Avro single-object encoding) and headers of an event."""
    return encode_record(event, codec)


def decode_event(value: bytes, codec: Codec | None = None) -> Event:
    """The event in a Kafka value, or PoisonMessage saying why there is none."""
    type_name, record = (codec or default_codec()).decode(value)
    try:
        cls = event_class(type_name)
    except UnknownEventType as exc:
        raise PoisonMessage(f"{type_name} has a schema but no event class: {exc}", type_name) from None
    return _validate(cls, type_name, record)  # type: ignore[return-value]


def record_type(record: Record) -> str:
    """The schema type name of an event or a telemetry record."""
    return record.event_type if isinstance(record, Event) else record.record_type


def record_class(type_name: str) -> type[BaseModel]:
    """The pydantic class of any schema type, event or telemetry; KeyError naming it if none."""
    cls = EVENT_CLASSES.get(type_name) or RECORD_CLASSES.get(type_name)
    if cls is None:
        known = ", ".join(sorted({*EVENT_CLASSES, *RECORD_CLASSES}))
        raise KeyError(f"unknown record type {type_name!r}; known types: {known}")
    return cls


def encode_record(record: Record, codec: Codec | None = None) -> tuple[bytes, Headers]:
    """The Kafka value and headers (`type`, `task`, `agent`) of an event or a telemetry record."""
    # mode="json" turns enums into their symbol strings and nested models into dicts;
    # numbers stay numbers (inf and nan too: only JSON text would turn them into null).
    name, codec = record_type(record), codec or default_codec()
    try:
        # pydantic's serializer checks every value against its field's type as it dumps;
        # with that and the model's validation, the codec need not check the schema again.
        value = codec.encode_valid(name, type(record).__pydantic_serializer__.to_python(
            record, mode="json", warnings="error"))  # model_dump(mode="json") without its wrapper
    except PydanticSerializationError:
        # A value set without validation (model_copy(update=...), model_construct) has the
        # wrong type: the codec's full check names the field, as it always did.
        value = codec.encode(name, record.model_dump(mode="json", warnings=False))
    return value, _headers(name, record)


def _headers(name: str, record: Record) -> Headers:
    """`headers(name, record.task, record.agent)`, read from the fields directly."""
    # Those properties are getattr(self, "task_id", None): on a model without the field,
    # pydantic's __getattr__ builds and raises an AttributeError, a third of an encode.
    fields = vars(record)
    return headers(name, fields.get("task_id"), fields.get("agent_id"))


def decode_record(value: bytes, codec: Codec | None = None) -> Record:
    """The event or telemetry record in a Kafka value, or PoisonMessage saying why there is none."""
    type_name, record = (codec or default_codec()).decode(value)
    try:
        cls = record_class(type_name)
    except KeyError as exc:
        raise PoisonMessage(f"{type_name} has a schema but no class: {exc}", type_name) from None
    return _validate(cls, type_name, record)  # type: ignore[return-value]


def _validate(cls: type[BaseModel], type_name: str, record: dict) -> BaseModel:
    try:
        # The class's own validator, without model_validate's keyword handling: the same checks.
        return cls.__pydantic_validator__.validate_python(record)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(record)'}: {err['msg']}" for err in exc.errors())
        raise PoisonMessage(f"{type_name} fails validation: {problems}", type_name) from None
