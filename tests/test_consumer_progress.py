"""Consumer progress read from the broker (what EcoConsumerNotProgressing alerts on):
a group's committed offsets and its lag, against the real broker of the local stack,
and the exporter the stack runs."""

from __future__ import annotations

from confluent_kafka import Consumer, Producer, TopicPartition

from ecoretrofit import metrics
from ecoretrofit.admin import ensure_topics, unique_topic
from ecoretrofit.consumer_progress import measure
from helpers import wait_for


def test_committed_offsets_and_lag_per_group_and_topic(stack_settings):
    s = stack_settings
    topic = unique_topic("test.progress")
    group = f"{topic}.group"
    ensure_topics(s, {topic: 2})
    producer = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for i in range(12):  # one message a batch: Tansu's high watermark is then exact
        producer.produce(topic, value=b"x", partition=i % 2)
        assert producer.flush(10) == 0
    del producer
    consumer = Consumer({**s.kafka_client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 1)], asynchronous=False)
        rows = wait_for(lambda: [r for r in measure(s.kafka_bootstrap) if r.group == group], 30, 0.5,
                        what="the group in the broker's listing")
        assert [(r.topic, r.partitions, r.committed, r.lag) for r in rows] == [(topic, 2, 5, 7)]

        consumer.commit(offsets=[TopicPartition(topic, 0, 6), TopicPartition(topic, 1, 6)], asynchronous=False)
        rows = [r for r in measure(s.kafka_bootstrap) if r.group == group]
        assert [(r.committed, r.lag) for r in rows] == [(12, 0)]

        # the exporter the stack runs (`ecoretrofit consumers --serve`) publishes it
        port = metrics.port_for(s, "consumers")
        sample = f'eco_consumer_committed_offset{{group="{group}",topic="{topic}"}} 12.0'
        wait_for(lambda: sample in _metrics_text(port), 60, 1, what=f"{sample!r} on /metrics")
        assert f'eco_consumer_lag_messages{{group="{group}",topic="{topic}"}} 0.0' in _metrics_text(port)
    finally:
        consumer.close()


def _metrics_text(port: int) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.read().decode()
    except OSError:
        return ""
