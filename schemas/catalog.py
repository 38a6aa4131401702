"""The schema catalog: every published `<EventType>.v<N>.avsc`, indexed by fingerprint and type.

A published file is never edited. A change is a new version file whose new fields have
defaults; the highest version of a type is its current reader (and writer) schema, and
every older version stays here so that bytes written with it can still be resolved.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

NAMESPACE = "taskfold.events"
FILE_NAME = re.compile(r"^(?P<type>[A-Z][A-Za-z0-9]*)\.v(?P<version>[0-9]+)\.avsc$")
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class SchemaFileError(Exception):
    """A `.avsc` file that cannot be part of the catalog; the message names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path.name}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class SchemaVersion:
    """One published schema file: its event type, version, fingerprint and parsed schema."""

    event_type: str
    version: int
    fingerprint: bytes
    path: Path
    canonical_form: str
    schema: dict[str, Any] = field(repr=False, compare=False)


def default_directory() -> Path:
    """The `avro/` folder shipped inside the `schemas` package."""
    return Path(__file__).resolve().parent / "avro"


def fingerprint64(canonical_form: str) -> bytes:
    """CRC-64-AVRO of a Parsing Canonical Form, as the 8 little-endian bytes the spec puts on the wire."""
    # fastavro returns the hex of the little-endian bytes, like Java's
    # SchemaNormalization.fingerprint("CRC-64-AVRO", ...); tests pin this with spec vectors.
    return bytes.fromhex(_fastavro_fingerprint(canonical_form, "CRC-64-AVRO"))


class Catalog:
    """Every schema version, by fingerprint (writers) and by event type (current readers)."""

    def __init__(self, versions: Iterable[SchemaVersion]) -> None:
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        self._by_type: dict[str, dict[int, SchemaVersion]] = {}
        for entry in versions:
            same_version = self._by_type.get(entry.event_type, {}).get(entry.version)
            if same_version is not None:
                raise SchemaFileError(
                    entry.path, f"duplicate version {entry.version} of {entry.event_type} "
                    f"(also in {same_version.path.name})")
            same_form = self._by_fingerprint.get(entry.fingerprint)
            if same_form is not None:
                # Defaults and docs are not in the canonical form, so such a "version"
                # would be indistinguishable on the wire from the one it copies.
                raise SchemaFileError(
                    entry.path, f"same parsing canonical form as {same_form.path.name}; "
                    "a new version must add or change fields, not only docs or defaults")
            self._by_fingerprint[entry.fingerprint] = entry
            self._by_type.setdefault(entry.event_type, {})[entry.version] = entry

    @classmethod
    def load(cls, directory: Path | str | None = None) -> Catalog:
        """Load and check every `*.avsc` in a directory (default: the packaged `avro/`)."""
        root = Path(directory) if directory is not None else default_directory()
        if not root.is_dir():
            raise FileNotFoundError(f"schema directory {root} does not exist")
        return cls(load_schema_file(path) for path in sorted(root.glob("*.avsc")))

    def writer(self, fingerprint: bytes) -> SchemaVersion | None:
        """The schema version whose fingerprint this is, or None if unknown."""
        return self._by_fingerprint.get(bytes(fingerprint))

    def current(self, event_type: str) -> SchemaVersion:
        """The highest version of an event type; KeyError naming the type if there is none."""
        versions = self._by_type.get(event_type)
        if not versions:
            raise KeyError(f"no schema for event type {event_type!r}")
        return versions[max(versions)]

    def event_types(self) -> list[str]:
        """Every event type with at least one schema version, sorted."""
        return sorted(self._by_type)

    def versions(self) -> list[SchemaVersion]:
        """Every schema version, sorted by event type then version."""
        return [v for t in self.event_types() for _, v in sorted(self._by_type[t].items())]

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._by_type


def load_schema_file(path: Path) -> SchemaVersion:
    """Parse and check one `<EventType>.v<N>.avsc`; SchemaFileError says what is wrong."""
    match = FILE_NAME.match(path.name)
    if match is None:
        raise SchemaFileError(path, "file name must look like <EventType>.v<N>.avsc, e.g. TaskFailed.v2.avsc")
    event_type, version = match["type"], int(match["version"])
    if version < 1:
        raise SchemaFileError(path, "versions start at 1")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaFileError(path, f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise SchemaFileError(path, "top level must be an Avro record schema")
    if not isinstance(raw.get("fields"), list):
        raise SchemaFileError(path, "record has no 'fields' list")
    schema = _parse(path, raw)
    expected = f"{NAMESPACE}.{event_type}"
    if schema["name"] != expected:
        raise SchemaFileError(path, f"record name is {schema['name']!r}, the file name requires {expected!r}")
    problem = _record_problem(schema, schema["__named_schemas"])
    if problem:
        raise SchemaFileError(path, problem)
    canonical = to_parsing_canonical_form(schema)
    return SchemaVersion(event_type, version, fingerprint64(canonical), path, canonical, schema)


def _parse(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """fastavro.parse_schema in a fresh name space; on failure, find the first bad field."""
    try:
        return fastavro.parse_schema(raw, named_schemas={})
    except Exception as exc:  # fastavro raises several unrelated types for bad schemas
        detail = f"{type(exc).__name__}: {exc}"
    # Parse ever longer prefixes of the field list: the first prefix that fails ends at
    # the field to blame (named types defined by earlier fields stay in scope).
    fields = raw["fields"]
    for end in range(0, len(fields) + 1):
        try:
            fastavro.parse_schema({**raw, "fields": fields[:end]}, named_schemas={})
        except Exception:
            if end == 0:  # the record itself is wrong (its name, say), not one of its fields
                break
            name = fields[end - 1].get("name") if isinstance(fields[end - 1], dict) else None
            raise SchemaFileError(path, f"field {name or f'#{end}'!r} is not valid Avro: {detail}") from None
    raise SchemaFileError(path, f"not a valid Avro schema: {detail}")


def _record_problem(record: dict[str, Any], names: dict[str, Any], where: str = "") -> str | None:
    """Checks fastavro leaves out: duplicate field names, defaults of unions and records."""
    seen: set[str] = set()
    for fld in record["fields"]:
        path = f"{where}{fld['name']}"
        if fld["name"] in seen:
            return f"field {path!r} appears twice"
        seen.add(fld["name"])
        if "default" in fld:
            problem = _default_problem(fld["default"], fld["type"], names)
            if problem:
                return f"field {path!r} has an invalid default {fld['default']!r}: {problem}"
        for nested in _records_in(fld["type"]):
            problem = _record_problem(nested, names, f"{path}.")
            if problem:
                return problem
    return None


def _records_in(avro_type: Any) -> list[dict[str, Any]]:
    """The record definitions written inline in a field type (not references to earlier ones)."""
    if isinstance(avro_type, list):
        return [r for branch in avro_type for r in _records_in(branch)]
    if not isinstance(avro_type, dict):
        return []
    if avro_type["type"] == "record":
        return [avro_type]
    inner = avro_type.get("items", avro_type.get("values"))
    return _records_in(inner) if inner is not None else []


def _default_problem(value: Any, avro_type: Any, names: dict[str, Any]) -> str | None:
    """Why a JSON default does not fit an Avro type, or None if it does."""
    if isinstance(avro_type, str) and avro_type not in _PRIMITIVES:
        avro_type = names[avro_type]
    if isinstance(avro_type, list):
        if not avro_type:
            return "empty union"
        # The spec: a union's default belongs to its first branch.
        problem = _default_problem(value, avro_type[0], names)
        return problem and f"{problem} (a union's default must match its first branch)"
    kind = avro_type if isinstance(avro_type, str) else avro_type["type"]
    fits = {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31,
        "long": isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63,
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "double": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "bytes": isinstance(value, str),
        "fixed": isinstance(value, str),
        "enum": isinstance(avro_type, dict) and value in avro_type.get("symbols", ()),
        "array": isinstance(value, list),
        "map": isinstance(value, dict),
        "record": isinstance(value, dict),
    }.get(kind, True)
    if not fits:
        return f"not a {kind}"
    if kind == "array":
        return next(filter(None, (_default_problem(v, avro_type["items"], names) for v in value)), None)
    if kind == "map":
        return next(filter(None, (_default_problem(v, avro_type["values"], names) for v in value.values())), None)
    if kind == "record":
        for fld in avro_type["fields"]:
            if fld["name"] in value:
                problem = _default_problem(value[fld["name"]], fld["type"], names)
            else:
                problem = None if "default" in fld else f"missing field {fld['name']!r}"
            if problem:
                return problem
    return None
