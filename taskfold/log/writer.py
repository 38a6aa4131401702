"""Append raw records to the log and learn where they landed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from taskfold.broker import clients, compat
from taskfold.log.records import Position, RawRecord


class LogWriter:
    """An aiokafka producer with acks=all that appends batches and returns their positions."""

    def __init__(self, bootstrap: str, *, tansu: bool = False, **producer_kwargs: Any) -> None:
        self.bootstrap = bootstrap
        self._settings = {**compat.producer_settings(tansu), **producer_kwargs}
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Connect to the broker."""
        if self._producer is None:
            producer = self._new_producer()
            await producer.start()
            self._producer = producer

    def _new_producer(self) -> AIOKafkaProducer:
        return clients.producer(self.bootstrap, **self._settings)

    async def stop(self) -> None:
        """Flush pending records and disconnect."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> LogWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def append(self, topic: str, records: Sequence[RawRecord]) -> list[Position]:
        """Append `records` and wait for acks; return their positions in input order.

        All records are handed to the producer before any ack is awaited, so they travel in
        as few batches as possible. Records with the same key keep their order. If an
        append fails, some records may have landed; appending them again is safe because
        the fold drops duplicate event ids.
        """
        if self._producer is None:
            raise RuntimeError("LogWriter is not started")
        futures: list[asyncio.Future[Any]] = []
        try:
            for record in records:
                # send() only waits when the producer's buffer is full (back-pressure).
                futures.append(await self._producer.send(
                    topic,
                    value=record.value,
                    key=record.key.encode("utf-8"),
                    headers=list(record.headers),
                    partition=record.partition,
                ))
        finally:
            # Settle every future even on failure, so none is left unretrieved.
            results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [Position(m.partition, m.offset) for m in results]
