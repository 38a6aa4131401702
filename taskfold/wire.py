"""The bridge between the pydantic events and the Avro codec: event <-> Kafka value and headers.

`schemas.codec` moves plain dicts; this module turns an event into such a dict (enums as
their symbols, nested models as dicts) and validates decoded dicts back into events. A
decoded record that pydantic refuses is as poisonous as bytes Avro refuses, so both
raise `PoisonMessage`.
"""

from __future__ import annotations

from pydantic import ValidationError

from schemas.codec import Codec, Headers, PoisonMessage, default_codec, header_value, headers
from taskfold.events import Event, UnknownEventType, event_class

__all__ = ["PoisonMessage", "decode_event", "encode_event", "event_headers", "header_value"]


def event_headers(event: Event) -> Headers:
    """The Kafka headers `type`, `task` and `agent` of an event."""
    return headers(event.event_type, event.task, event.agent)


def encode_event(event: Event, codec: Codec | None = None) -> tuple[bytes, Headers]:
    """The Kafka value (Avro single-object encoding) and headers of an event."""
    # mode="json" turns enums into their symbol strings and nested models into dicts;
    # numbers stay numbers (inf and nan too: only JSON text would turn them into null).
    record = event.model_dump(mode="json")
    value = (codec or default_codec()).encode(event.event_type, record)
    return value, event_headers(event)


def decode_event(value: bytes, codec: Codec | None = None) -> Event:
    """The event in a Kafka value, or PoisonMessage saying why there is none."""
    event_type, record = (codec or default_codec()).decode(value)
    try:
        cls = event_class(event_type)
    except UnknownEventType as exc:
        raise PoisonMessage(f"{event_type} has a schema but no event class: {exc}", event_type) from None
    try:
        return cls.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(record)'}: {err['msg']}" for err in exc.errors())
        raise PoisonMessage(f"{event_type} fails validation: {problems}", event_type) from None
