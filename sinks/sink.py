"""The batching sink's engine: consume -> batch -> ledger -> write -> commit, exactly once.

``ecoretrofit sink --topic telemetry|anomalies|alerts [--to warehouse|lake]`` consumes
one topic with confluent-kafka (auto-commit off), decodes the Confluent-framed Avro,
buffers per partition, and writes batches bounded by size (``--batch-rows``, per
partition) and by time (``--batch-seconds``, age of a buffer's first message). Kafka
offsets are committed only after the target acknowledged the batch.

Why this is exactly-once
------------------------
At-least-once is the easy half: offsets are committed after the write, so a crash
between the two replays the batch. The other half is making that replay store nothing
new. Two mechanisms together:

1. **Idempotent writes keyed by the offset range.** A batch is one partition's
   messages ``[first_offset, last_offset]``. Its rows go to ClickHouse with
   ``insert_deduplication_token = "<topic>:<partition>:<first>-<last>"`` (dead letters
   with the same token plus ``":dlq"``). The target tables set
   ``non_replicated_deduplication_window = 10000`` (sinks/sql/030_sink_tables.sql):
   ClickHouse keeps the tokens of the last 10,000 blocks and acknowledges a block whose
   token it has seen without storing it again. Verified on chdb 26.1 (embedded
   ClickHouse): the same INSERT with the same token twice stores the rows once, also
   when one insert touches several partitions (each part gets the token plus its
   index, identical on replay). In lake mode the same role is played by deterministic
   object keys ``part-<topic>-<partition>-<first>-<last>.parquet``: a replay
   overwrites the same objects.

2. **A replay must cut the same batch.** Dedup by token only works if the replayed
   batch has exactly the same offset range, and "the same range" is not a given:
   batches are cut by size *and by time*, and after a restart more messages are
   waiting, so a fresh cut from the committed offset would usually be longer than the
   batch that was written (new token, duplicates). Fixed-size offset grids do not mix
   with a time bound either (a time-cut partial range differs from its replay). So the
   sink keeps a **write-ahead ledger** of cuts: before writing a batch it records
   ``(group, topic, partition, first_offset, last_offset)`` (ClickHouse table
   ``sink_batches``; in lake mode one small object per batch under ``_ledger/`` in
   the bucket). The order per flush is ledger -> data -> commit. When a partition is
   assigned (start-up, rebalance) the sink reads the group's committed offset and the
   ledger ranges ending at or after it: those are the batches that may have been
   written but not committed (at most the batches of one flush: every flush commits
   before the next one starts). The :class:`Batcher` then cuts
   exactly those ranges again, whatever ``--batch-rows``/``--batch-seconds`` say now,
   and only afterwards cuts freely. Every crash point is covered:

   - before the ledger write: nothing was written; the replay cuts freely (no token
     was ever used for these offsets);
   - after the ledger write, before or during the data write: the replay re-forms the
     recorded range; whatever part of it reached the table is dropped by the token;
   - after the data write, before the commit: same, the whole batch is deduplicated;
   - after the commit: the ledger row is behind the committed offset and ignored.

   The ledger write is itself idempotent (a repeated range is the same range).

What this does not cover: a replay older than the dedup window (an operator resetting
the group's offsets to the start of a long topic re-inserts rows whose tokens have left
the 10,000-block window), and two sink groups writing the same table (each cuts its own
ranges, so each stores every message once: run one group per table). Dead letters
follow the same discipline: they are part of their batch. Decoding is deterministic
too: an unreachable schema registry is waited for (:func:`~sinks.kafka_source.registry_fetch`), never
turned into dead letters, so a replayed batch decodes exactly as it did the first
time.

Telemetry: with ``ECO_TELEMETRY_INGEST=sink`` (the default) this sink is how readings
reach ``telemetry`` (a stack component and a compose service), and it stores one row per
(home_id, seq, ts): a reading produced twice is stored once (sinks/reading_identity.py,
which also says why that filter and the token above never lose a row); its inserts
deduplicate the roll-up views chained from ``telemetry`` too
(``deduplicate_blocks_in_dependent_materialized_views``). With
``ECO_TELEMETRY_INGEST=kafka_engine`` the path is ``telemetry_queue`` -> ``telemetry_mv``
-> ``telemetry``, at-least-once: ClickHouse writes a block to the view's target, then
commits the block's offsets, and a block whose commit failed is read and written again;
count readings there with ``uniqExact(home_id, ts)``. What was measured of both paths is
in docs/delivery.md.

Pure parts (no broker, no warehouse): :class:`~sinks.batching.Batcher`, :func:`~sinks.batching.normalise_ranges`,
:class:`Sink` driven by any source/writer/ledger with the small interfaces below; the
unit tests run the whole crash/replay cycle against in-memory fakes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Protocol

from ecoretrofit import metrics
from schemas import plausibility
from sinks.batching import DEFAULT_BATCH_ROWS, DEFAULT_BATCH_SECONDS, Batch, Batcher, normalise_ranges

log = logging.getLogger("eco.sink")


# ================================================================ interfaces
class Source(Protocol):
    """What the sink needs of a consumer (KafkaSource, or a fake in the tests)."""

    topic: str

    def subscribe(self, on_assign: Callable[[list[int]], None], on_revoke: Callable[[list[int]], None]) -> None: ...
    def poll(self, max_messages: int, timeout: float) -> list: ...  # confluent_kafka.Message-like
    def committed(self, partitions: list[int]) -> dict[int, int | None]: ...
    def commit(self, offsets: dict[int, int]) -> None: ...  # next offset to read, per partition
    def pause(self, partitions: list[int]) -> None: ...
    def resume(self, partitions: list[int]) -> None: ...
    def close(self) -> None: ...


class Ledger(Protocol):
    def pending(self, group: str, topic: str, committed: dict[int, int | None]) -> dict[int, list[tuple[int, int]]]: ...
    def record(self, group: str, batches: list[Batch]) -> None: ...
    def forget(self, group: str, batches: list[Batch]) -> None: ...  # committed: may be deleted


class Writer(Protocol):
    label: str  # the `table` label of the sink metrics

    def write(self, batch: Batch) -> None: ...  # idempotent for an identical batch


class TransientError(Exception):
    """The target is unavailable; retry the same batches later."""


class Interrupted(BaseException):
    """Stopped while waiting for the schema registry (a BaseException, so that the
    decoder's catch-all does not turn it into a dead letter)."""


# ==================================================================== the sink
class Sink:
    """The consume -> batch -> ledger -> write -> commit loop.

    ``decode(msg) -> (row, event_ms)`` raises :class:`ecoretrofit.serde.DecodeError`
    (or any ValueError) for a message that becomes a dead letter.
    """

    def __init__(
        self,
        source: Source,
        decode: Callable[[object], tuple[tuple, int | None]],
        writer: Writer,
        ledger: Ledger,
        group: str,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        batch_seconds: float = DEFAULT_BATCH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        retry_seconds: float = 1.0,
        commit_delay: float = 0.0,
        poll_max: int = 10_000,
        stop: threading.Event | None = None,
        leave_wait_s: float = 0.0,
    ):
        self.source = source
        self.topic = source.topic
        self.decode = decode
        self.writer = writer
        self.ledger = ledger
        self.group = group
        self.batcher = Batcher(self.topic, batch_rows, batch_seconds)
        self.clock = clock
        self.retry_seconds = retry_seconds
        self.commit_delay = commit_delay  # test hook: widen the insert -> commit window
        self.poll_max = poll_max
        self.leave_wait_s = leave_wait_s
        self.assigned: set[int] = set()
        self.ready: deque[Batch] = deque()
        self.stop = stop or threading.Event()
        self._flushing = False
        self._failing = False
        self.stats = {"rows": 0, "dead_letters": 0, "duplicates": 0, "batches": 0, "replayed_batches": 0, "commits": 0}
        self._newest_event_ms: int | None = None
        self._last_activity: float | None = None
        label = writer.label
        self._m_rows = metrics.SINK_ROWS.labels(table=label)
        self._m_duplicates = metrics.SINK_DUPLICATES.labels(table=label)
        self._m_batch = metrics.SINK_BATCH_SECONDS.labels(table=label)
        self._m_lag = metrics.SINK_LAG_SECONDS.labels(table=label)
        self._m_size = metrics.BATCH_SIZE.labels(component="sink")
        self._m_last = metrics.LAST_EVENT_TS.labels(component="sink")

    # ------------------------------------------------------------- rebalances
    def on_assign(self, partitions: list[int]) -> None:
        partitions = sorted(partitions)
        self.batcher.drop(partitions)
        self.ready = deque(b for b in self.ready if b.partition not in partitions)
        committed = self.source.committed(partitions)
        while True:
            try:
                pending = self.ledger.pending(self.group, self.topic, committed)
                break
            except TransientError as exc:
                if self.stop.is_set():
                    pending = {}
                    break
                log.warning("cannot read the sink ledger (%s); retrying", exc)
                time.sleep(self.retry_seconds)
        for p in partitions:
            ranges = normalise_ranges(pending.get(p, ()), committed.get(p))
            self.batcher.expect(p, ranges)
            if ranges:
                log.info("%s[%d]: re-cutting %d batch(es) recorded but not committed: %s",
                         self.topic, p, len(ranges), ", ".join(f"{a}-{b}" for a, b in ranges))
                self.stats["replayed_batches"] += len(ranges)
        self.assigned |= set(partitions)
        self._last_activity = self.clock()  # --exit-when-idle counts from the assignment
        log.info("assigned %s[%s] (committed %s)", self.topic, ",".join(map(str, partitions)), committed)

    def on_revoke(self, partitions: list[int]) -> None:
        partitions = sorted(set(partitions) & self.assigned)
        if partitions and not self._flushing and not self._failing:
            # hand the partitions over with what we have stored and committed
            batches = [b for b in self.ready if b.partition in partitions] + self.batcher.cut(partitions)
            if batches:
                try:
                    self._write_and_commit(batches)
                except Exception as exc:  # the next owner re-cuts them from the ledger
                    log.warning("could not flush revoked partitions %s: %s", partitions, exc)
        self.assigned -= set(partitions)
        self.batcher.drop(partitions)
        self.ready = deque(b for b in self.ready if b.partition in self.assigned)
        log.info("revoked %s[%s]", self.topic, ",".join(map(str, partitions)))

    # -------------------------------------------------------------- the loop
    def run(self, idle_exit: float | None = None) -> dict:
        """Consume until :attr:`stop` is set (or, once partitions are assigned,
        nothing arrived for ``idle_exit`` seconds); then write and commit what is
        buffered."""
        self.source.subscribe(self.on_assign, self.on_revoke)
        self._last_activity = None  # idleness counts from the first assignment
        try:
            try:
                while not self.stop.is_set():
                    got = self.poll_once(0.2)
                    now = self.clock()
                    if got:
                        self._last_activity = now
                    elif (idle_exit is not None and self._last_activity is not None
                          and now - self._last_activity >= idle_exit):
                        break  # caught up: the shutdown path below stores what is buffered
                    self.ready.extend(self.batcher.cut_due(now))
                    if self.ready:
                        self.flush_ready()
                    self._update_lag()
            except Interrupted:
                # The message being decoded was never buffered: every batch ends
                # before it, so committing them below skips nothing.
                log.info("stopped while waiting for the schema registry")
            try:
                self._wait_for_partitions_before_leaving()
            except Interrupted:
                pass
            # shutdown: everything buffered becomes a batch, written and committed
            self.ready.extend(self.batcher.cut())
            if self.ready:
                self.flush_ready()
        finally:
            self.source.close()
        return self.stats

    def _wait_for_partitions_before_leaving(self) -> None:
        """Leave only a formed group: our broker (Tansu 0.6) keeps a member that leaves
        a group still forming as its leader, and every later member of the group then
        waits for it, for good (docs/delivery.md, tests/test_tansu_groups.py; seen here
        when the stack's telemetry sink was stopped a few seconds after a restart). So
        a sink stopped before it got its partitions waits for them (at most
        ``leave_wait_s``); what it reads meanwhile is stored before it leaves."""
        deadline = self.clock() + self.leave_wait_s
        waited = False
        while not self.assigned and self.clock() < deadline:
            waited = True
            self.poll_once(0.2)
        if waited:
            log.info("stopping: %s", "partitions held, leaving the group" if self.assigned
                     else f"no partitions after {self.leave_wait_s:g}s, leaving anyway")

    def poll_once(self, timeout: float) -> int:
        msgs = self.source.poll(self.poll_max, timeout)
        now = self.clock()
        n = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                log.warning("consumer error: %s", err)
                continue
            p = msg.partition()
            if p not in self.assigned:
                continue
            n += 1
            offset = msg.offset()
            try:
                row, event_ms = self.decode(msg)
            except ValueError as exc:  # DecodeError is a ValueError
                reason = getattr(exc, "reason", "invalid")
                metrics.DEAD_LETTERS.labels(component="sink", topic=self.topic, reason=reason).inc()
                raw, error = msg.value() or b"", str(exc)
                if len(raw) > plausibility.DEAD_LETTER_MAX_BYTES:  # a 10 MB message is not kept whole
                    raw, error = raw[: plausibility.DEAD_LETTER_MAX_BYTES], error + plausibility.truncation_note(len(raw))
                closed = self.batcher.add(p, offset, dead=(self.topic, p, offset, raw, error), now=now)
            else:
                closed = self.batcher.add(p, offset, row=row, event_ms=event_ms, now=now)
            if closed:
                self.ready.extend(closed)
        return n

    def flush_ready(self) -> None:
        """Write and commit every ready batch, retrying while the target is down.
        While retrying the assigned partitions are paused, and the consumer is still
        polled so the group keeps us (and rebalances are served)."""
        attempts = 0
        paused: list[int] = []
        try:
            while self.ready:
                batches = [b for b in self.ready if b.partition in self.assigned]
                if not batches:
                    self.ready.clear()
                    return
                try:
                    self._write_and_commit(batches)
                    done = {id(b) for b in batches}
                    self.ready = deque(b for b in self.ready if id(b) not in done)
                    self._failing = False
                except TransientError as exc:
                    attempts += 1
                    self._failing = True
                    if self.stop.is_set() and attempts >= 3:
                        # stopping and the target is still down: leave the batches
                        # uncommitted; the next start replays them (exactly, via the ledger)
                        log.error("giving up on %d batch(es) at shutdown (%s); they are replayed "
                                  "from the committed offsets at the next start", len(batches), exc)
                        self.ready.clear()
                        return
                    log.warning("write failed (attempt %d, %d batch(es), %s); retrying in %.1fs",
                                attempts, len(batches), exc, self.retry_seconds)
                    if not paused and self.assigned:
                        paused = sorted(self.assigned)
                        self.source.pause(paused)
                    deadline = self.clock() + self.retry_seconds
                    while self.clock() < deadline:
                        self.poll_once(0.1)  # paused: keeps membership, serves rebalances
        finally:
            if paused:
                still = sorted(set(paused) & self.assigned)
                if still:
                    self.source.resume(still)

    def _write_and_commit(self, batches: list[Batch]) -> None:
        self._flushing = True
        t0 = time.perf_counter()
        try:
            self.ledger.record(self.group, batches)
            for b in batches:
                self.writer.write(b)
            if self.commit_delay:
                log.info("inserted %d batch(es) (%s); committing in %.1fs", len(batches),
                         ", ".join(b.token for b in batches), self.commit_delay)
                time.sleep(self.commit_delay)
            offsets: dict[int, int] = {}
            for b in batches:
                offsets[b.partition] = max(offsets.get(b.partition, 0), b.last_offset + 1)
            try:
                self.source.commit(offsets)
            except Exception as exc:
                # Written but not committed: harmless, the ledger replays it exactly.
                log.warning("offset commit failed (%s); the batches will be replayed and deduplicated", exc)
                raise TransientError(f"commit failed: {exc}") from None
            self.stats["commits"] += 1
        finally:
            self._flushing = False
        elapsed = time.perf_counter() - t0
        try:
            self.ledger.forget(self.group, batches)
        except Exception as exc:  # only housekeeping
            log.debug("ledger clean-up failed: %s", exc)
        for b in batches:
            self.stats["rows"] += len(b.rows) - b.duplicates
            self.stats["dead_letters"] += len(b.dead)
            self.stats["duplicates"] += b.duplicates
            self.stats["batches"] += 1
            self._m_rows.inc(len(b.rows) - b.duplicates)
            if b.duplicates:
                self._m_duplicates.inc(b.duplicates)
            self._m_batch.observe(elapsed)
            self._m_size.observe(b.messages)
            if b.newest_event_ms is not None and (self._newest_event_ms is None or b.newest_event_ms > self._newest_event_ms):
                self._newest_event_ms = b.newest_event_ms
        self._m_last.set(time.time())
        self._update_lag()
        log.debug("stored %d batch(es) in %.3fs", len(batches), elapsed)

    def _update_lag(self) -> None:
        if self._newest_event_ms is not None:
            self._m_lag.set(max(0.0, time.time() - self._newest_event_ms / 1000))
