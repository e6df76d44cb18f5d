"""Faust's Kafka consumer, handing the messages of chosen topics over a fetch at a time.

Faust delivers every message on its own: the consumer's drain loop awaits the
conductor per message through ``Service.wait_first`` (two tasks and an
``asyncio.wait`` each), the conductor puts an ``Event`` on the topic's queue, and the
agent's stream takes it back off, message by message. Profiled (py-spy on a worker
scoring a backlog), that machinery took about three times the scoring itself.

``install(app, topics, handler)`` keeps everything else of Faust -- the consumer group,
rebalancing, the read offsets and gaps, acknowledgements and commits, tables and their
changelog recovery, timers -- and changes one thing: a message of one of ``topics``
is collected instead of delivered, and ``handler`` gets the list of them once per
fetch (at most ``max_batch``). They are collected a partition's records at a time,
as ``BatchMessage``: Faust's ``getmany`` walks a fetch message by message (an async
generator step, a high-water lookup and a ``ConsumerMessage`` each), the largest
cost left beside the scoring when profiled. The handler acknowledges them
(``consumer.ack``) when it is safe to commit them; messages of every other topic (table changelogs, Faust's
internal topics) take Faust's own path. The topics must still be known to the app
(``app.topics.add``) so that the group subscribes to them.

This relies on the shape of ``faust.transport.consumer.Consumer._drain_messages`` and
``getmany`` (faust-streaming 0.15, pinned); the processor's tests run it against the
real broker (``tests/test_processor.py``, ``tests/test_rebalance.py``,
``tests/test_batch_consumer.py``).

Records of a paused partition are fetched again, never dropped. Faust keeps a partition
assigned but out of its set of active partitions while tables recover, and asks
aiokafka for the records of the active ones; that set is live, and when it is empty
by the time aiokafka reads it (it is emptied and refilled around recovery), aiokafka
returns the records of *every* assigned partition (``Fetcher.fetched_records``: an
empty ``partitions`` means all). Faust's ``getmany`` drops those of paused partitions,
with aiokafka's position already past them; recovery then seeks back to the
committed offsets, but a partition never committed is not moved, and its first
records were skipped unscored and later committed over (``tests/test_rebalance.py``
caught it). ``_fetch`` seeks such a partition back to its first undelivered record
instead.

The consumer also corrects the end offsets that table recovery reads up to. Faust
replays a changelog partition until it has read the offset before the partition's
end as ListOffsets reports it, and then applies nothing more it reads there until the
next rebalance. Tansu answers ListOffsets with the start of the partition's last
producer batch + 1, so recovery stopped after the first record of the last batch: a
checkpoint written in the same batch after another home's was never applied, and
that home started from an older checkpoint or from nothing (a SIGKILLed worker's
alert on it was then neither re-fired nor resolved). The end offsets in fetch
responses are right (``ecoretrofit.consumer_progress.end_offsets``); recovery takes
the later of the two.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Iterable, Mapping

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import server_list
from faust.types import TP

from ecoretrofit.consumer_progress import end_offsets

log = logging.getLogger(__name__)

BatchHandler = Callable[[list], Awaitable[None]]


class BatchMessage:
    """What the handler gets for each message of a batch topic: the fields it reads and
    what ``Consumer.ack`` needs (``tp``, ``offset``, ``topic``, ``acked``; hashed by
    identity and weakly referenced, as Faust's unacknowledged set holds them), without
    Faust's ``ConsumerMessage`` (built per message, with fields for its stream path
    that a batch never uses)."""

    __slots__ = ("topic", "partition", "offset", "key", "value", "headers", "timestamp", "tp", "generation_id",
                 "acked", "__weakref__")

    def __init__(self, record, tp, generation_id: int):  # noqa: ANN001
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.key = record.key
        self.value = record.value
        self.headers = record.headers
        self.timestamp = record.timestamp
        self.tp = tp
        self.generation_id = generation_id
        self.acked = False


def later_ends(listed: Mapping[TP, int | None], fetched: Mapping[str, Mapping[int, tuple[int, int]]]) -> dict:
    """Each partition's end offset: the later of what ListOffsets reported
    (``listed``) and the high watermark of a fetch response (``fetched``, as
    ``end_offsets`` returns it: ``{topic: {partition: (low, high)}}``); a partition
    missing from one keeps the other's.

    >>> tp = TP("models-changelog", 0)
    >>> later_ends({tp: 4}, {"models-changelog": {0: (0, 7)}})  # Tansu: the last batch held 4..6
    {TP(topic='models-changelog', partition=0): 7}
    >>> later_ends({tp: 4}, {}), later_ends({tp: None}, {"models-changelog": {0: (0, 3)}})
    ({TP(topic='models-changelog', partition=0): 4}, {TP(topic='models-changelog', partition=0): 3})
    """
    ends = {}
    for tp, end in listed.items():
        high = fetched.get(tp.topic, {}).get(tp.partition, (None, None))[1]
        ends[tp] = max((e for e in (end, high) if e is not None), default=None)
    return ends


class BatchingConsumer(AIOKafkaConsumer):
    """The aiokafka consumer of Faust, with ``batch_topics`` handed to ``batch_handler``."""

    batch_topics: frozenset[str] = frozenset()
    batch_handler: BatchHandler | None = None
    on_fetch: Callable[[], None] | None = None  # called after each fetch is handled
    max_batch: int = 5000

    async def _fetch(self, timeout: float):  # noqa: ANN201
        """(tp, records) of one fetch, per partition: ``Consumer.getmany`` (faust/
        transport/consumer.py) without its per-message round robin, high-water
        tracking and ``ConsumerMessage``, which the batch topics do not need."""
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:  # as getmany: seek back to the committed offsets
                await self.perform_seek()
            except Exception as exc:
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        buffered = self._buffered_partitions
        for tp, tp_records in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break  # a rebalance started: the rest is not ours to deliver
            if active_partitions is None or tp in active_partitions or tp in buffered:
                yield tp, tp_records, generation_id
            elif tp_records:
                await self._rewind(tp, tp_records[0].offset)

    async def _rewind(self, tp: TP, offset: int) -> None:
        """Fetch ``tp`` again from ``offset``: its records came back but are not to be
        delivered now (see the module docstring), and aiokafka's position has already
        moved past them."""
        log.warning("%s[%d]: records from offset %d fetched while the partition is paused; fetching them again",
                    tp.topic, tp.partition, offset)
        try:
            # in the consumer's own thread and loop, as Faust's seeks to committed offsets
            await self._thread.call_thread(self._thread.seek, tp, offset)
            self._read_offset[tp] = offset if offset else None  # as Consumer.seek: the next record is unread
        except Exception as exc:  # no longer assigned here: its next owner reads from the committed offset
            log.info("%s[%d] not rewound: %r", tp.topic, tp.partition, exc)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        """End offsets for table recovery (only Faust's recovery asks): see the module
        docstring for why not ListOffsets' alone."""
        listed = await super().highwaters(*partitions)
        bootstrap = ",".join(server_list(self.transport.url, self.transport.default_port))
        try:
            fetched = await asyncio.to_thread(end_offsets, bootstrap, sorted({tp.topic for tp in partitions}))
        except Exception:  # recover as far as ListOffsets says, as Faust would
            log.exception("end offsets of %s from fetch responses unknown; recovery may stop short", partitions)
            fetched = {}
        ends = later_ends(listed, fetched)
        short = {tp: (listed[tp], end) for tp, end in ends.items() if end != listed[tp]}
        if short:
            log.info("changelog ends from fetch responses (ListOffsets said, fetch says): %s", short)
        return ends

    async def _drain_messages(self, fetcher) -> None:  # noqa: ANN001
        # Faust's loop (faust/transport/consumer.py), with the batch topics collected
        # a partition's records at a time.
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        to_message = self._to_message
        batch_topics = self.batch_topics
        handler = self.batch_handler
        on_fetch = self.on_fetch
        max_batch = self.max_batch
        commit_every = self._commit_every
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                batch: list = []
                self.diag.set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, records, generation_id in self._fetch(timeout=1.0):
                    if tp.topic in batch_topics:
                        read = get_read_offset(tp)
                        gaps = []
                        acks = acks_enabled_for(tp.topic)
                        for record in records:
                            offset = record.offset
                            if read is not None and offset < read:
                                continue  # already read (Faust drops these too)
                            if read and offset - read > 1 and acks:
                                gaps.append((read + 1, offset))
                            batch.append(BatchMessage(record, tp, generation_id))
                            read = offset
                        for first, last in gaps:
                            await self._add_gap(tp, first, last)
                        if read is not None:
                            set_read_offset(tp, read)
                        while len(batch) >= max_batch:
                            await handler(batch[:max_batch])
                            batch = batch[max_batch:]
                        continue
                    if batch:  # keep the order of messages across topics
                        await handler(batch)
                        batch = []
                    for record in records:  # every other topic: Faust's own path
                        offset = record.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is not None and offset < r_offset:
                            continue
                        if r_offset and offset - r_offset > 1 and acks_enabled_for(tp.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        await self.wait_first(callback(to_message(tp, record)), self.suspend_flow.wait())
                        set_read_offset(tp, offset)
                if batch:
                    await handler(batch)
                if on_fetch is not None:  # handled, records or none: the processor has looked
                    on_fetch()
                self.diag.unset_flag(CONSUMER_FETCHING)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


def install(app, topics: Iterable[str], handler: BatchHandler, max_batch: int = 5000,
            on_fetch: Callable[[], None] | None = None) -> None:
    """Make ``app``'s consumer hand ``topics`` to ``handler`` in batches, and call
    ``on_fetch`` after each fetch is handled (with records or without). Call before
    the app creates its consumer (before it starts)."""
    app.transport.Consumer = type("BatchingConsumer", (BatchingConsumer,), {
        "batch_topics": frozenset(topics), "batch_handler": staticmethod(handler), "max_batch": max_batch,
        "on_fetch": staticmethod(on_fetch) if on_fetch is not None else None,
    })
