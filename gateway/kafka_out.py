"""Readings from devices to Kafka, acknowledged: the thin adapter both transports share.

A device's request (HTTPS) or message (MQTT) counts as delivered only when Kafka has
acknowledged every reading in it (acks=all; the project's producer settings), so the caller is told
per batch, through a callback or an awaitable, whether all of it is durable.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

from confluent_kafka import Producer

import schemas
from ecoretrofit import metrics
from ecoretrofit.serde import AvroEncoder, encoder_for

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]  # key, value, headers


class DeliveryFailed(RuntimeError):
    pass


class AckedProducer:
    def __init__(self, settings, encoder: AvroEncoder | None = None, **overrides: object):
        self.settings = settings
        self.encoder = encoder or encoder_for(settings, settings.topic_telemetry, schemas.TELEMETRY_READING)
        self._producer = Producer({
            **settings.producer_config(),
            "linger.ms": settings.gateway_kafka_linger_ms,  # a device waits for the ack
            # a device waiting longer than this gets a 503 and retries (deduplicated)
            "message.timeout.ms": 30_000,
            **overrides,
        })
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-acks", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def encode(self, reading: dict) -> bytes:
        return self.encoder.encode(reading)

    def send(self, topic: str, messages: list[Message], done: Callable[[str | None], None]) -> None:
        """Produce ``messages``; ``done(None)`` once Kafka acknowledged all of them, or
        ``done(error)`` as soon as one failed. Called from the poller thread."""
        if not messages:
            done(None)
            return
        started = time.perf_counter()
        left = [len(messages)]
        failed = [False]
        lock = threading.Lock()

        def on_delivery(err, _msg) -> None:
            with lock:
                if failed[0]:
                    return
                if err is not None:
                    failed[0] = True
                    done(f"kafka: {err.str()}")
                    return
                left[0] -= 1
                finished = left[0] == 0
            if finished:
                metrics.GATEWAY_KAFKA_ACK_SECONDS.observe(time.perf_counter() - started)
                done(None)

        for key, value, headers in messages:
            while True:
                try:
                    self._producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: the poller frees it
                    self._stop.wait(0.01)

    async def send_async(self, topic: str, messages: list[Message]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future = loop.create_future()

        def done(error: str | None) -> None:
            loop.call_soon_threadsafe(_settle, fut, error)

        self.send(topic, messages, done)
        await fut

    def close(self, timeout: float = 10.0) -> int:
        left = self._producer.flush(timeout)
        self._stop.set()
        self._poller.join(2.0)
        return left


def _settle(fut: asyncio.Future, error: str | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(DeliveryFailed(error))
