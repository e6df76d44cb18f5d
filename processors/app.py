"""The Faust stream processor: scores every reading, emits anomaly events and alerts.

The worker reads the telemetry topic a fetch at a time (``processors.batch_consumer``:
Faust's consumer group, offsets and tables, without its per-event stream path),
decodes the Avro itself (the Confluent wire format is not Faust's), and keeps one ``HomeModel``
per home in memory. Models are checkpointed into a Faust Table (``home-models``,
co-partitioned with the telemetry topic, JSON of each detector's state plus the
home's open alerts; never pickles, which would run code on load) every
``checkpoint_interval_s`` rather than per event: a Table write is a changelog
message, and one per reading would cap the worker at ~2-3k readings/s. A restarted
or newly assigned worker gets the models back from the Table's changelog; an
unreadable checkpoint (garbage, a pickle) is logged and the home starts afresh.

Offsets follow checkpoints: a batch's messages are acknowledged to Faust (and so
become committable) only once the checkpoint covering them is written. A restart
therefore resumes every home exactly where its checkpoint left it: no reading is
skipped by the models, so no false "meter dropout" (some anomaly events may be sent
twice; their ``event_id`` is deterministic).

Every message passes ``processors.intake.screen`` (size, Avro, the plausibility
contract) first; refused ones go to the dead-letter topic with every reason in
headers and a bounded copy of the raw bytes, and are never scored.

Silent homes: a home silent for ``silence_intervals`` reading intervals is reported
(anomaly event, sticky alert) while it is silent, by the batch loop and by a timer,
against a per-partition clock (the newest event time seen on the partition, advanced
by wall time since), so a replay of old data judges silence in event time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter as Tally

from aiokafka.partitioner import murmur2

import faust
from faust.sensors import Monitor
from faust.types import TP

import schemas
from schemas import plausibility
from ecoretrofit import metrics
from ecoretrofit.config import FETCH_MAX_WAIT_MS, Settings
from ecoretrofit.serde import DecodeError, decoder_for, encoder_for
from processors.alerts import AlertBook
from processors.batch_consumer import install
from processors.detectors import make
from processors.intake import dead_letter, screen
from processors.pending import PendingSends
from processors.scoring import MAX_CHECKPOINT_BYTES, HomeModel, ScoringConfig
from processors.silence_clock import SilenceClock
from processors.snapshots import SnapshotPointer, SnapshotPolicy

log = logging.getLogger(__name__)

# How often the timer looks for silent homes (the batch loop also does, per batch).
SILENCE_CHECK_S = 1.0
# ... and the batch loop at most this often (it walks every home of the worker).
SILENCE_BATCH_CHECK_S = 0.2
# How long a revoked worker waits for its checkpoint to be sent, then for its commit
# (twice this stays under the 6 s rebalance timeout of faust_settings).
HAND_OVER_TIMEOUT_S = 2.0


class QuietMonitor(Monitor):
    """Faust's Monitor without its per-event bookkeeping. It keeps rolling stats for
    Faust's web UI (disabled here) at a cost on every message; our own Prometheus
    metrics count what matters, per batch."""

    def on_message_in(self, tp, offset, message) -> None:
        pass

    def on_stream_event_in(self, tp, offset, stream, event):
        return None

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        pass

    def on_message_out(self, tp, offset, message) -> None:
        pass

    def on_table_get(self, table, key) -> None:
        pass

    def on_table_set(self, table, key, value) -> None:
        pass


def faust_settings(settings: Settings) -> dict:
    """Broker settings measured to work with Tansu (shared/notes/local-stack.md):
    JoinGroup completes after half the session timeout, and a short max poll
    interval makes a worker silently drop out of its group."""
    return dict(
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=6.0,
        broker_request_timeout=30.0,
        broker_max_poll_interval=300.0,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset=settings.processor_offset_reset,
        producer_linger=0.01,
        producer_max_batch_size=262144,
        web_enabled=False,
        Monitor=QuietMonitor,
        datadir=str(settings.data_dir.resolve() / "faust"),
        topic_partitions=settings.telemetry_partitions,
        # bigger fetches and stream buffers: Faust's cost is per event, so keep the
        # consumer from starving the agent between polls
        broker_max_poll_records=5000,
        stream_buffer_maxsize=20000,
        stream_wait_empty=False,
        topic_allow_declare=True,
    )


def _short_fetch_wait() -> None:
    """Faust hard-codes aiokafka's fetch_max_wait_ms to 1500 ms; Tansu holds a fetch
    for much of that even when data is waiting, which alone put the median
    produce-to-anomaly latency near 0.8 s. Set it like every other consumer of ours,
    on the consumer Faust creates and before it starts."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "_eco_short_fetch", False):
        return

    def create_worker_consumer(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    create_worker_consumer._eco_short_fetch = True
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer


class Processor:
    """Holds the app, its topics and table, and the in-memory model cache."""

    def __init__(self, settings: Settings, batch_size: int = 5000):
        self.settings = settings
        self.config = ScoringConfig.from_settings(settings)
        # Import the detectors now (and refuse a bad ECO_DETECTOR at start), not inside
        # the first batch: loading them imports River and SciPy.
        make(self.config.detector, **self.config.detector_params)
        _short_fetch_wait()
        self.app = faust.App(settings.processor_app_id, **faust_settings(settings))
        self.telemetry = self.app.topic(
            settings.topic_telemetry, key_type=bytes, value_type=bytes,
            key_serializer="raw", value_serializer="raw",
        )
        self.anomalies = self.app.topic(
            settings.topic_anomalies, key_serializer="raw", value_serializer="raw",
            partitions=settings.anomalies_partitions,
        )
        self.alerts = self.app.topic(
            settings.topic_alerts, key_serializer="raw", value_serializer="raw",
            partitions=settings.alerts_partitions,
        )
        self.deadletters = self.app.topic(
            settings.topic_deadletter, key_serializer="raw", value_serializer="raw",
            partitions=1,
        )
        self.models = self.app.Table(
            "home-models", default=None, key_type=bytes, value_type=bytes,
            partitions=settings.telemetry_partitions,
            # batches have no single current event, so let the producer pick the
            # changelog partition from the key: the same murmur2 over the same bytes
            # (the raw home id, as the telemetry producers key readings; bytes keys
            # are not JSON-encoded as str keys would be), hence the
            # same partition as the home's readings. Faust's store keeps only the
            # keys of its assigned partitions, and snapshots are per partition: a
            # checkpoint anywhere else is dropped at the next partial assignment.
            use_partitioner=True,
        )
        # recovery starts at the last full snapshot, not at offset 0 (processors/snapshots.py)
        self.models.persisted_offset = self._snapshot_start
        # The delivery futures of everything sent (changelog writes, anomaly events,
        # alerts, dead letters) still in flight, so that a checkpoint can wait for the
        # broker's acknowledgement of each before it acknowledges the offsets it
        # covers (Faust's producer.flush() gives up on its buffer after 0.1 s).
        self.unacknowledged = PendingSends()
        send_changelog = self.models.send_changelog

        def send_and_track(*args, **kwargs):
            fut = send_changelog(*args, **kwargs)
            self.unacknowledged.add(fut)
            return fut

        self.models.send_changelog = send_and_track
        self.snapshot_policy = SnapshotPolicy()
        self._pointer: SnapshotPointer | None = None
        self.cache: dict[str, HomeModel] = {}
        self.dirty: set[str] = set()
        self.alert_book = AlertBook(hold_s=settings.alert_hold_s)
        self.last_checkpoint = time.monotonic()
        self.silence_checked = 0.0
        # messages scored since the last checkpoint: acknowledged once it is written
        self.held: list = []
        # per partition: the event time silence is judged by (processors/silence_clock.py)
        self.silence_clock = SilenceClock()
        self.read_upto: dict[int, int] = {}  # partition -> offset of the last telemetry message handled
        self.partition_of: dict[str, int] = {}
        self.assigned_at = time.monotonic()
        self.restored_all = False
        self.table_ready = False
        self.warned_unsaved = False
        # A checkpoint must never fall between a batch's model updates and its alert
        # bookkeeping (sends yield to the loop): one holder at a time.
        self.lock = asyncio.Lock()
        self.batch_size = batch_size
        self.decoder = None
        self.encoder = None
        self.alert_encoder = None
        self._wire()

    # ---------------------------------------------------------------- wiring
    def _wire(self) -> None:
        app = self.app

        @app.on_partitions_revoked.connect
        async def _forget(app, revoked, **kwargs) -> None:  # noqa: ANN001
            # Another worker may own these homes now; its checkpoints win. Hand them
            # over where they are first (checkpoint, offsets committed), so the next
            # owner starts after what was scored here: nothing is scored twice. The
            # lock: never between a batch's model updates and its bookkeeping.
            async with self.lock:
                await self.hand_over()
                log.warning("partitions revoked: forgetting %d homes, %d unacknowledged messages",
                            len(self.cache), len(self.held))
                self.forget()

        @app.on_partitions_assigned.connect
        async def _assigned(app, assigned, **kwargs) -> None:  # noqa: ANN001
            # (table_ready was reset by the revocation that precedes every assignment;
            # resetting it here could undo a recovery that already completed)
            self.assigned_at = time.monotonic()

        @app.on_rebalance_complete.connect
        async def _recovered(app, **kwargs) -> None:  # noqa: ANN001
            # sent once the table has read its changelog (or needed none)
            self.table_ready = True

        # The telemetry topic is read a fetch at a time (processors/batch_consumer.py),
        # not through an agent: Faust's per-event path cost more than the scoring.
        app.topics.add(self.telemetry)
        install(app, [self.telemetry.get_topic_name()], self.on_batch, max_batch=self.batch_size,
                on_fetch=lambda: self.silence_clock.fetched(time.time()))

        @app.timer(interval=5.0)
        async def resolve_alerts() -> None:
            async with self.lock:
                for alert in self.alert_book.expire(time.time()):
                    await self.send_alert(alert)
                    # its checkpoint must forget the alert too, or a next owner resolves it again
                    self.dirty.add(alert["home_id"])
                self.update_alert_gauge()

        @app.timer(interval=SILENCE_CHECK_S)
        async def check_silence() -> None:
            async with self.lock:
                self.restore_all()
                await self.report_silence()

        @app.timer(interval=max(0.5, self.settings.checkpoint_interval_s))
        async def snapshot_when_due() -> None:
            async with self.lock:
                await self.snapshot_due_partitions()

        @app.timer(interval=max(0.5, self.settings.checkpoint_interval_s / 2))
        async def checkpoint_when_idle() -> None:
            # Batches checkpoint as they go; this covers a worker that went quiet with
            # models it has not written yet (the next owner would otherwise miss them).
            async with self.lock:
                if (self.dirty or self.held) and \
                        time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_interval_s:
                    await self.checkpoint()

    async def hand_over(self) -> None:
        """Checkpoint every model scored so far and commit the offsets it covers. If
        that fails, the next owner re-reads from the last commit (scoring some readings
        twice; anomaly event ids are deterministic, so a consumer can drop repeats)."""
        if not (self.held or self.dirty):
            return
        try:
            # Every step bounded: the whole revocation must end within the group's
            # rebalance timeout, or this worker is dropped from the group.
            await asyncio.wait_for(self.checkpoint(), HAND_OVER_TIMEOUT_S)
            await asyncio.wait_for(self.app.consumer.commit(), HAND_OVER_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("hand-over at revocation took over %.0f s; the next owner re-reads from the last commit",
                        HAND_OVER_TIMEOUT_S)
        except Exception:
            log.exception("hand-over at revocation failed; the next owner re-reads from the last commit")

    def forget(self) -> None:
        self.restored_all = self.table_ready = False
        self.snapshot_policy.forget()
        self.cache.clear()
        self.dirty.clear()
        self.held.clear()
        self.silence_clock.forget()
        self.read_upto.clear()
        self.partition_of.clear()
        self.alert_book.forget()

    # --------------------------------------------------------------- the work
    def _codecs(self) -> None:
        if self.decoder is None:
            self.decoder = decoder_for(self.settings, schemas.TELEMETRY_READING)
            self.encoder = encoder_for(self.settings, self.settings.topic_anomalies, schemas.ANOMALY_EVENT)
            self.alert_encoder = encoder_for(self.settings, self.settings.topic_alerts, schemas.ALERT_EVENT)

    def model_for(self, home_id: str) -> HomeModel:
        model = self.cache.get(home_id)
        if model is None:
            model = self.cache[home_id] = self._restore(home_id, self._checkpoint_of(home_id))
        return model

    def _restore(self, home_id: str, data) -> HomeModel:
        model, extra, problem = HomeModel.restore(data, self.config)
        if problem:
            log.error("home %s starts afresh: %s", home_id, problem)
        try:
            alerts = extra.get("alerts", [])
            self.alert_book.load_home(home_id, alerts)
            if alerts:
                log.warning("home %s: %d open alert(s) restored from its checkpoint", home_id, len(alerts))
        except (TypeError, ValueError) as exc:
            log.error("home %s: open alerts in its checkpoint unusable: %s", home_id, exc)
        return model

    def restore_all(self) -> None:
        """Load every checkpointed home of our partitions once per assignment, so a
        home that never speaks again is still reported silent, and the alerts a
        crashed worker left open are resolved."""
        if self.restored_all or not self.table_ready:
            return
        assigned = {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.telemetry.get_topic_name()}
        for key in list(self.models.keys()):
            home_id = _home_of_key(key)
            if home_id is None or home_id in self.cache:
                continue
            if self.partition(home_id) in assigned:
                self.cache[home_id] = self._restore(home_id, self._checkpoint_of(home_id))
        self.restored_all = True

    def _checkpoint_of(self, home_id: str):
        """The home's checkpoint; before the changelog was keyed by the raw home id,
        it was keyed by the id as a JSON string (read still, never written)."""
        data = self.models.get(home_id.encode())
        return self.models.get(json.dumps(home_id).encode()) if data is None else data

    def partition(self, home_id: str) -> int:
        """The home's partition, in the telemetry topic and in the model changelog
        (both keyed by home with the murmur2 partitioner)."""
        p = self.partition_of.get(home_id)
        if p is None:
            p = self.partition_of[home_id] = (murmur2(home_id.encode()) & 0x7FFFFFFF) % self.settings.telemetry_partitions
        return p

    def pointer(self) -> SnapshotPointer:
        if self._pointer is None:
            topic = self.models.changelog_topic.get_topic_name()
            self._pointer = SnapshotPointer(self.settings, topic, f"{self.settings.processor_app_id}-snapshots")
        return self._pointer

    def _snapshot_start(self, tp) -> int | None:
        """Faust's "persisted offset" of a changelog partition (the last offset it
        need not re-read): just before the partition's last full snapshot."""
        try:
            start = self.pointer().start(tp.partition)
        except Exception:  # no pointer readable: replay everything, as without snapshots
            log.exception("snapshot start of %s unknown; recovering from the beginning", tp)
            return None
        return None if start is None else start - 1

    async def snapshot_due_partitions(self) -> None:
        """Rewrite every home of each partition whose changelog grew past the policy's
        bound, then move that partition's snapshot start to just before it."""
        if not self.restored_all:  # a snapshot must hold every home of the partition
            return
        live = Tally(self.partition(h) for h in self.cache)
        for p in self.snapshot_policy.due(live):
            start = self.pointer().end(p)
            self.dirty.update(h for h in self.cache if self.partition(h) == p)
            await self.checkpoint()  # flushes the rewritten homes to the changelog
            self.pointer().commit(p, start)
            self.snapshot_policy.done(p)
            log.info("snapshot of changelog partition %d: %d homes, recovery now starts at offset %d",
                     p, live[p], start)

    def clock_ms(self, partition: int | None, wall: float) -> int | None:
        """Event-time "now" on a partition for silence (processors/silence_clock.py); None
        before it can be judged there: nothing read on it yet, unless the grace after an
        assignment has passed with the table recovered and the partition caught up."""
        grace = max(10.0, 3 * self.config.silence_intervals * self.config.reading_interval_ms / 1000)
        idle_ok = self.table_ready and time.monotonic() - self.assigned_at > grace
        return self.silence_clock.now_ms(partition, wall, behind=self.behind(partition), idle_ok=idle_ok)

    def behind(self, partition: int | None) -> bool:
        """Whether telemetry below the partition's high watermark (as of the latest fetch)
        is still unread: then its readings of the last seconds may be in that backlog."""
        if partition is None:
            return False
        try:
            high = self.app.consumer.highwater(TP(self.telemetry.get_topic_name(), partition))
        except Exception:  # no consumer yet, or the partition is not assigned here
            return True
        if high is None:
            return True  # never fetched: unknown
        return self.read_upto.get(partition, -1) + 1 < high

    async def report_silence(self) -> None:
        wall = self.silence_checked = time.time()
        clocks: dict[int, int | None] = {}  # per partition, once per pass: each asks the consumer's high watermark
        for home_id, model in list(self.cache.items()):
            if model.silent or model.last_ts is None:
                continue
            partition = self.partition(home_id)
            if partition not in clocks:
                clocks[partition] = self.clock_ms(partition, wall)
            now_ms = clocks[partition]
            if now_ms is None:
                continue
            for event in model.check_silence(now_ms, detected_at_ms=int(wall * 1000)):
                await self.send_anomaly(event, wall, sticky=True)
                self.dirty.add(home_id)

    async def on_batch(self, messages: list) -> None:
        async with self.lock:
            # A batch fetched before a rebalance is not ours to score any more: the
            # partitions' owner (maybe us again) reads them from the committed offsets.
            generation = self.app.consumer_generation_id
            messages = [m for m in messages if m.generation_id == generation]
            if messages:
                await self.handle_batch(messages)

    async def handle_batch(self, messages: list) -> None:
        self._codecs()
        wall = time.time()
        now_ms = int(wall * 1000)
        processed = Tally()
        spoke = []
        last_ts = None
        # acknowledged after the checkpoint that covers them
        self.held += messages
        for msg in messages:
            self.read_upto[msg.partition] = msg.offset
            try:
                reading = screen(msg.value, self.decoder.decode, now_ms=now_ms, regions=self.settings.known_regions)
            except DecodeError as exc:
                await self.dead_letter(msg, exc)
                continue
            home_id = reading["home_id"]
            try:
                model = self.model_for(home_id)
                was_silent = model.silent
                found = model.update(reading, detected_at_ms=now_ms)
            except Exception as exc:  # one bad reading must not stop the city
                log.exception("scoring failed for %s", home_id)
                await self.dead_letter(msg, DecodeError(f"scoring failed: {exc!r}", "processing_error"))
                self.cache.pop(home_id, None)
                continue
            # sent as found, not after the batch: scoring the rest of a fetch would
            # add its time to every event's latency
            for anomaly in found:
                await self.send_anomaly(anomaly, wall)
            if was_silent:
                spoke.append(home_id)
            self.silence_clock.saw(msg.partition, reading["ts"], wall)
            self.dirty.add(home_id)
            processed[reading["region"]] += 1
            last_ts = reading["ts"]
        for home_id in spoke:  # a silent home spoke again: its silence alert resolves
            for alert in self.alert_book.resolve(home_id, "seq", wall):
                await self.send_alert(alert)
        if wall - self.silence_checked >= SILENCE_BATCH_CHECK_S:
            await self.report_silence()
        for region, n in processed.items():
            metrics.READINGS_PROCESSED.labels(region=region).inc(n)
        metrics.BATCH_SIZE.labels(component="processor").observe(len(messages))
        if last_ts is not None:
            metrics.EVENT_LATENCY.labels(component="processor").observe(max(0.0, now_ms - last_ts) / 1000)
            metrics.LAST_EVENT_TS.labels(component="processor").set(time.time())
        if time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_interval_s:
            await self.checkpoint()

    async def send_anomaly(self, anomaly: dict, wall: float, sticky: bool = False) -> None:
        self._codecs()  # the silence timer may report before the first batch
        self.unacknowledged.add(
            await self.anomalies.send(key=anomaly["home_id"].encode(), value=self.encoder.encode(anomaly)))
        metrics.ANOMALIES.labels(anomaly["region"], anomaly["metric"], anomaly["severity"], anomaly["detector"]).inc()
        alert = self.alert_book.on_anomaly(anomaly, wall, sticky=sticky)
        if alert is not None:
            await self.send_alert(alert)

    async def checkpoint(self) -> None:
        for home_id in self.dirty:
            model = self.cache.get(home_id)
            if model is None:
                continue
            try:
                blob = model.to_bytes(extra={"alerts": self.alert_book.home_state(home_id)})
            except NotImplementedError as exc:  # a detector without checkpoint state
                if not self.warned_unsaved:
                    log.warning("models are not checkpointed (%s): homes re-learn after a restart", exc)
                    self.warned_unsaved = True
                continue
            if len(blob) > MAX_CHECKPOINT_BYTES:
                log.error("home %s: checkpoint of %d bytes exceeds %d; not written", home_id, len(blob),
                          MAX_CHECKPOINT_BYTES)
                continue
            self.models[home_id.encode()] = blob
            self.snapshot_policy.written(self.partition(home_id))
        if self.dirty:
            metrics.CHECKPOINTS.labels(component="processor").inc()
        self.dirty.clear()
        held, self.held = self.held, []
        self.last_checkpoint = time.monotonic()
        # The checkpoint covers every message scored so far, but Faust commits offsets
        # without waiting for what was sent: acknowledge only once the broker has
        # acknowledged every table write and every event, or a SIGKILL in between loses
        # the models, the open alerts, or an alert's "resolved" that the committed
        # offsets and the checkpoint say were done. (A failed send raises here: nothing
        # is acknowledged, the next owner re-reads.)
        await self.unacknowledged.settle()
        ack = self.app.consumer.ack
        for msg in held:
            ack(msg)

    async def dead_letter(self, msg, exc: DecodeError) -> None:
        log.warning("dead letter %s[%s]@%s: %s: %.300s", msg.topic, msg.partition, msg.offset, exc.reason, exc)
        metrics.DEAD_LETTERS.labels("processor", msg.topic, exc.reason).inc()
        key, value, headers = dead_letter(
            msg.key if isinstance(msg.key, bytes) else None, msg.value, exc, msg.topic, msg.partition, msg.offset,
            refused_by="processor",
        )
        self.unacknowledged.add(await self.deadletters.send(key=key, value=value, headers=headers))

    async def send_alert(self, alert: dict) -> None:
        self._codecs()
        self.unacknowledged.add(
            await self.alerts.send(key=alert["home_id"].encode(), value=self.alert_encoder.encode(alert)))

    def update_alert_gauge(self) -> None:
        metrics.HOMES_IN_ALERT.clear()
        for (region, metric, sev), n in self.alert_book.counts().items():
            metrics.HOMES_IN_ALERT.labels(region, metric, sev).set(n)


def _home_of_key(key) -> str | None:
    """The home id of a changelog key (raw, or a legacy JSON string); None otherwise."""
    if not isinstance(key, bytes):
        return None
    try:
        key = key.decode()
    except UnicodeDecodeError:
        return None
    if key.startswith('"'):
        try:
            key = json.loads(key)
        except ValueError:
            return None
    return key if isinstance(key, str) and plausibility.valid_home_id(key) else None


def create_app(settings: Settings | None = None) -> faust.App:
    return Processor(settings or Settings.from_env()).app
