"""Append raw records to the log and learn where they landed.

Every append is bounded: a broker that never acknowledges (down, or short of in-sync
replicas, which an idempotent producer retries for ever) makes `append` raise
`AppendTimeout` after `timeout_s`, and `status` says "cannot write" until an append
succeeds again. A producer that hit a fatal error (its sequence numbers or epoch are no
longer valid) is thrown away and rebuilt by the next append.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as Errors

from taskfold.broker import clients
from taskfold.broker.settings import producer_settings
from taskfold.config import ClusterSettings
from taskfold.log.records import Position, RawRecord

log = logging.getLogger(__name__)

# Errors after which this producer can never append again; a new one can.
FATAL = (Errors.OutOfOrderSequenceNumber, Errors.InvalidProducerEpoch, Errors.ProducerFenced,
         Errors.ProducerClosed, Errors.IllegalStateError)
DISCARD_S = 5.0  # a thrown-away producer gets this long to close (it may never get its acks)


class AppendTimeout(TimeoutError):
    """The broker did not acknowledge an append in time: the log cannot be written now."""


class LogWriter:
    """An aiokafka producer with acks=all that appends batches and returns their positions."""

    def __init__(self, bootstrap: str, *, tansu: bool = False, timeout_s: float | None = None,
                 **producer_kwargs: Any) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s if timeout_s is not None else ClusterSettings().append_timeout_s
        self._settings = {**producer_settings(tansu), **producer_kwargs}
        self._producer: AIOKafkaProducer | None = None
        self._started = False
        self.failure: str | None = None  # why the last append failed; None once one succeeds
        self.rebuilt = 0  # producers thrown away after a fatal error

    @property
    def status(self) -> str:
        """'ok', or 'cannot write: <why>' since the last append failed."""
        return "ok" if self.failure is None else f"cannot write: {self.failure}"

    async def start(self) -> None:
        """Connect to the broker."""
        self._started = True
        if self._producer is None:
            producer = self._new_producer()
            await producer.start()
            self._producer = producer

    def _new_producer(self) -> AIOKafkaProducer:
        return clients.producer(self.bootstrap, **self._settings)

    async def stop(self) -> None:
        """Flush pending records and disconnect."""
        self._started = False
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> LogWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def append(self, topic: str, records: Sequence[RawRecord], *,
                     timeout_s: float | None = None) -> list[Position]:
        """Append `records` and wait for acks, at most `timeout_s`; return their positions in input order.

        All records are handed to the producer before any ack is awaited, so they travel in
        as few batches as possible. Records with the same key keep their order. If an
        append fails or times out, some records may have landed; appending them again is
        safe because the fold drops duplicate event ids.
        """
        if not self._started:
            raise RuntimeError("LogWriter is not started")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            if self._producer is None:  # thrown away after a fatal error
                await asyncio.wait_for(self.start(), timeout)
            positions = await asyncio.wait_for(self._send(self._producer, topic, records), timeout)
        except TimeoutError:
            self.failure = f"no acknowledgement of {len(records)} record(s) to {topic} within {timeout:.1f} s"
            raise AppendTimeout(f"cannot write to the log: {self.failure}") from None
        except FATAL as exc:
            self.failure = f"{type(exc).__name__}: {exc}; the producer is rebuilt for the next append"
            self._discard()
            raise
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            raise
        self.failure = None
        return positions

    def _discard(self) -> None:
        """Throw the producer away; the next append builds a new one."""
        producer, self._producer = self._producer, None
        self.rebuilt += 1
        if producer is not None:
            asyncio.ensure_future(_close_quietly(producer))

    @staticmethod
    async def _send(producer: AIOKafkaProducer, topic: str, records: Sequence[RawRecord]) -> list[Position]:
        futures: list[asyncio.Future[Any]] = []
        try:
            for record in records:
                # send() only waits when the producer's buffer is full (back-pressure).
                futures.append(await producer.send(
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


async def _close_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), DISCARD_S)
    except Exception as exc:  # it failed already; closing it is best effort
        log.warning("closing a failed producer: %s", exc)
