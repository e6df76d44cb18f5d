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
    c = Consumer({**settings.kafka_client_config(), "group.id": unique("gw-test"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    _assign_all(c, settings.topic_telemetry)
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last_new < idle_s:
            for msg in c.consume(5000, 0.5):
                if msg.error() or msg.key() is None or msg.key().decode(errors="replace") not in homes:
                    continue
                r = decoder.decode(msg.value())
                r["_headers"] = dict(msg.headers() or [])
                out.append(r)
                last_new = time.monotonic()
    finally:
        c.close()
    return out


def stored(settings, homes: set[str]) -> tuple[int, int]:
    """(rows, distinct (home_id, seq)) in the warehouse for ``homes``."""
    rows, distinct = connect(settings).query(
        f"SELECT count(), uniqExact(home_id, seq) FROM {settings.clickhouse_database}.telemetry "
        "WHERE home_id IN %(h)s", parameters={"h": sorted(homes)}
    ).result_rows[0]
    return int(rows), int(distinct)


def dead_letters_for(settings, homes: set[str], idle_s: float = 4.0, timeout_s: float = 60.0) -> list[dict]:
    """Dead letters whose MQTT topic names one of ``homes``: headers and raw value."""
    c = Consumer({**settings.kafka_client_config(), "group.id": unique("gw-dlq"),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    _assign_all(c, settings.topic_deadletter)
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last_new < idle_s:
            for msg in c.consume(1000, 0.5):
                if msg.error():
                    continue
                headers = {k: v.decode(errors="replace") for k, v in (msg.headers() or [])}
                if any(h in headers.get("source_topic", "") for h in homes):
                    out.append({**headers, "value": msg.value()})
                    last_new = time.monotonic()
    finally:
        c.close()
    return out


def _assign_all(consumer: Consumer, topic: str) -> None:
    """Every partition from the start, without a group join (which takes seconds here)."""
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
