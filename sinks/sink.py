"""The batching sink: Kafka -> batches -> ClickHouse (or the S3 lake), exactly once.

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
too: an unreachable schema registry is waited for (:func:`registry_fetch`), never
turned into dead letters, so a replayed batch decodes exactly as it did the first
time.

The Kafka-engine path (``telemetry_queue`` -> ``telemetry_mv`` -> ``telemetry``) is
at-least-once: ClickHouse writes a block to the view's target, then commits the
block's offsets, and a block whose commit failed is read and written again. What was
measured on the local stack (embedded ClickHouse 26.1 on Tansu, 2 shared cores):

- warehouse restarts while 1,000-2,000 readings/s were produced (SIGTERM via
  ``LocalStack.restart("warehouse")``, 9 runs; SIGKILL then start, 2 runs): no reading
  lost and no duplicate in any run. The engine commits right after each block (about
  one a second here), so a stop rarely lands between write and commit. Consumption
  resumed 4-15 s after the restart (the group join), except after 4 of the 9 SIGTERM
  restarts, where it stalled for 100 s or more (one of them traced to the local S3
  store hanging, see tests/test_lake.py::seaweed_has_room; the others unexplained).
  The test reports such a stall as an expected failure rather than wait for it.
- ``ecoretrofit simulate --backfill --readings 1e7`` (112k readings/s) with no restart
  at all: 10,127,842 rows for 10,000,000 readings, i.e. 127,842 duplicates (1.3 %).
  ``system.kafka_consumers`` says why: "Maximum application poll interval
  (max.poll.interval.ms) exceeded" (the warehouse configures 10 s) while big blocks
  were written under load, then "CANNOT_COMMIT_OFFSET: Last block was already written
  to target table(s), but was not committed to Kafka"; after the rebalance those
  blocks were consumed again. The sink drained the same 10.5M-message topic
  afterwards (~42k rows/s) into ``telemetry_sink``: 10,000,000 rows, 10,000,000
  distinct.

Dashboards over ``telemetry`` should therefore count readings with ``uniqExact(home_id,
ts)`` (or read the sink's tables) when exact counts matter.

Pure parts (no broker, no warehouse): :class:`Batcher`, :func:`normalise_ranges`,
:class:`Sink` driven by any source/writer/ledger with the small interfaces below; the
unit tests run the whole crash/replay cycle against in-memory fakes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

from ecoretrofit import metrics

log = logging.getLogger("eco.sink")

DEFAULT_BATCH_ROWS = 20_000
DEFAULT_BATCH_SECONDS = 2.0

DEAD_LETTER_COLUMNS = ("topic", "partition", "offset", "raw", "error")
KAFKA_COLUMNS = ("kafka_partition", "kafka_offset")


# =============================================================== batches (pure)
@dataclass
class Batch:
    """One partition's messages ``[first_offset, last_offset]``, decoded."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: list[tuple] = field(default_factory=list)
    dead: list[tuple] = field(default_factory=list)  # (topic, partition, offset, raw, error)
    newest_event_ms: int | None = None

    @property
    def token(self) -> str:
        """The insert deduplication token: a function of the offset range only."""
        return f"{self.topic}:{self.partition}:{self.first_offset}-{self.last_offset}"

    @property
    def messages(self) -> int:
        return len(self.rows) + len(self.dead)


class _Buffer:
    __slots__ = ("first", "last", "rows", "dead", "opened", "newest")

    def __init__(self, offset: int, now: float):
        self.first = offset
        self.last = offset
        self.rows: list[tuple] = []
        self.dead: list[tuple] = []
        self.opened = now
        self.newest: int | None = None

    def __len__(self) -> int:
        return len(self.rows) + len(self.dead)


def normalise_ranges(ranges: Iterable[tuple[int, int]], committed: int | None = None) -> list[tuple[int, int]]:
    """Ledger ranges worth replaying: those ending at or after ``committed``, sorted,
    duplicates merged, and any range overlapping an earlier one dropped (it cannot
    have been cut by a sink honouring the ledger).

    >>> normalise_ranges([(10, 19), (0, 9), (10, 19), (15, 30), (20, 29)], committed=10)
    [(10, 19), (20, 29)]
    """
    out: list[tuple[int, int]] = []
    for first, last in sorted(set((int(a), int(b)) for a, b in ranges)):
        if last < first or (committed is not None and last < committed):
            continue
        if out and first <= out[-1][1]:
            continue
        out.append((first, last))
    return out


class Batcher:
    """Per-partition buffers and the rules that cut them into batches.

    - Recorded cuts first: a partition with ledger ranges pending (see :meth:`expect`)
      gets exactly those batches: a range's messages are buffered until its last
      offset, and neither the size nor the time bound cuts inside it. A buffer never
      straddles a recorded range's boundary.
    - Otherwise a buffer is cut when it holds ``max_rows`` messages (rows and dead
      letters alike), or by :meth:`cut_due` once its first message is ``max_seconds``
      old.

    >>> b = Batcher("t", max_rows=3, max_seconds=10)
    >>> out = [x for o in range(7) for x in b.add(0, o, row=(o,), now=0.0)]
    >>> [x.token for x in out], b.buffered()
    (['t:0:0-2', 't:0:3-5'], 1)
    >>> b.expect(1, [(100, 104)])
    >>> [x.token for o in range(100, 106) for x in b.add(1, o, row=(o,), now=0.0)]
    ['t:1:100-104']
    """

    def __init__(self, topic: str, max_rows: int, max_seconds: float):
        if max_rows < 1 or max_seconds <= 0:
            raise ValueError("max_rows and max_seconds must be positive")
        self.topic = topic
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self._buf: dict[int, _Buffer] = {}
        self._cuts: dict[int, deque[tuple[int, int]]] = {}

    # ------------------------------------------------------------- ledger cuts
    def expect(self, partition: int, ranges: Sequence[tuple[int, int]]) -> None:
        """Ranges recorded in the ledger but possibly not committed: re-cut them exactly."""
        self._cuts[partition] = deque(normalise_ranges(ranges))

    def expected(self, partition: int) -> list[tuple[int, int]]:
        return list(self._cuts.get(partition, ()))

    # ------------------------------------------------------------------ adding
    def add(self, partition: int, offset: int, row: tuple | None = None, dead: tuple | None = None,
            event_ms: int | None = None, now: float = 0.0) -> list[Batch]:
        """Buffer one message (a decoded row or a dead letter); returns the batches
        this message closed (zero, one, or two when it also ends a gap)."""
        out: list[Batch] = []
        cuts = self._cuts.get(partition)
        buf = self._buf.get(partition)
        if buf is not None and offset <= buf.last:
            return out  # a message seen already (re-delivery after a seek): ignore
        if cuts:
            # ranges we have moved past without reaching their end (messages gone)
            while cuts and cuts[0][1] < offset:
                first, last = cuts.popleft()
                if buf is not None and buf.first >= first:
                    log.warning("%s[%d]: recorded batch %d-%d ends at an offset never seen; cutting at %d",
                                self.topic, partition, first, last, buf.last)
                    out.append(self._close(partition))
                    buf = None
                else:
                    log.warning("%s[%d]: recorded batch %d-%d is no longer in the log; skipped",
                                self.topic, partition, first, last)
            if cuts and cuts[0][0] <= offset:
                # inside a recorded range: a buffer that began before it is closed first
                if buf is not None and buf.first < cuts[0][0]:
                    out.append(self._close(partition))
                    buf = None
                buf = self._append(partition, buf, offset, row, dead, event_ms, now)
                if offset >= cuts[0][1]:
                    cuts.popleft()
                    out.append(self._close(partition))
                return out
        buf = self._append(partition, buf, offset, row, dead, event_ms, now)
        if len(buf) >= self.max_rows:
            out.append(self._close(partition))
        return out

    def _append(self, partition, buf, offset, row, dead, event_ms, now) -> _Buffer:
        if buf is None:
            buf = self._buf[partition] = _Buffer(offset, now)
        buf.last = offset
        if dead is not None:
            buf.dead.append(dead)
        else:
            buf.rows.append(row)
            if event_ms is not None and (buf.newest is None or event_ms > buf.newest):
                buf.newest = event_ms
        return buf

    def _in_recorded_range(self, partition: int) -> bool:
        cuts = self._cuts.get(partition)
        buf = self._buf.get(partition)
        return bool(cuts) and buf is not None and buf.first >= cuts[0][0]

    def _close(self, partition: int) -> Batch:
        buf = self._buf.pop(partition)
        return Batch(self.topic, partition, buf.first, buf.last, buf.rows, buf.dead, buf.newest)

    # ----------------------------------------------------------------- cutting
    def oldest_age(self, now: float) -> float:
        return max((now - b.opened for b in self._buf.values()), default=0.0)

    def due(self, now: float) -> bool:
        return any(now - b.opened >= self.max_seconds and not self._in_recorded_range(p)
                   for p, b in self._buf.items())

    def cut_due(self, now: float) -> list[Batch]:
        """When some buffer is ``max_seconds`` old, cut it and every buffer at least
        half that old (one flush instead of one per partition a moment apart)."""
        if not self.due(now):
            return []
        half = self.max_seconds / 2
        return [self._close(p) for p in sorted(self._buf)
                if now - self._buf[p].opened >= half and not self._in_recorded_range(p)]

    def cut(self, partitions: Iterable[int] | None = None) -> list[Batch]:
        """Cut every buffer (of ``partitions``) now, e.g. at shutdown or revocation.
        A buffer inside a recorded range that has not reached its end stays: cutting it
        would form a different batch; its partition's next owner re-cuts it."""
        chosen = sorted(self._buf if partitions is None else set(partitions) & set(self._buf))
        return [self._close(p) for p in chosen if not self._in_recorded_range(p)]

    def drop(self, partitions: Iterable[int]) -> int:
        """Forget buffers and cuts of revoked partitions; returns the messages dropped."""
        n = 0
        for p in partitions:
            buf = self._buf.pop(p, None)
            n += len(buf) if buf else 0
            self._cuts.pop(p, None)
        return n

    def buffered(self) -> int:
        return sum(len(b) for b in self._buf.values())

    def partitions(self) -> list[int]:
        return sorted(self._buf)


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
        self.assigned: set[int] = set()
        self.ready: deque[Batch] = deque()
        self.stop = stop or threading.Event()
        self._flushing = False
        self._failing = False
        self.stats = {"rows": 0, "dead_letters": 0, "batches": 0, "replayed_batches": 0, "commits": 0}
        self._newest_event_ms: int | None = None
        self._last_activity: float | None = None
        label = writer.label
        self._m_rows = metrics.SINK_ROWS.labels(table=label)
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
            # shutdown: everything buffered becomes a batch, written and committed
            self.ready.extend(self.batcher.cut())
            if self.ready:
                self.flush_ready()
        finally:
            self.source.close()
        return self.stats

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
                raw = msg.value() or b""
                closed = self.batcher.add(p, offset, dead=(self.topic, p, offset, raw, str(exc)), now=now)
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
            self.stats["rows"] += len(b.rows)
            self.stats["dead_letters"] += len(b.dead)
            self.stats["batches"] += 1
            self._m_rows.inc(len(b.rows))
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


# ============================================================ Kafka (real)
class KafkaSource:
    """A confluent-kafka consumer in the shape :class:`Sink` expects."""

    def __init__(self, settings, topic: str, group: str, offset_reset: str = "earliest"):
        from confluent_kafka import Consumer

        self.topic = topic
        self.group = group
        self.consumer = Consumer({
            **settings.kafka_client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": offset_reset,
            "fetch.max.bytes": 52428800,
        })
        self._closed = False

    def subscribe(self, on_assign, on_revoke) -> None:
        self.consumer.subscribe(
            [self.topic],
            on_assign=lambda c, tps: on_assign([tp.partition for tp in tps]),
            on_revoke=lambda c, tps: on_revoke([tp.partition for tp in tps]),
            on_lost=lambda c, tps: on_revoke([tp.partition for tp in tps]),
        )

    def poll(self, max_messages: int, timeout: float) -> list:
        return self.consumer.consume(max_messages, timeout)

    def committed(self, partitions: list[int]) -> dict[int, int | None]:
        from confluent_kafka import TopicPartition

        if not partitions:
            return {}
        for attempt in range(10):
            try:
                tps = self.consumer.committed([TopicPartition(self.topic, p) for p in partitions], timeout=10)
                return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in tps}
            except Exception as exc:
                log.warning("reading committed offsets failed (%s); retrying", exc)
                time.sleep(1)
        raise TransientError("cannot read committed offsets")

    def commit(self, offsets: dict[int, int]) -> None:
        from confluent_kafka import TopicPartition

        result = self.consumer.commit(
            offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())], asynchronous=False)
        failed = [tp for tp in result or () if tp.error is not None]
        if failed:
            raise RuntimeError(f"commit failed for partitions {[tp.partition for tp in failed]}: {failed[0].error}")

    def pause(self, partitions: list[int]) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.pause([TopicPartition(self.topic, p) for p in partitions])

    def resume(self, partitions: list[int]) -> None:
        from confluent_kafka import TopicPartition

        try:
            self.consumer.resume([TopicPartition(self.topic, p) for p in partitions])
        except Exception as exc:  # not assigned any more
            log.debug("resume: %s", exc)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.consumer.close()


# ======================================================= ClickHouse (real)
def _retryable(fn):
    """Map the warehouse being unreachable or failing to TransientError."""

    def wrapper(*args, **kw):
        from clickhouse_connect.driver.exceptions import ClickHouseError

        try:
            return fn(*args, **kw)
        except (ClickHouseError, OSError) as exc:
            from sinks.warehouse import error_line

            raise TransientError(error_line(exc)) from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class ClickHouseLedger:
    """The ledger in ``{database}.sink_batches`` (sinks/sql/030_sink_tables.sql)."""

    COLUMNS = ("sink", "topic", "partition", "first_offset", "last_offset", "rows", "dead_letters")
    TYPES = ("String", "String", "UInt32", "UInt64", "UInt64", "UInt32", "UInt32")

    def __init__(self, client, database: str):
        self.client = client
        self.database = database

    @_retryable
    def pending(self, group, topic, committed):
        if not committed:
            return {}
        low = min((c or 0) for c in committed.values())
        rows = self.client.query(
            f"SELECT DISTINCT partition, first_offset, last_offset FROM {self.database}.sink_batches "
            "WHERE sink = {g:String} AND topic = {t:String} AND partition IN {ps:Array(UInt32)} "
            "AND last_offset >= {low:UInt64} ORDER BY partition, first_offset",
            parameters={"g": group, "t": topic, "ps": sorted(committed), "low": low},
        ).result_rows
        out: dict[int, list[tuple[int, int]]] = {}
        for p, first, last in rows:
            if last >= (committed.get(p) or 0):
                out.setdefault(int(p), []).append((int(first), int(last)))
        return out

    @_retryable
    def record(self, group, batches):
        rows = [(group, b.topic, b.partition, b.first_offset, b.last_offset, len(b.rows), len(b.dead)) for b in batches]
        self.client.insert("sink_batches", rows, database=self.database, column_names=list(self.COLUMNS),
                           column_type_names=list(self.TYPES))

    def forget(self, group, batches) -> None:
        pass  # rows expire with the table's TTL


class ClickHouseWriter:
    """Inserts a batch's rows (and dead letters) with its deduplication token."""

    def __init__(self, client, database: str, table: str, columns: Sequence[str], types: Sequence[str] | None = None):
        self.client = client
        self.database = database
        self.table = table
        self.label = table
        self.columns = list(columns)
        if types is None:
            described = {r[0]: r[1] for r in client.query(f"DESCRIBE TABLE {database}.{table}").result_rows}
            missing = [c for c in self.columns if c not in described]
            if missing:
                raise ValueError(f"{database}.{table} has no column(s) {', '.join(missing)}")
            types = [described[c] for c in self.columns]
        self.types = list(types)
        self.dl_types = ["String", "UInt64", "UInt64", "String", "String"]

    @_retryable
    def write(self, batch: Batch) -> None:
        if batch.rows:
            self.client.insert(
                self.table, list(zip(*batch.rows)), database=self.database, column_names=self.columns,
                column_type_names=self.types, column_oriented=True,
                settings={"insert_deduplication_token": batch.token},
            )
        if batch.dead:
            self.client.insert(
                "dead_letters", batch.dead, database=self.database, column_names=list(DEAD_LETTER_COLUMNS),
                column_type_names=self.dl_types, settings={"insert_deduplication_token": batch.token + ":dlq"},
            )


# ================================================================ topics
@dataclass(frozen=True)
class TopicSpec:
    """How one topic is decoded and where it is stored."""

    kind: str  # telemetry | anomalies | alerts
    topic: str
    table: str
    columns: tuple[str, ...]  # target columns, in row order
    schema: str | None  # reader schema name (None: the writer schema, stored as JSON)


def topic_spec(settings, kind: str) -> TopicSpec:
    import schemas

    if kind == "telemetry":
        fields = tuple(schemas.field_names(schemas.TELEMETRY_READING))
        return TopicSpec(kind, settings.topic_telemetry, "telemetry_sink", fields + KAFKA_COLUMNS, schemas.TELEMETRY_READING)
    if kind == "anomalies":
        fields = tuple(schemas.field_names(schemas.ANOMALY_EVENT))
        return TopicSpec(kind, settings.topic_anomalies, "anomalies_sink", fields + KAFKA_COLUMNS, schemas.ANOMALY_EVENT)
    if kind == "alerts":
        return TopicSpec(kind, settings.topic_alerts, "alerts_sink",
                         ("kafka_partition", "kafka_offset", "kafka_ts", "key", "schema_id", "payload"), None)
    raise ValueError(f"unknown topic kind {kind!r} (telemetry, anomalies or alerts)")


def registry_fetch(settings, stop: threading.Event, retry_seconds: float = 1.0, client=None) -> Callable[[int], str]:
    """``fetch(schema_id) -> schema text`` for the AvroDecoder, telling an answer from
    an outage: a registry that does not know the id (4xx) makes the message a dead
    letter, while an unreachable or failing registry is waited for. Otherwise a
    registry blip would turn good messages into dead letters, and a batch replayed
    after the blip would decode differently from the batch first written (same token,
    other rows: the dedup would keep the wrong version)."""
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    from ecoretrofit.serde import registry_client

    client = client or registry_client(settings)

    def fetch(schema_id: int) -> str:
        while True:
            try:
                return client.get_schema(schema_id).schema_str
            except SchemaRegistryError as exc:
                if 400 <= (exc.http_status_code or 0) < 500:
                    raise  # the registry's answer: no such schema
                error = exc
            except Exception as exc:  # connection refused, timeout…
                error = exc
            if stop.is_set():
                raise Interrupted()
            log.warning("schema registry unavailable (%s); retrying schema id %d", error, schema_id)
            stop.wait(retry_seconds)

    return fetch


def make_decoder(spec: TopicSpec, avro) -> Callable[[object], tuple[tuple, int | None]]:
    """``decode(msg) -> (row, event_ms)`` for a topic; ``avro`` is an AvroDecoder."""
    if spec.schema is None:
        def decode_generic(msg):
            raw = msg.value()
            record = avro.decode(raw)
            _, ts = msg.timestamp()
            key = msg.key()
            schema_id = int.from_bytes(raw[1:5], "big")
            payload = json.dumps(record, default=str, separators=(",", ":"))
            return (msg.partition(), msg.offset(), ts, (key or b"").decode("utf-8", "replace"), schema_id, payload), ts

        return decode_generic
    fields = spec.columns[: -len(KAFKA_COLUMNS)]

    def decode(msg):
        r = avro.decode(msg.value())
        return tuple([r[f] for f in fields]) + (msg.partition(), msg.offset()), r.get("ts")

    return decode


def group_for(kind: str, to: str) -> str:
    return f"eco-{'sink' if to == 'warehouse' else 'lake'}-{kind}"


def build(settings, kind: str, to: str = "warehouse", group: str | None = None, batch_rows: int | None = None,
          batch_seconds: float | None = None, offset_reset: str = "earliest", commit_delay: float = 0.0,
          lake_prefix: str | None = None) -> Sink:
    """A :class:`Sink` wired to Kafka and the warehouse (or the lake)."""
    import schemas
    from ecoretrofit.serde import AvroDecoder

    spec = topic_spec(settings, kind)
    group = group or group_for(kind, to)
    stop = threading.Event()
    avro = AvroDecoder(registry_fetch(settings, stop), schemas.schema_text(spec.schema) if spec.schema else None)
    if to == "warehouse":
        from sinks.warehouse import connect, wait_ready

        wait_ready(settings)
        client = connect(settings, compress=False)
        writer = _retry_setup(lambda: ClickHouseWriter(client, settings.clickhouse_database, spec.table, spec.columns))
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
    return Sink(source, make_decoder(spec, avro), writer, ledger, group, rows, seconds, commit_delay=commit_delay,
                stop=stop)


def _retry_setup(fn, attempts: int = 30):
    for i in range(attempts):
        try:
            return fn()
        except Exception as exc:
            from clickhouse_connect.driver.exceptions import ClickHouseError

            if not isinstance(exc, (ClickHouseError, OSError)) or i == attempts - 1:
                raise
            time.sleep(1)
