"""Avro single-object encoding of event records, and the Kafka headers that travel with them.

Wire format (Avro spec, "Single object encoding"):

1. two marker bytes `C3 01`;
2. the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema;
3. the Avro binary body, written with that schema.

To decode, the writer schema is looked up by fingerprint and the body is read through the
current schema of the same type, so Avro's own resolution handles evolution. Every way
bytes can be bad becomes one exception, `PoisonMessage`, so a consumer can park the
message on the poison topic and carry on. This module works on plain dicts and knows
nothing of the pydantic classes (`taskfold.log.wire` bridges the two).
"""

from __future__ import annotations

import io
import re
import threading
from typing import Any, Iterable, NamedTuple, Sequence

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from schemas.catalog import Catalog, SchemaVersion

MAGIC = b"\xc3\x01"
FINGERPRINT_SIZE = 8
HEADER_SIZE = len(MAGIC) + FINGERPRINT_SIZE
HEADER_TYPE, HEADER_TASK, HEADER_AGENT = "type", "task", "agent"

Headers = list[tuple[str, bytes]]


class PoisonMessage(Exception):
    """Bytes that cannot be decoded into an event; `.reason` says why, for a person."""

    def __init__(self, reason: str, event_type: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.event_type = event_type


class Codec:
    """Encodes and decodes event records with the schemas of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        # A catalog never changes once loaded, so a fingerprint always reads the same way.
        self._readings: dict[bytes, _Reading] = {}

    def encode(self, event_type: str, record: dict[str, Any]) -> bytes:
        """Single-object encoding of a record with the current schema of its type."""
        current = self._current(event_type)
        problem = _record_mismatch(record, current.schema)
        if problem:
            raise ValueError(f"{event_type} record does not match {current.path.name}: {problem}")
        return self._write(event_type, current, record)

    def encode_valid(self, event_type: str, record: dict[str, Any]) -> bytes:
        """Like `encode`, for a record dumped from a validated model: the schema check runs only if writing fails."""
        # Validated models already fit their schema (the contract test keeps the classes
        # and the schemas equal), so the schema check would cost more than writing. When
        # the writer refuses, explain the failure exactly as `encode` would have.
        current = self._current(event_type)
        try:
            return self._write(event_type, current, record)
        except ValueError:
            problem = _record_mismatch(record, current.schema)
            if problem:
                raise ValueError(f"{event_type} record does not match {current.path.name}: {problem}") from None
            raise

    def _current(self, event_type: str) -> SchemaVersion:
        """The writer schema of a type; ValueError listing the known types if there is none."""
        if event_type not in self.catalog:
            known = ", ".join(self.catalog.event_types())
            raise ValueError(f"cannot encode unknown event type {event_type!r}; known types: {known}")
        return self.catalog.current(event_type)

    def _write(self, event_type: str, current: SchemaVersion, record: dict[str, Any]) -> bytes:
        """Header and Avro body; ValueError naming the type if the writer refuses the record."""
        sink = _Sink()
        try:
            schemaless_writer(sink, current.schema, record)
        except (ValueError, TypeError, OverflowError, AttributeError, KeyError) as exc:  # e.g. a lone surrogate
            raise ValueError(f"cannot encode {event_type}: {exc}") from None
        return MAGIC + current.fingerprint + sink.body

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """The event type and record in single-object encoded bytes, or PoisonMessage."""
        if not isinstance(data, bytes):
            if not isinstance(data, (bytearray, memoryview)):
                raise PoisonMessage(f"value is {type(data).__name__}, not bytes")
            data = bytes(data)
        if len(data) < HEADER_SIZE:
            raise PoisonMessage(f"{len(data)} bytes is shorter than the {HEADER_SIZE}-byte single-object header")
        if data[:2] != MAGIC:
            raise PoisonMessage(f"marker bytes are {data[:2].hex()}, not c301 (Avro single-object encoding)")
        fingerprint = data[2:HEADER_SIZE]
        reading = self._readings.get(fingerprint) or self._reading(fingerprint)
        buf = io.BytesIO(data)
        buf.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(buf, reading.writer_schema, reading.reader_schema)
        except Exception as exc:  # fastavro signals bad bytes with many unrelated types
            detail = _FILE_REPR.sub("the body", f"{type(exc).__name__}: {exc}".rstrip(": "))
            raise PoisonMessage(f"{reading.where}: cannot read body: {detail}", reading.event_type) from None
        trailing = len(data) - buf.tell()
        if trailing:
            raise PoisonMessage(f"{reading.where}: {trailing} bytes left after the record", reading.event_type)
        if not isinstance(record, dict):
            raise PoisonMessage(f"{reading.where}: body is not a record", reading.event_type)
        return reading.event_type, record

    def _reading(self, fingerprint: bytes) -> _Reading:
        """How to read bytes of one writer fingerprint, looked up once and kept."""
        writer = self.catalog.writer(fingerprint)
        if writer is None:
            raise PoisonMessage(f"unknown writer schema fingerprint {fingerprint.hex()}")
        reader = self.catalog.current(writer.event_type)
        reading = _Reading(
            writer.event_type, writer.schema, None if reader is writer else reader.schema,
            f"{writer.event_type} written with {writer.path.name}, read with {reader.path.name}")
        self._readings[fingerprint] = reading
        return reading


class _Reading(NamedTuple):
    """The schemas that read one writer fingerprint, and the words that name them in a PoisonMessage."""

    event_type: str
    writer_schema: dict[str, Any]
    reader_schema: dict[str, Any] | None
    where: str


class _Sink:
    """Receives the one write of `schemaless_writer`, which hands over the whole body at once."""

    __slots__ = ("body",)

    def __init__(self) -> None:
        self.body = b""

    def write(self, body: bytes | bytearray) -> None:
        self.body += body


def _record_mismatch(record: Any, schema: dict[str, Any]) -> str | None:
    """Why a record does not fit its schema, in a line a person can read, or None."""
    if not isinstance(record, dict):
        return f"expected a dict, got {type(record).__name__}"
    fields = {f["name"]: f for f in schema["fields"]}
    missing = [name for name, f in fields.items() if name not in record and "default" not in f]
    extra = [name for name in record if name not in fields]
    if missing or extra:
        return "; ".join(filter(None, [
            missing and f"missing field(s) {', '.join(missing)}",
            extra and f"field(s) not in the schema {', '.join(extra)}"]))
    try:
        # Not strict: a missing field with a default gets the default, as the writer does.
        # Keys a nested record lacks are not caught here; the contract test keeps the
        # pydantic classes (the usual source of records) equal to the schemas.
        validate(record, schema, raise_errors=True)
    except ValidationError as exc:
        # fastavro prints the whole expected schema; the field path and value are enough.
        return "; ".join(
            f"{e.field} is {_clip(repr(e.datum))}, expected {_clip(_type_name(e.schema))}" for e in exc.errors)
    return None


def _type_name(schema: Any) -> str:
    """A short name for an Avro type, for messages."""
    if isinstance(schema, list):
        return " | ".join(_type_name(branch) for branch in schema)
    if isinstance(schema, dict):
        return str(schema.get("name") or schema.get("type"))
    return str(schema)


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_FILE_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")
_default: Codec | None = None
_default_lock = threading.Lock()


def default_codec() -> Codec:
    """The codec over the packaged schemas, built on first use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Codec(Catalog.load())
    return _default


def encode(event_type: str, record: dict[str, Any]) -> bytes:
    """Encode with the default codec; ValueError for an unknown type or a bad record."""
    return default_codec().encode(event_type, record)


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode with the default codec; PoisonMessage for any bytes that are not an event."""
    return default_codec().decode(data)


def headers(event_type: str, task_id: str | None = None, agent_id: str | None = None) -> Headers:
    """Kafka headers `type`, `task` and `agent` (absent ones left out), values UTF-8."""
    pairs = [(HEADER_TYPE, event_type), (HEADER_TASK, task_id), (HEADER_AGENT, agent_id)]
    return [(name, value.encode("utf-8")) for name, value in pairs if value is not None]


def header_value(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> str | None:
    """The first value of a header as text, or None if absent (or not UTF-8)."""
    for key, value in headers or ():
        if key == name and value is not None:
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


__all__: Sequence[str] = (
    "Codec", "Headers", "MAGIC", "PoisonMessage", "decode", "default_codec", "encode",
    "header_value", "headers",
)
