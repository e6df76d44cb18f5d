"""The end offsets the processor's table recovery reads up to (processors/batch_consumer.py):
Tansu's ListOffsets answer stops inside the last producer batch, so recovery takes the
later of it and a fetch response's high watermark."""

from __future__ import annotations

from faust.types import TP

from processors.batch_consumer import later_ends

CHANGELOG = "eco-x-home-models-changelog"


def test_the_fetch_response_end_wins_when_list_offsets_stops_inside_the_last_batch():
    # a checkpoint batch of three homes at offsets 4..6: ListOffsets says 5, the fetch 7
    listed = {TP(CHANGELOG, 0): 5, TP(CHANGELOG, 1): 0, TP(CHANGELOG, 2): 12}
    fetched = {CHANGELOG: {0: (0, 7), 1: (0, 0), 2: (0, 12)}}
    assert later_ends(listed, fetched) == {TP(CHANGELOG, 0): 7, TP(CHANGELOG, 1): 0, TP(CHANGELOG, 2): 12}


def test_an_end_never_moves_back_and_a_missing_answer_keeps_the_other():
    listed = {TP(CHANGELOG, 0): 9, TP(CHANGELOG, 1): 3, TP(CHANGELOG, 2): None, TP("other", 0): 2}
    fetched = {CHANGELOG: {0: (0, 8), 2: (0, 4)}}  # partition 1 and the other topic unanswered
    assert later_ends(listed, fetched) == {
        TP(CHANGELOG, 0): 9, TP(CHANGELOG, 1): 3, TP(CHANGELOG, 2): 4, TP("other", 0): 2,
    }
    assert later_ends({TP(CHANGELOG, 0): None}, {}) == {TP(CHANGELOG, 0): None}


def test_the_broker_reports_the_end_of_a_multi_record_batch_only_in_fetch_responses(stack_settings):
    """The premise, on the real broker: one producer batch of three records; ListOffsets
    answers the batch's start + 1, the fetch response's high watermark the true end."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from ecoretrofit.admin import ensure_topics
    from ecoretrofit.consumer_progress import end_offsets
    from helpers import unique

    topic = unique("eco.test.batch-end")
    ensure_topics(stack_settings, {topic: 1})
    bootstrap = stack_settings.kafka_bootstrap

    async def produce_one_batch_and_list():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)
        await producer.start()
        try:
            futures = [await producer.send(topic, key=b"H%d" % i, value=b"checkpoint", partition=0) for i in range(3)]
            offsets = [(await f).offset for f in futures]
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            listed = await consumer.end_offsets([TopicPartition(topic, 0)])
        finally:
            await consumer.stop()
        return offsets, listed[TopicPartition(topic, 0)]

    offsets, listed = asyncio.run(produce_one_batch_and_list())
    assert offsets == [0, 1, 2]
    fetched = end_offsets(bootstrap, [topic])
    assert fetched[topic][0][1] == 3
    assert later_ends({TP(topic, 0): listed}, fetched) == {TP(topic, 0): 3}
    # what Faust's recovery was given before: short of the batch's last two records
    # (if the broker ever answers right, this test says so and the override is moot)
    assert listed == 1


def test_asking_aiokafka_for_no_partition_returns_every_partition(stack_settings):
    """The premise of ``BatchingConsumer._rewind``, on the real broker and the pinned
    aiokafka: records asked for with an empty set of partitions (Faust's live set of
    active partitions, emptied while tables recover) come back for every assigned
    partition, paused ones included, and the position moves past them. Dropped
    there, they were never read again (``tests/test_rebalance.py`` lost a partition's
    first records that way); the consumer must seek back."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from ecoretrofit.admin import ensure_topics
    from helpers import unique

    topic = unique("eco.test.batch-empty-set")
    ensure_topics(stack_settings, {topic: 2})
    bootstrap = stack_settings.kafka_bootstrap
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]

    async def fetch_with_no_partitions():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            for p in (0, 1):
                await (await producer.send(topic, value=b"reading", partition=p))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            got: dict = {}
            for _ in range(50):  # until both partitions' records were prefetched
                for tp, records in (await consumer._fetcher.fetched_records(set(), timeout=0.2)).items():
                    got.setdefault(tp.partition, []).extend(r.offset for r in records)
                if len(got) == 2:
                    break
            return got, [await consumer.position(tp) for tp in tps]
        finally:
            await consumer.stop()

    got, positions = asyncio.run(fetch_with_no_partitions())
    assert got == {0: [0], 1: [0]}
    assert positions == [1, 1]
