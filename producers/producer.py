"""Readings to Kafka: Avro in the Confluent wire format, keyed by home id.

Two drivers share one ``TelemetryProducer``:
- ``run_live``: an asyncio loop that emits one reading per home per ``step`` of wall
  time (1 Hz by default), while a second task serves delivery callbacks;
- ``run_backfill``: simulated time, as fast as the machine allows, with a progress bar.

Every reading is counted when produced and again when the broker acknowledges it
(delivery callback), so the summary says exactly how many made it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from confluent_kafka import KafkaError, Producer

import schemas
from ecoretrofit import metrics
from ecoretrofit.config import Settings
from ecoretrofit.serde import AvroEncoder, encoder_for


class ReadingSource(Protocol):
    """What the drivers need of a simulator."""

    def tick(self, ts_ms: int | None = None) -> list[dict]: ...


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
    def __init__(self, settings: Settings, encoder: AvroEncoder | None = None, **overrides: object):
        self.settings = settings
        self.topic = settings.topic_telemetry
        self.encoder = encoder or encoder_for(settings, self.topic, schemas.TELEMETRY_READING)
        self._producer = Producer({**settings.producer_config(), **overrides})
        self.stats = DeliveryStats()
        # One bound callback per region, made once: a per-message closure would cost
        # more than the rest of the delivery report.
        self._callbacks: dict[str, Callable] = {}

    def _callback_for(self, region: str) -> Callable:
        cb = self._callbacks.get(region)
        if cb is None:
            acked = metrics.READINGS_PRODUCED.labels(region=region)
            stats = self.stats

            def on_delivery(err: KafkaError | None, msg, _acked=acked) -> None:
                if err is None:
                    stats.acked += 1
                    _acked.inc()
                else:
                    stats.failed += 1
                    name = err.name()
                    stats.errors[name] = stats.errors.get(name, 0) + 1
                    metrics.PRODUCE_ERRORS.labels(reason=name).inc()

            cb = self._callbacks[region] = on_delivery
        return cb

    def send(self, reading: dict) -> None:
        value = self.encoder.encode(reading)
        self.send_raw(reading["home_id"].encode(), value, reading["region"])

    def send_raw(self, key: bytes, value: bytes, region: str = "unknown") -> None:
        cb = self._callback_for(region)
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, on_delivery=cb)
                break
            except BufferError:  # local queue full: serve callbacks until there is room
                self._producer.poll(0.05)
        self.stats.sent += 1

    def send_many(self, readings: Iterable[dict]) -> None:
        for r in readings:
            self.send(r)
        self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every in-flight reading; returns how many are still unacknowledged."""
        return self._producer.flush(timeout)


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
            readings = source.tick(ts_ms)
            producer.send_many(readings)
            metrics.LAST_EVENT_TS.labels(component="simulator").set(time.time())
            ticks += 1
            if on_tick:
                on_tick(ticks, len(readings))
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
            readings = source.tick(ts)
            producer.send_many(readings)
            bar.update(len(readings))
            ts += step_ms
    finally:
        bar.close()
    producer.flush(120.0)
    return producer.stats
