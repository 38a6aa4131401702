"""A publisher written as another language would write it: the `.avsc` files, an Avro
library and a Kafka client, nothing of taskfold (README, "Publishing from another language").

It must not import `taskfold`, `schemas`, `streams` or `projections`;
tests/integration/test_foreign_publisher.py checks this module's imports so it cannot drift.
"""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from fastavro import parse_schema, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

MARKER = b"\xc3\x01"  # Avro single-object encoding, version 1
_FILE = re.compile(r"^(?P<type>[A-Za-z0-9]+)\.v(?P<version>[0-9]+)\.avsc$")


def writer_schema(directory: Path, type_name: str) -> tuple[dict[str, Any], bytes]:
    """The highest published version of `type_name` in `directory`, and its 8-byte fingerprint."""
    versions = {int(m["version"]): path for path in directory.iterdir()
                if (m := _FILE.match(path.name)) and m["type"] == type_name}
    if not versions:
        raise FileNotFoundError(f"no {type_name}.v<N>.avsc in {directory}")
    schema = parse_schema(json.loads(versions[max(versions)].read_text()), named_schemas={})
    # CRC-64-AVRO of the Parsing Canonical Form; fastavro gives the hex of the little-endian bytes.
    return schema, bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


def single_object(schema: dict[str, Any], schema_fingerprint: bytes, record: dict[str, Any]) -> bytes:
    """Marker C3 01, the writer schema's fingerprint, then the Avro binary body."""
    body = io.BytesIO()
    schemaless_writer(body, schema, record)
    return MARKER + schema_fingerprint + body.getvalue()


def task_submitted(queue: str, task_id: str, task_type: str, payload: Any, actor: str) -> dict[str, Any]:
    """A TaskSubmitted record: the envelope and the task; every other field takes its schema default."""
    return {"event_id": str(uuid.uuid4()), "queue": queue, "occurred_at": int(time.time() * 1000),
            "actor": actor, "task_id": task_id, "task_type": task_type, "payload": json.dumps(payload)}


async def publish(bootstrap: str, topic: str, key: str, value: bytes, headers: dict[str, str]) -> tuple[int, int]:
    """Produce one record keyed by `key` with the default (murmur2) partitioner; its partition and offset."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, value, key=key.encode("utf-8"),
            headers=[(name, text.encode("utf-8")) for name, text in headers.items()])
    finally:
        await producer.stop()
    return sent.partition, sent.offset
