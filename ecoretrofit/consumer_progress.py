"""How far every consumer group has got: committed offsets against the log's end.

Read from the broker, not from the consumers, so it covers every consumer alike: the
Faust workers, the batching sinks, and ClickHouse's Kafka engine, whose consumer runs
inside the warehouse and cannot report for itself. A consumer that keeps failing on
the same message (a Kafka-engine block ClickHouse refuses, a poison message) still
polls and still looks alive, but its committed offset stops moving while messages
wait: the alert ``EcoConsumerNotProgressing`` (infra/prometheus/eco.rules.yml) fires on
exactly that.

Two gauges per (group, topic), summed over partitions:
``eco_consumer_committed_offset`` (only ever grows while the group makes progress) and
``eco_consumer_lag_messages`` (end offset minus committed, per partition, floored at 0).

End offsets come from fetch responses (see :func:`end_offsets`: Tansu's ListOffsets
answers are wrong). ``export`` sets the gauges; ``ecoretrofit consumers --serve`` calls it every few seconds.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupProgress:
    group: str
    topic: str
    partitions: int
    committed: int  # sum of committed offsets
    lag: int  # sum over partitions of max(0, end - committed)


def lag_of(committed: dict[int, int], ends: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(sum of committed offsets, lag) of one topic; a partition without a commit
    counts from its low watermark.

    >>> lag_of({0: 10, 1: 5}, {0: (0, 12), 1: (0, 5), 2: (3, 7)})
    (18, 6)
    """
    total, lag = 0, 0
    for p, (low, high) in ends.items():
        c = committed.get(p)
        c = low if c is None or c < 0 else c
        total += c
        lag += max(0, high - c)
    return total, lag


def measure(bootstrap: str, timeout: float = 10.0) -> list[GroupProgress]:
    """Every consumer group the broker knows, per topic it has committed offsets for."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    listing = admin.list_consumer_groups(request_timeout=timeout).result()
    groups = sorted(g.group_id for g in listing.valid)
    if not groups:
        return []
    committed: dict[tuple[str, str], dict[int, int]] = {}
    for group in groups:
        try:
            fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)
            for tp in fut[group].result().topic_partitions:
                committed.setdefault((group, tp.topic), {})[tp.partition] = tp.offset
        except Exception as exc:  # a group being deleted right now
            log.debug("offsets of group %s: %s", group, exc)
    topics = sorted({t for _, t in committed})
    ends = end_offsets(bootstrap, topics, timeout)
    out = []
    for (group, topic), offsets in sorted(committed.items()):
        if topic in ends:
            total, lag = lag_of(offsets, ends[topic])
            out.append(GroupProgress(group, topic, len(ends[topic]), total, lag))
    return out


def end_offsets(bootstrap: str, topics: list[str], timeout: float = 10.0,
                fetch_s: float = 3.0) -> dict[str, dict[int, tuple[int, int]]]:
    """``{topic: {partition: (low, high)}}`` from fetch responses.

    Tansu answers ListOffsets (what ``get_watermark_offsets`` asks) with wrong end
    offsets (1 for a partition holding 6 messages, measured), but the high watermark
    in its fetch responses is right; so this fetches from every partition once,
    reading at most a message, and keeps the watermarks of the responses.
    """
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    if not topics:
        return {}
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"eco-progress-{uuid.uuid4().hex[:6]}",
                       "enable.auto.commit": False, "log_level": 0, "fetch.wait.max.ms": 50,
                       "max.partition.fetch.bytes": 1024})
    try:
        meta = reader.list_topics(timeout=timeout).topics
        tps = [TopicPartition(t, p, OFFSET_END) for t in topics if t in meta for p in meta[t].partitions]
        reader.assign(tps)
        ends: dict[str, dict[int, tuple[int, int]]] = {}
        deadline = time.monotonic() + fetch_s
        while True:
            reader.consume(100, 0.1)
            for tp in tps:
                low, high = reader.get_watermark_offsets(tp, cached=True)
                if high >= 0:
                    ends.setdefault(tp.topic, {})[tp.partition] = (max(low, 0), high)
            if sum(len(v) for v in ends.values()) == len(tps) or time.monotonic() > deadline:
                return ends
    finally:
        reader.close()


def export(bootstrap: str) -> int:
    """Measure and set the gauges of ``ecoretrofit.metrics`` (groups gone since the
    last call disappear); returns how many (group, topic) pairs were exported."""
    from ecoretrofit import metrics

    rows = measure(bootstrap)
    metrics.CONSUMER_COMMITTED.clear()
    metrics.CONSUMER_LAG.clear()
    for g in rows:
        metrics.CONSUMER_COMMITTED.labels(group=g.group, topic=g.topic).set(g.committed)
        metrics.CONSUMER_LAG.labels(group=g.group, topic=g.topic).set(g.lag)
    return len(rows)
