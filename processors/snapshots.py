"""Bounded recovery of the model table: snapshots of our own, because the broker never
compacts the changelog (Tansu does not, and has no DeleteRecords either).

Without this, a restarted worker replays the whole ``home-models`` changelog, which
grows with uptime. Instead, per changelog partition:

- ``SnapshotPolicy`` counts checkpoint writes; once they exceed ``factor`` times the
  homes the partition holds (at least ``minimum``), a snapshot is due;
- the worker then notes the partition's end offset, rewrites *every* home of the
  partition (a full snapshot: everything before it is superseded), waits until the
  broker has it, and records the noted offset as the partition's **snapshot start**:
  the committed offset of a consumer group of its own (``SnapshotPointer``; a Kafka
  committed offset is a small durable key-value entry every broker keeps);
- on recovery, Faust reads the changelog from the snapshot start instead of from 0
  (the table's ``persisted_offset``).

A recovery therefore replays at most about ``factor + 1`` times the partition's homes
plus the records written while the last snapshot was taken, whatever the uptime.

>>> p = SnapshotPolicy(factor=2.0, minimum=10)
>>> p.written(3, 15); p.due({3: 8}), p.due({3: 5})
([], [3])
>>> p.done(3); p.due({3: 5})
[]
"""

from __future__ import annotations

from collections import Counter


class SnapshotPolicy:
    """When a changelog partition needs a full snapshot (pure bookkeeping)."""

    # factor 4: snapshots add at most a quarter to the changelog writes, and a recovery
    # replays at most ~5x the partition's homes (plus ``minimum`` for tiny partitions)
    def __init__(self, factor: float = 4.0, minimum: int = 50):
        self.factor = factor
        self.minimum = minimum
        self.since = Counter()  # partition -> records written since its last snapshot

    def written(self, partition: int, n: int = 1) -> None:
        self.since[partition] += n

    def due(self, live: dict[int, int]) -> list[int]:
        """Partitions whose writes since the last snapshot exceed ``factor`` x their
        live homes (``live``: partition -> homes), and ``minimum``."""
        return sorted(p for p, n in self.since.items()
                      if n > max(self.minimum, self.factor * live.get(p, 0)))

    def done(self, partition: int) -> None:
        self.since.pop(partition, None)

    def forget(self) -> None:
        self.since.clear()


class SnapshotPointer:
    """Snapshot start offsets of one changelog topic, kept as the committed offsets of
    the consumer group ``group`` (which never consumes). Thin adapter over
    confluent-kafka; every call is a short blocking request."""

    def __init__(self, settings, topic: str, group: str):
        from confluent_kafka import Consumer

        self.topic = topic
        self._consumer = Consumer({**settings.kafka_client_config(), "group.id": group,
                                   "enable.auto.commit": False})

    def start(self, partition: int, timeout: float = 10.0) -> int | None:
        """Where recovery of ``partition`` may begin, or None (from the beginning)."""
        from confluent_kafka import TopicPartition

        (tp,) = self._consumer.committed([TopicPartition(self.topic, partition)], timeout=timeout)
        return tp.offset if tp.error is None and tp.offset >= 0 else None

    def end(self, partition: int, timeout: float = 10.0) -> int:
        """An offset no later than the partition's end (Tansu reports the start of the
        last batch + 1, which is never past the end: safe as a snapshot start)."""
        from confluent_kafka import TopicPartition

        _low, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=timeout)
        return max(0, high)

    def commit(self, partition: int, offset: int) -> None:
        from confluent_kafka import TopicPartition

        self._consumer.commit(offsets=[TopicPartition(self.topic, partition, offset)], asynchronous=False)

    def close(self) -> None:
        self._consumer.close()
