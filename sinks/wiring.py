"""``build(settings, kind, to)``: a :class:`~sinks.sink.Sink` wired to Kafka and the
warehouse or the lake. The only module that knows every part of the sink."""

from __future__ import annotations

import threading
import time

from sinks.batching import DEFAULT_BATCH_ROWS, DEFAULT_BATCH_SECONDS
from sinks.clickhouse_writer import ClickHouseLedger, ClickHouseWriter
from sinks.kafka_source import KafkaSource, make_decoder, registry_fetch, topic_spec
from sinks.sink import Sink


def group_for(kind: str, to: str) -> str:
    return f"eco-{'sink' if to == 'warehouse' else 'lake'}-{kind}"


def build(settings, kind: str, to: str = "warehouse", group: str | None = None, batch_rows: int | None = None,
          batch_seconds: float | None = None, offset_reset: str = "earliest", commit_delay: float = 0.0,
          lake_prefix: str | None = None, table: str | None = None) -> Sink:
    """A :class:`Sink` wired to Kafka and the warehouse (or the lake); ``table``
    overrides the target table (default: :func:`~sinks.kafka_source.topic_spec`)."""
    import schemas
    from ecoretrofit.serde import AvroDecoder

    spec = topic_spec(settings, kind, table)
    group = group or group_for(kind, to)
    stop = threading.Event()
    avro = AvroDecoder(registry_fetch(settings, stop), schemas.schema_text(spec.schema) if spec.schema else None)
    if to == "warehouse":
        from sinks.warehouse import connect, wait_ready

        wait_ready(settings)
        client = connect(settings, compress=False)
        readings = kind == "telemetry"
        writer = _retry_setup(lambda: ClickHouseWriter(client, settings.clickhouse_database, spec.table, spec.columns,
                                                       readings=readings))
        if readings:  # the roll-ups chained from the table deduplicate with it
            _retry_setup(lambda: writer.prepare(settings.clickhouse_cluster))
        ledger = ClickHouseLedger(client, settings.clickhouse_database)
        rows = batch_rows or DEFAULT_BATCH_ROWS
        seconds = batch_seconds or DEFAULT_BATCH_SECONDS
    elif to == "lake":
        from sinks import lake

        if kind != "telemetry":
            raise ValueError("--to lake stores telemetry only")
        writer, ledger = lake.lake_writer(settings, spec, prefix=lake_prefix)
        rows = batch_rows or lake.DEFAULT_BATCH_ROWS
        seconds = batch_seconds or lake.DEFAULT_BATCH_SECONDS
    else:
        raise ValueError(f"unknown target {to!r}")
    source = KafkaSource(settings, spec.topic, group, offset_reset)
    # leave_wait_s: inside the stack's 20 s stop timeout, as the warehouse's own wait (12 s)
    return Sink(source, make_decoder(spec, avro, regions=settings.known_regions), writer, ledger, group, rows, seconds,
                commit_delay=commit_delay, stop=stop, leave_wait_s=12.0)


def _retry_setup(fn, attempts: int = 30):
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            from clickhouse_connect.driver.exceptions import ClickHouseError

            if not isinstance(exc, (ClickHouseError, OSError)) or i == attempts - 1:
                raise
            time.sleep(1)
