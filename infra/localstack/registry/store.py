"""The registry's log: where every state change is appended before it is acknowledged.

Two implementations of one small interface (:class:`SchemaLog`):

* :class:`MemoryLog` keeps records in a list: tests, and ``registry serve --memory``.
* :class:`KafkaLog` keeps them in a one-partition Kafka topic (``_schemas`` by default),
  as Confluent's registry does, so the registry survives restarts with the broker.

Records are JSON objects (see ``infra.localstack.registry.core``); both logs store them as JSON bytes so
a record that cannot round-trip through JSON fails in tests too, not only on Kafka.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Iterator, Protocol

from schemas.topics import SCHEMAS

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The log cannot be read or written; the message is a one-line explanation."""


class SchemaLog(Protocol):
    def replay(self) -> Iterator[dict]:
        """Every record appended so far, oldest first (called once, at start)."""

    def append(self, record: dict) -> None:
        """Append one record; return only once it is durable (raise StoreError if not)."""

    def close(self) -> None: ...

    def describe(self) -> str:
        """Where the records live, for the start-up message."""


def encode(record: dict) -> bytes:
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def decode(data: bytes) -> dict:
    record = json.loads(data)
    if not isinstance(record, dict):
        raise ValueError("a record must be a JSON object")
    return record


class MemoryLog:
    """A log in a Python list. Sharing one instance between two servers simulates a restart."""

    def __init__(self) -> None:
        self._records: list[bytes] = []
        self._lock = threading.Lock()

    def replay(self) -> Iterator[dict]:
        with self._lock:
            snapshot = list(self._records)
        return (decode(data) for data in snapshot)

    def append(self, record: dict) -> None:
        data = encode(record)
        with self._lock:
            self._records.append(data)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return "in memory (lost on exit)"

    def __len__(self) -> int:
        return len(self._records)


class KafkaLog:
    """A log in a one-partition Kafka topic.

    One partition because the order of records is the registry's history: a second
    partition would let a delete overtake the registration it deletes.

    Reaching the end on replay: Tansu reports wrong high watermarks, so, like
    Confluent's KafkaStore, we append a unique no-op marker and read until we meet
    it: everything written before the marker has then been read.

    Only one registry process may write to a topic at a time (there is no leader
    election): two writers could hand out the same id.
    """

    NOOP = "NOOP"

    def __init__(
        self,
        client_config: dict,
        topic: str = SCHEMAS.name,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 10.0,
    ):
        # Imported here so MemoryLog users (unit tests) do not load librdkafka.
        from confluent_kafka import Producer

        self.topic = topic
        self.timeout_s = timeout_s  # for a replay, or one write, to complete
        self.connect_timeout_s = connect_timeout_s  # for the broker to answer at all
        self._client_config = dict(client_config)
        self._bootstrap = str(client_config.get("bootstrap.servers", "?"))
        self._errors: list[str] = []  # librdkafka's last errors, to explain a timeout
        self._ensure_topic()
        self._producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "acks": "all",  # acknowledged = on every in-sync replica
                "linger.ms": 0,  # one record per request anyway: do not wait for more
                # Bounded so that flush() below always ends with a definite outcome.
                "message.timeout.ms": int(timeout_s * 1000),
                "error_cb": self._on_error,
                "logger": log,
            }
        )
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def _on_error(self, err) -> None:
        self._errors.append(str(err))
        del self._errors[:-3]

    def _reason(self) -> str:
        return f" ({self._errors[-1]})" if self._errors else ""

    def _ensure_topic(self) -> None:
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient(
            {"bootstrap.servers": self._bootstrap, "error_cb": self._on_error, "logger": log}
        )
        try:
            metadata = admin.list_topics(timeout=self.connect_timeout_s)
        except KafkaException:
            raise StoreError(
                f"cannot reach the Kafka broker at {self._bootstrap} "
                f"within {self.connect_timeout_s:.0f} s{self._reason()}"
            ) from None
        if self.topic not in metadata.topics:
            # Created explicitly: an auto-created topic would get several partitions.
            futures = admin.create_topics([NewTopic(self.topic, num_partitions=1, replication_factor=1)])
            try:
                futures[self.topic].result(timeout=self.timeout_s)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise StoreError(f"cannot create topic {self.topic}: {exc.args[0].str()}") from None
            metadata = admin.list_topics(topic=self.topic, timeout=self.timeout_s)
        partitions = len(metadata.topics[self.topic].partitions)
        if partitions != 1:
            raise StoreError(
                f"topic {self.topic} has {partitions} partitions; the registry needs exactly 1 "
                "(delete it, or point ECO_TOPIC_SCHEMAS at another topic)"
            )

    # ---------------------------------------------------------------- interface
    def replay(self) -> Iterator[dict]:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

        marker = uuid.uuid4().hex
        self.append({"type": self.NOOP, "marker": marker})
        consumer = Consumer(
            {
                **self._client_config,
                # assign() below, not subscribe(): no group join, so no Tansu rebalance
                # wait. librdkafka still wants a group id.
                "group.id": f"registry-replay-{marker}",
                "enable.auto.commit": False,
                "enable.partition.eof": False,
                "error_cb": self._on_error,
                "logger": log,
            }
        )
        try:
            consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + self.timeout_s
            count = 0
            while True:
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"replaying topic {self.topic}: did not read back the start marker "
                        f"within {self.timeout_s:.0f} s after {count} records{self._reason()}"
                    )
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise StoreError(f"reading topic {self.topic}: {msg.error().str()}")
                count += 1
                try:
                    record = decode(msg.value())
                except ValueError as exc:
                    # Someone else wrote to our topic: skip, do not refuse to start.
                    log.warning("skipping unreadable record at offset %d of %s: %s", msg.offset(), self.topic, exc)
                    continue
                if record.get("type") == self.NOOP:
                    if record.get("marker") == marker:
                        log.debug("replayed %d records from %s", count, self.topic)
                        return
                    continue
                yield record
        finally:
            consumer.close()

    def append(self, record: dict) -> None:
        outcome: list[object] = []

        def delivered(err, msg) -> None:
            outcome.append(err)

        key = f"{record.get('type')}:{record.get('subject') or ''}".encode()
        with self._write_lock:
            try:
                self._producer.produce(self.topic, value=encode(record), key=key, partition=0, on_delivery=delivered)
            except Exception as exc:  # BufferError, KafkaException
                raise StoreError(f"cannot write to topic {self.topic}: {exc}") from None
            # Synchronous on purpose: the HTTP answer waits until the record is durable.
            self._producer.flush(self.timeout_s + 5)
        if not outcome:
            raise StoreError(f"writing to topic {self.topic}: no acknowledgement from the broker{self._reason()}")
        if outcome[0] is not None:
            raise StoreError(f"writing to topic {self.topic}: {outcome[0]}")

    def close(self) -> None:
        self._producer.flush(5)

    def describe(self) -> str:
        return f"Kafka topic {self.topic} at {self._bootstrap}"


def open_log(settings, *, memory: bool = False, topic: str | None = None, timeout_s: float = 30.0) -> SchemaLog:
    """The log the settings ask for: a KafkaLog on ``settings.topic_schemas``, or memory."""
    if memory:
        return MemoryLog()
    return KafkaLog(settings.kafka_client_config(), topic or settings.topic_schemas, timeout_s=timeout_s)
