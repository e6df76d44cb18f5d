"""The sink's Kafka side: which topic holds what, the consumer, and the decoder.

:class:`KafkaSource` is a confluent-kafka consumer in the shape :class:`sinks.sink.Sink`
expects (auto-commit off: the sink commits after the target acknowledged).
:func:`registry_fetch` tells a schema the registry does not know (a dead letter) from
a registry that is down (waited for), so a replayed batch decodes as it did first.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from sinks.sink import Interrupted, TransientError

log = logging.getLogger("eco.sink")

KAFKA_COLUMNS = ("kafka_partition", "kafka_offset")


class KafkaSource:
    """A confluent-kafka consumer in the shape :class:`Sink` expects."""

    def __init__(self, settings, topic: str, group: str, offset_reset: str = "earliest"):
        from confluent_kafka import Consumer

        self.topic = topic
        self.group = group
        self.consumer = Consumer({
            **settings.kafka_client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": offset_reset,
            "fetch.max.bytes": 52428800,
        })
        self._closed = False

    def subscribe(self, on_assign, on_revoke) -> None:
        self.consumer.subscribe(
            [self.topic],
            on_assign=lambda c, tps: on_assign([tp.partition for tp in tps]),
            on_revoke=lambda c, tps: on_revoke([tp.partition for tp in tps]),
            on_lost=lambda c, tps: on_revoke([tp.partition for tp in tps]),
        )

    def poll(self, max_messages: int, timeout: float) -> list:
        return self.consumer.consume(max_messages, timeout)

    def committed(self, partitions: list[int]) -> dict[int, int | None]:
        from confluent_kafka import TopicPartition

        if not partitions:
            return {}
        for attempt in range(10):
            try:
                tps = self.consumer.committed([TopicPartition(self.topic, p) for p in partitions], timeout=10)
                return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in tps}
            except Exception as exc:
                log.warning("reading committed offsets failed (%s); retrying", exc)
                time.sleep(1)
        raise TransientError("cannot read committed offsets")

    def commit(self, offsets: dict[int, int]) -> None:
        from confluent_kafka import TopicPartition

        result = self.consumer.commit(
            offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())], asynchronous=False)
        failed = [tp for tp in result or () if tp.error is not None]
        if failed:
            raise RuntimeError(f"commit failed for partitions {[tp.partition for tp in failed]}: {failed[0].error}")

    def pause(self, partitions: list[int]) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.pause([TopicPartition(self.topic, p) for p in partitions])

    def resume(self, partitions: list[int]) -> None:
        from confluent_kafka import TopicPartition

        try:
            self.consumer.resume([TopicPartition(self.topic, p) for p in partitions])
        except Exception as exc:  # not assigned any more
            log.debug("resume: %s", exc)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.consumer.close()


@dataclass(frozen=True)
class TopicSpec:
    """How one topic is decoded and where it is stored."""

    kind: str  # telemetry | anomalies | alerts
    topic: str
    table: str
    columns: tuple[str, ...]  # target columns, in row order
    schema: str | None  # reader schema name (None: the writer schema, stored as JSON)


def telemetry_table(settings) -> str:
    """Where the sink stores telemetry: `telemetry` itself when the sink is the ingest
    path (ECO_TELEMETRY_INGEST=sink), else `telemetry_sink` beside the Kafka engine's."""
    return "telemetry" if settings.telemetry_ingest == "sink" else "telemetry_sink"


def topic_spec(settings, kind: str, table: str | None = None) -> TopicSpec:
    """What the sink does with a topic; ``table`` overrides the target table."""
    import schemas

    if kind == "telemetry":
        fields = tuple(schemas.field_names(schemas.TELEMETRY_READING))
        return TopicSpec(kind, settings.topic_telemetry, table or telemetry_table(settings), fields + KAFKA_COLUMNS,
                         schemas.TELEMETRY_READING)
    if kind == "anomalies":
        fields = tuple(schemas.field_names(schemas.ANOMALY_EVENT))
        return TopicSpec(kind, settings.topic_anomalies, table or "anomalies_sink", fields + KAFKA_COLUMNS,
                         schemas.ANOMALY_EVENT)
    if kind == "alerts":
        return TopicSpec(kind, settings.topic_alerts, table or "alerts_sink",
                         ("kafka_partition", "kafka_offset", "kafka_ts", "key", "schema_id", "payload"), None)
    raise ValueError(f"unknown topic kind {kind!r} (telemetry, anomalies or alerts)")


def registry_fetch(settings, stop: threading.Event, retry_seconds: float = 1.0, client=None) -> Callable[[int], str]:
    """``fetch(schema_id) -> schema text`` for the AvroDecoder, telling an answer from
    an outage: a registry that does not know the id (4xx) makes the message a dead
    letter, while an unreachable or failing registry is waited for. Otherwise a
    registry blip would turn good messages into dead letters, and a batch replayed
    after the blip would decode differently from the batch first written (same token,
    other rows: the dedup would keep the wrong version)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from ecoretrofit.serde import registry_client

    client = client or registry_client(settings)

    def fetch(schema_id: int) -> str:
        while True:
            try:
                return client.get_schema(schema_id).schema_str
            except SchemaRegistryError as exc:
                if 400 <= (exc.http_status_code or 0) < 500:
                    raise  # the registry's answer: no such schema
                error = exc
            except Exception as exc:  # connection refused, timeout…
                error = exc
            if stop.is_set():
                raise Interrupted()
            log.warning("schema registry unavailable (%s); retrying schema id %d", error, schema_id)
            stop.wait(retry_seconds)

    return fetch


def make_decoder(spec: TopicSpec, avro, regions: tuple[str, ...] | None = None,
                 clock: Callable[[], float] = time.time) -> Callable[[object], tuple[tuple, int | None]]:
    """``decode(msg) -> (row, event_ms)`` for a topic; ``avro`` is an AvroDecoder.

    Telemetry with ``regions`` given is held to the plausibility contract
    (schemas/plausibility.py): a message over its size limit, or a reading that fails
    :func:`~schemas.plausibility.check` (against ``clock()`` as now), raises a
    DecodeError naming every reason, so the sink stores it as a dead letter. A
    tombstone or an empty message fails the Avro header check the same way."""
    if spec.schema is None:
        def decode_generic(msg):
            raw = msg.value()
            record = avro.decode(raw)
            _, ts = msg.timestamp()
            key = msg.key()
            schema_id = int.from_bytes(raw[1:5], "big")
            payload = json.dumps(record, default=str, separators=(",", ":"))
            return (msg.partition(), msg.offset(), ts, (key or b"").decode("utf-8", "replace"), schema_id, payload), ts

        return decode_generic
    fields = spec.columns[: -len(KAFKA_COLUMNS)]

    def decode(msg):
        r = avro.decode(msg.value())
        return tuple([r[f] for f in fields]) + (msg.partition(), msg.offset()), r.get("ts")

    if spec.kind != "telemetry" or regions is None:
        return decode
    from ecoretrofit.serde import DecodeError
    from schemas import plausibility

    def decode_plausible(msg):
        raw = msg.value()
        if raw is not None and len(raw) > plausibility.MAX_MESSAGE_BYTES:
            raise DecodeError(f"message of {len(raw)} bytes is over the {plausibility.MAX_MESSAGE_BYTES}-byte limit "
                              f"of a reading (contract v{plausibility.VERSION})", "oversized")
        row, event_ms = decode(msg)
        reasons = plausibility.check(dict(zip(fields, row)), now_ms=int(clock() * 1000), regions=regions)
        if reasons:
            raise DecodeError(f"implausible (contract v{plausibility.VERSION}): {'; '.join(reasons)}", "implausible")
        return row, event_ms

    return decode_plausible
