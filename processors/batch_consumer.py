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
fetch (at most ``max_batch``). The handler acknowledges them (``consumer.ack``) when
it is safe to commit them; messages of every other topic (table changelogs, Faust's
internal topics) take Faust's own path. The topics must still be known to the app
(``app.topics.add``) so that the group subscribes to them.

This relies on the shape of ``faust.transport.consumer.Consumer._drain_messages``
(faust-streaming 0.15, pinned); the processor's tests run it against the real broker.

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
    max_batch: int = 5000

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
        # Faust's loop (faust/transport/consumer.py), with the batch topics collected.
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        batch_topics = self.batch_topics
        handler = self.batch_handler
        max_batch = self.max_batch
        commit_every = self._commit_every
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                batch: list = []
                self.diag.set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in getmany(timeout=1.0):
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already read (Faust drops these too)
                    if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    if message.topic in batch_topics:
                        batch.append(message)
                        set_read_offset(tp, offset)
                        if len(batch) >= max_batch:
                            await handler(batch)
                            batch = []
                        continue
                    if batch:  # keep the order of messages across topics
                        await handler(batch)
                        batch = []
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
                if batch:
                    await handler(batch)
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


def install(app, topics: Iterable[str], handler: BatchHandler, max_batch: int = 5000) -> None:
    """Make ``app``'s consumer hand ``topics`` to ``handler`` in batches. Call before
    the app creates its consumer (before it starts)."""
    app.transport.Consumer = type("BatchingConsumer", (BatchingConsumer,), {
        "batch_topics": frozenset(topics), "batch_handler": staticmethod(handler), "max_batch": max_batch,
    })
