"""The Faust stream processor: scores every reading, emits anomaly events.

The agent reads the telemetry topic in batches, decodes the Avro itself (raw
serializers: the Confluent wire format is not Faust's), and keeps one ``HomeModel``
per home in memory. Models are checkpointed into a Faust Table (``home-models``,
co-partitioned with the telemetry topic, pickled bytes) every
``checkpoint_interval_s`` rather than per event: a Table write is a changelog
message, and one per reading would cap the worker at ~2-3k readings/s. A restarted
or newly assigned worker gets the models back from the Table's changelog.

Messages that cannot be decoded go to the dead-letter topic with the reason in
headers, and processing continues.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally

import faust
from faust.sensors import Monitor

import schemas
from ecoretrofit import metrics
from ecoretrofit.config import FETCH_MAX_WAIT_MS, Settings
from ecoretrofit.serde import DecodeError, decoder_for, encoder_for
from processors.alerts import AlertBook
from processors.scoring import HomeModel, ScoringConfig

log = logging.getLogger(__name__)

# How long a home stays in alert on a metric after its last anomaly there: the
# eco_homes_in_alert gauge, and when the alerts topic gets the "resolved" event.
ALERT_HOLD_S = 120.0


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

    def __init__(self, settings: Settings, batch_size: int = 2000, batch_within_s: float = 0.1):
        self.settings = settings
        self.config = ScoringConfig.from_settings(settings)
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
            "home-models", default=None, key_type=str, value_type=bytes,
            partitions=settings.telemetry_partitions,
            # take() batches have no single current event, so let the producer pick the
            # changelog partition from the key: the same murmur2 the telemetry
            # producers use, hence the same partition as the home's readings.
            use_partitioner=True,
        )
        self.cache: dict[str, HomeModel] = {}
        self.dirty: set[str] = set()
        self.alert_book = AlertBook(hold_s=ALERT_HOLD_S)
        self.last_checkpoint = time.monotonic()
        self.batch_size = batch_size
        self.batch_within_s = batch_within_s
        self.decoder = None
        self.encoder = None
        self.alert_encoder = None
        self._wire()

    # ---------------------------------------------------------------- wiring
    def _wire(self) -> None:
        app = self.app

        @app.on_partitions_revoked.connect
        async def _forget(app, revoked, **kwargs) -> None:  # noqa: ANN001
            # Another worker may own these homes now; its checkpoints win.
            self.cache.clear()
            self.dirty.clear()

        @app.agent(self.telemetry, name="score-readings")
        async def score(stream):
            async for events in stream.take_events(self.batch_size, within=self.batch_within_s):
                await self.handle_batch(events)

        @app.timer(interval=5.0)
        async def resolve_alerts() -> None:
            for alert in self.alert_book.expire(time.time()):
                await self.send_alert(alert)
            self.update_alert_gauge()

        @app.timer(interval=max(0.5, self.settings.checkpoint_interval_s / 2))
        async def checkpoint_when_idle() -> None:
            # Batches checkpoint as they go; this covers a worker that went quiet with
            # models it has not written yet (the next owner would otherwise miss them).
            if self.dirty and time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_interval_s:
                self.checkpoint()

    # --------------------------------------------------------------- the work
    def _codecs(self) -> None:
        if self.decoder is None:
            self.decoder = decoder_for(self.settings, schemas.TELEMETRY_READING)
            self.encoder = encoder_for(self.settings, self.settings.topic_anomalies, schemas.ANOMALY_EVENT)
            self.alert_encoder = encoder_for(self.settings, self.settings.topic_alerts, schemas.ALERT_EVENT)

    def model_for(self, home_id: str) -> HomeModel:
        model = self.cache.get(home_id)
        if model is None:
            model, problem = HomeModel.restore(self.models.get(home_id), self.config)
            if problem:
                log.warning("home %s starts afresh: %s", home_id, problem)
            self.cache[home_id] = model
        return model

    async def handle_batch(self, events) -> None:
        self._codecs()
        now_ms = int(time.time() * 1000)
        processed = Tally()
        found = []
        last_ts = None
        for event in events:
            try:
                reading = self.decoder.decode(event.value)
            except DecodeError as exc:
                await self.dead_letter(event, exc)
                continue
            home_id = reading["home_id"]
            try:
                found += self.model_for(home_id).update(reading, detected_at_ms=now_ms)
            except Exception as exc:  # one bad reading must not stop the city
                log.exception("scoring failed for %s", home_id)
                await self.dead_letter(event, DecodeError(f"scoring failed: {exc!r}", "processing_error"))
                self.cache.pop(home_id, None)
                continue
            self.dirty.add(home_id)
            processed[reading["region"]] += 1
            last_ts = reading["ts"]
        for anomaly in found:
            await self.anomalies.send(key=anomaly["home_id"].encode(), value=self.encoder.encode(anomaly))
            metrics.ANOMALIES.labels(anomaly["region"], anomaly["metric"], anomaly["severity"], anomaly["detector"]).inc()
            alert = self.alert_book.on_anomaly(anomaly, time.time())
            if alert is not None:
                await self.send_alert(alert)
        for region, n in processed.items():
            metrics.READINGS_PROCESSED.labels(region=region).inc(n)
        metrics.BATCH_SIZE.labels(component="processor").observe(len(events))
        if last_ts is not None:
            metrics.EVENT_LATENCY.labels(component="processor").observe(max(0.0, now_ms - last_ts) / 1000)
            metrics.LAST_EVENT_TS.labels(component="processor").set(time.time())
        if time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_interval_s:
            self.checkpoint()

    def checkpoint(self) -> None:
        for home_id in self.dirty:
            model = self.cache.get(home_id)
            if model is not None:
                self.models[home_id] = model.to_bytes()
        if self.dirty:
            metrics.CHECKPOINTS.labels(component="processor").inc()
        self.dirty.clear()
        self.last_checkpoint = time.monotonic()

    async def dead_letter(self, event, exc: DecodeError) -> None:
        msg = event.message
        log.warning("dead letter %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, exc)
        metrics.DEAD_LETTERS.labels("processor", msg.topic, exc.reason).inc()
        await self.deadletters.send(
            key=event.key if isinstance(event.key, bytes) else None,
            value=event.value,
            headers={
                "source_topic": msg.topic.encode(),
                "source_partition": str(msg.partition).encode(),
                "source_offset": str(msg.offset).encode(),
                "reason": exc.reason.encode(),
                "error": str(exc).encode(),
            },
        )

    async def send_alert(self, alert: dict) -> None:
        await self.alerts.send(key=alert["home_id"].encode(), value=self.alert_encoder.encode(alert))

    def update_alert_gauge(self) -> None:
        metrics.HOMES_IN_ALERT.clear()
        for (region, metric, sev), n in self.alert_book.counts().items():
            metrics.HOMES_IN_ALERT.labels(region, metric, sev).set(n)


def create_app(settings: Settings | None = None) -> faust.App:
    return Processor(settings or Settings.from_env()).app
