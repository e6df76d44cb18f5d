"""Helpers of the device-gateway tests: readings of fresh homes, what Kafka and
ClickHouse hold for them."""

from __future__ import annotations

import random
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import schemas
from ecoretrofit.serde import decoder_for
from helpers import unique
from producers.simulator import CitySimulator
from sinks.warehouse import connect


def fresh_home() -> str:
    """A home id no other test (or earlier run on the same stack) uses."""
    return f"H{random.randrange(10**8, 10**9)}"


def readings(home: str, region: str, seqs, start_ms: int | None = None) -> list[dict]:
    """Plausible readings of ``home`` (the simulator's physics), one per second."""
    seqs = list(seqs)
    start_ms = start_ms or int(time.time() * 1000) - len(seqs) * 1000
    sim = CitySimulator(1, [region], seed=random.randrange(10**6), start_ms=start_ms)
    out = []
    for i, seq in enumerate(seqs):
        r = sim.tick(start_ms + i * 1000)[0]
        out.append({**r, "home_id": home, "seq": seq})
    return out


def telemetry_for(settings, homes: set[str], idle_s: float = 4.0, timeout_s: float = 60.0) -> list[dict]:
    """Every telemetry message of ``homes`` in Kafka (consumed from the start until
    ``idle_s`` without a new one of theirs), decoded, with the message headers."""
    decoder = decoder_for(settings, schemas.TELEMETRY_READING)

    def ours(msg) -> dict | None:
        if msg.key() is None or msg.key().decode(errors="replace") not in homes:
            return None
        return {**decoder.decode(msg.value()), "_headers": dict(msg.headers() or [])}

    return _read_until_idle(settings, settings.topic_telemetry, ours, idle_s, timeout_s)


def stored(settings, homes: set[str]) -> tuple[int, int]:
    """(rows, distinct (home_id, seq)) in the warehouse for ``homes``."""
    rows, distinct = connect(settings).query(
        f"SELECT count(), uniqExact(home_id, seq) FROM {settings.clickhouse_database}.telemetry "
        "WHERE home_id IN %(h)s", parameters={"h": sorted(homes)}
    ).result_rows[0]
    return int(rows), int(distinct)


def dead_letters_for(settings, homes: set[str], idle_s: float = 4.0, timeout_s: float = 60.0) -> list[dict]:
    """Dead letters whose MQTT topic names one of ``homes``: headers and raw value."""
    def ours(msg) -> dict | None:
        headers = {k: v.decode(errors="replace") for k, v in (msg.headers() or [])}
        if not any(h in headers.get("source_topic", "") for h in homes):
            return None
        return {**headers, "value": msg.value()}

    return _read_until_idle(settings, settings.topic_deadletter, ours, idle_s, timeout_s)


def _read_until_idle(settings, topic: str, keep, idle_s: float, timeout_s: float) -> list[dict]:
    """``keep(msg)`` of every message of ``topic`` from the start, until ``idle_s``
    passed without any message (or ``timeout_s`` in all); ``keep`` returns None to skip.
    Idle counts from the last message read, not the last one kept: reading a session's
    older messages back from a restarted broker (its log is on S3) can take longer than
    ``idle_s`` before the first one kept, which then returned nothing."""
    c = Consumer({**settings.kafka_client_config(), "group.id": unique("gw-test"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    _assign_all(c, topic)
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last_new < idle_s:
            for msg in c.consume(5000, 0.5):
                if msg.error():
                    continue
                last_new = time.monotonic()
                kept = keep(msg)
                if kept is not None:
                    out.append(kept)
    finally:
        c.close()
    return out


def _assign_all(consumer: Consumer, topic: str) -> None:
    """Every partition from the start, without a group join (which takes seconds here)."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
