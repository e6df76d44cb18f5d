#!/usr/bin/env python3
"""Read EcoRetrofit anomaly events: a minimal consumer for other teams.

Needs only confluent-kafka with its schema-registry extra:

    pip install "confluent-kafka[avro,schemaregistry]"
    python consume_anomalies.py --bootstrap 127.0.0.1:19092 \\
        --registry http://127.0.0.1:19081 --topic TOPIC --group my-team --from-beginning

TOPIC is the anomaly events topic: its name is in docs/topics.md (or set
ECO_TOPIC_ANOMALIES, as the platform's own services read it).

Each event is printed as one JSON line: topic, partition, offset, key and the decoded
value (timestamps as ISO-8601 strings). The topic contract (key, schema, ordering,
delivery) is in docs/topics.md; in short: the key is the home id, each home's events
are in order on one partition, delivery is at-least-once, so deduplicate on event_id.

Stops after --max-messages events or --timeout seconds, whichever comes first, or on
Ctrl-C or SIGTERM (what `docker stop` sends): it then leaves the group and commits what
it printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from datetime import date, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Print EcoRetrofit anomaly events as JSON lines.")
    p.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka bootstrap servers")
    p.add_argument("--registry", default="http://127.0.0.1:19081", help="schema registry URL")
    topic = os.environ.get("ECO_TOPIC_ANOMALIES")
    p.add_argument("--topic", default=topic, required=topic is None,
                   help="topic to read: the anomaly events topic (docs/topics.md; default $ECO_TOPIC_ANOMALIES)")
    p.add_argument("--group", default="anomaly-example", help="consumer group id")
    p.add_argument("--from-beginning", action="store_true",
                   help="a group with no committed offset starts at the oldest event (default: only new ones)")
    p.add_argument("--max-messages", type=int, default=0, help="stop after this many events (0: no limit)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds (0: no limit)")
    return p.parse_args(argv)


def _json_default(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot print {type(value).__name__}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The writer's schema comes from the registry by the id in each message.
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": args.registry}))
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        "enable.auto.commit": True,
        # A short session timeout: some brokers (the project's local one) complete a
        # group join only after about half of it.
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    })

    def on_assign(c, partitions):
        print(f"assigned {len(partitions)} partition(s) of {args.topic}", file=sys.stderr, flush=True)

    # Ctrl-C and SIGTERM only ask the loop to stop: an exception raised wherever the
    # signal lands (inside a rebalance callback, say) could leave the consumer half-way
    # through a rebalance, and close() would then wait for it.
    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))

    consumer.subscribe([args.topic], on_assign=on_assign)
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    seen = 0
    try:
        while not stopping and (args.max_messages <= 0 or seen < args.max_messages):
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                break
            msg = consumer.poll(wait)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            try:
                event = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
            except (SerializationError, SchemaRegistryError) as exc:  # not ours to fix: report it and go on
                print(f"skipped {msg.topic()}[{msg.partition()}]@{msg.offset()}: {exc}", file=sys.stderr)
                continue
            key = msg.key().decode("utf-8") if msg.key() is not None else None
            print(json.dumps(
                {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                 "key": key, "value": event},
                default=_json_default,
            ), flush=True)
            seen += 1
    finally:
        consumer.close()  # leaves the group at once and commits what was printed
    print(f"{seen} event(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
