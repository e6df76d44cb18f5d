"""Readings to Kafka: Avro in the Confluent wire format, keyed by home id.

Two drivers share one ``TelemetryProducer``:
- ``run_live``: an asyncio loop that emits one reading per home per ``step`` of wall
  time (1 Hz by default), while a second task serves delivery callbacks;
- ``run_backfill``: simulated time, as fast as the machine allows, with a progress bar.

Readings are encoded a whole tick at a time from the simulator's columns
(``ecoretrofit.avro_columns``); every reading is counted when produced, and the
summary says exactly how many the broker acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
from confluent_kafka import KafkaError, Producer

import schemas
from ecoretrofit import metrics
from ecoretrofit.config import Settings
from ecoretrofit.avro_columns import ColumnarEncoder
from ecoretrofit.serde import AvroEncoder, encoder_for


#: How long to serve the client when its local queue is full, before trying again.
#: Short: with error-only delivery reports ``poll`` returns only when the time is up.
QUEUE_FULL_WAIT_S = 0.005


def telemetry_producer_config(settings: Settings) -> dict[str, object]:
    """The client settings of the telemetry producer, and of ``ecoretrofit bench``'s
    bare loop that is its ceiling: the project's producer settings, plus

    - delivery reports for failures only: a Python callback per acknowledged message
      would cost as much as encoding it;
    - room for a million queued readings (librdkafka's default is 100,000): a backfill
      or a large city's tick queues at once and the client's threads send it while
      the next tick is computed, instead of blocking on a full queue. The price: while
      the broker is unreachable the client may hold that many (a few hundred bytes
      each, some 300 MB) before ``send_columns`` blocks.
    """
    return {
        **settings.producer_config(),
        "delivery.report.only.error": True,
        "queue.buffering.max.messages": 1_000_000,
    }


class ReadingSource(Protocol):
    """What the drivers need of a simulator: a tick of readings as columns."""

    def tick_columns(self, ts_ms: int | None = None) -> dict: ...


@dataclass
class DeliveryStats:
    sent: int = 0
    acked: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked - self.failed


class TelemetryProducer:
    """Readings to the telemetry topic (client settings: ``telemetry_producer_config``).

    Delivery reports come for failures only, so what was acknowledged is exact
    arithmetic: sent - failed - still queued in the client, and after ``flush()``
    nothing is queued.
    """

    def __init__(self, settings: Settings, encoder: AvroEncoder | None = None, **overrides: object):
        self.settings = settings
        self.topic = settings.topic_telemetry
        self.encoder = encoder or encoder_for(settings, self.topic, schemas.TELEMETRY_READING)
        self.columnar = ColumnarEncoder(schemas.schema_text(schemas.TELEMETRY_READING), self.encoder.schema_id)
        self._producer = Producer({**telemetry_producer_config(settings), "on_delivery": self._on_error, **overrides})
        self._sent = 0
        self._failed = 0
        self._errors: dict[str, int] = {}
        self._keys_for: tuple | None = None  # (home-id array, its keys, region counts)

    def _on_error(self, err: KafkaError | None, msg) -> None:
        if err is None:  # only when a caller overrides delivery.report.only.error
            return
        self._failed += 1
        name = err.name()
        self._errors[name] = self._errors.get(name, 0) + 1
        metrics.PRODUCE_ERRORS.labels(reason=name).inc()

    @property
    def stats(self) -> DeliveryStats:
        queued = len(self._producer) if self._producer is not None else 0
        return DeliveryStats(self._sent, self._sent - self._failed - queued, self._failed, dict(self._errors))

    def send(self, reading: dict) -> None:
        self._produce(reading["home_id"].encode(), self.encoder.encode(reading))
        metrics.READINGS_PRODUCED.labels(region=reading["region"]).inc()

    def send_columns(self, columns: dict) -> int:
        """A tick of the simulator as columns (``emitted`` marks the rows to send)."""
        emitted = columns["emitted"]
        rows = None if emitted.all() else np.flatnonzero(emitted)
        values = self.columnar.encode(columns, rows)
        keys, region_counts = self._keys_and_regions(columns, rows)
        produce = self._producer.produce
        topic = self.topic
        for key, value in zip(keys, values):
            try:
                produce(topic, value, key)
            except BufferError:  # local queue full: serve the client until there is room
                self._producer.poll(QUEUE_FULL_WAIT_S)
                self._produce(key, value, counted=False)
        self._sent += len(values)
        for region, n in region_counts:
            metrics.READINGS_PRODUCED.labels(region=region).inc(n)
        self._producer.poll(0)
        return len(values)

    def _keys_and_regions(self, columns: dict, rows) -> tuple[list[bytes], list[tuple[str, int]]]:
        """Message keys and per-region counts of a tick. The simulator hands back the
        same home-id array every tick in which every home reports, so both are
        computed once for it rather than per tick."""
        home_ids, regions = columns["home_id"], columns["region"]
        if rows is None and self._keys_for is not None and self._keys_for[0] is home_ids:
            return self._keys_for[1], self._keys_for[2]
        if rows is not None:
            home_ids, regions = home_ids[rows], regions[rows]
        keys = [h.encode() for h in home_ids.tolist()]
        counts = [(str(r), int(n)) for r, n in zip(*np.unique(regions, return_counts=True))]
        if rows is None:
            self._keys_for = (columns["home_id"], keys, counts)
        return keys, counts

    def _produce(self, key: bytes, value: bytes, counted: bool = True) -> None:
        while True:
            try:
                self._producer.produce(self.topic, value, key)
                break
            except BufferError:
                self._producer.poll(QUEUE_FULL_WAIT_S)
        if counted:
            self._sent += 1

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every in-flight reading; returns how many are still unacknowledged."""
        return self._producer.flush(timeout)

    def __enter__(self) -> "TelemetryProducer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> int:
        """Give in-flight readings ``timeout`` to be acknowledged, then drop the rest
        (counted as failed): the client must not outlive the broker it talks to.
        Returns how many were dropped."""
        if self._producer is None:
            return 0
        left = self._producer.flush(timeout)
        if left:
            self._producer.purge()
            self._producer.flush(0)
            self._failed += left
        # Drop the handle now: whatever still references this object (a traceback
        # after Ctrl-C) must not keep a client reconnecting to a stopped broker.
        self._producer = None
        return left


async def run_live(
    source: ReadingSource,
    producer: TelemetryProducer,
    duration_s: float | None,
    step_s: float = 1.0,
    stop: asyncio.Event | None = None,
    on_tick: Callable[[int, int], None] | None = None,
) -> DeliveryStats:
    """Emit a tick of readings every ``step_s`` of wall time until ``duration_s`` or
    ``stop``. Event time is the wall clock, so end-to-end latency is measurable."""
    stop = stop or asyncio.Event()

    async def serve_callbacks() -> None:
        while not stop.is_set():
            producer.poll(0)
            await asyncio.sleep(0.02)

    poller = asyncio.create_task(serve_callbacks())
    started = time.time()
    next_tick = started
    ticks = 0
    try:
        while not stop.is_set() and (duration_s is None or time.time() - started < duration_s):
            ts_ms = int(next_tick * 1000)
            n = producer.send_columns(source.tick_columns(ts_ms))
            metrics.LAST_EVENT_TS.labels(component="simulator").set(time.time())
            ticks += 1
            if on_tick:
                on_tick(ticks, n)
            next_tick += step_s
            delay = next_tick - time.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)  # running behind: emit the next tick at once
    finally:
        stop.set()
        await poller
    await asyncio.get_running_loop().run_in_executor(None, producer.flush, 60.0)
    return producer.stats


def run_backfill(
    source: ReadingSource,
    producer: TelemetryProducer,
    start_ms: int,
    ticks: int,
    step_ms: int = 1000,
    progress: bool = True,
    homes_hint: int | None = None,
) -> DeliveryStats:
    """Produce ``ticks`` rounds of simulated readings starting at ``start_ms``."""
    from tqdm import tqdm

    bar = tqdm(
        total=ticks * homes_hint if homes_hint else None, unit=" readings", unit_scale=True,
        disable=not progress, desc="backfill", mininterval=0.5,
    )
    ts = start_ms
    try:
        for _ in range(ticks):
            bar.update(producer.send_columns(source.tick_columns(ts)))
            ts += step_ms
    finally:
        bar.close()
    producer.flush(120.0)
    return producer.stats
