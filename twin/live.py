"""Keeps a ``TwinStore`` live from the topics: telemetry from the newest offsets (a
twin's state is its latest readings), anomalies, alerts, work orders and maintenance
predictions from the beginning of their retention (open alerts and orders must be known). One confluent-kafka consumer, partitions
assigned explicitly (no consumer group to join: every twin service sees everything).

Hostile input: an undecodable message, a reading or work order that fails the
plausibility contract (a reading stamped 2100 would otherwise stay a home's "latest"
for ever) or a record of an unknown home is counted (``stats``) and skipped; the feed
keeps going.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from schemas import topics as topic_decl
from ecoretrofit.serde import DecodeError, decoder_for
from processors.intake import screen, screen_work_order
from twin.state import TwinStore

log = logging.getLogger("eco.twin.live")

#: record kind -> (topic declaration, start at the beginning?)
FEEDS = {"telemetry": (topic_decl.TELEMETRY, False), "anomalies": (topic_decl.ANOMALIES, True),
         "alerts": (topic_decl.ALERTS, True), "work_orders": (topic_decl.WORK_ORDERS, True),
         "predictions": (topic_decl.PREDICTIONS, True)}


class LiveFeed:
    def __init__(self, settings, store: TwinStore):
        self.settings = settings
        self.store = store
        self.stats: Counter = Counter()
        self.stop_event = threading.Event()
        self.ready = threading.Event()  # partitions assigned
        self._thread: threading.Thread | None = None

    def start(self) -> "LiveFeed":
        self._thread = threading.Thread(target=self._run, name="twin-live", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._consume()
            except Exception as exc:  # broker or registry down: retry, never die
                self.stats["feed_errors"] += 1
                log.warning("live feed failed (%s); retrying in 2 s", exc)
                self.stop_event.wait(2.0)

    def _screen(self, kind: str, decoder, value: bytes | None) -> dict:
        """The decoded record; telemetry and work orders also pass the plausibility contract."""
        now_ms, regions = int(time.time() * 1000), self.settings.known_regions
        if kind == "telemetry":
            return screen(value, decoder.decode, now_ms=now_ms, regions=regions)
        if kind == "work_orders":
            return screen_work_order(value, decoder.decode, now_ms=now_ms, regions=regions)
        return decoder.decode(value)

    def _consume(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

        s = self.settings
        consumer = Consumer({**s.kafka_client_config(), "group.id": f"eco-twin-{id(self)}-{time.time_ns()}",
                             "enable.auto.commit": False, "enable.auto.offset.store": False})
        try:
            by_topic, assignment = {}, []
            for kind, (decl, from_start) in FEEDS.items():
                name = decl.name_in(s)
                meta = consumer.list_topics(name, timeout=10.0).topics.get(name)
                if meta is None or meta.error is not None or not meta.partitions:
                    raise RuntimeError(f"topic {name} not available")
                by_topic[name] = (kind, decoder_for(s, decl.value_schema))
                start = OFFSET_BEGINNING if from_start else OFFSET_END
                assignment += [TopicPartition(name, p, start) for p in meta.partitions]
            consumer.assign(assignment)
            self.ready.set()
            while not self.stop_event.is_set():
                for msg in consumer.consume(2000, 0.2):
                    if msg.error() is not None:
                        self.stats["kafka_errors"] += 1
                        continue
                    kind, decoder = by_topic[msg.topic()]
                    try:
                        record = self._screen(kind, decoder, msg.value())
                    except DecodeError as exc:
                        # the consumers that own these topics dead-letter them; the twin only counts
                        self.stats[f"{kind}_{'implausible' if exc.reason == 'implausible' else 'undecodable'}"] += 1
                        continue
                    if self.store.apply(kind, record):
                        self.stats[kind] += 1
                    else:
                        self.stats[f"{kind}_unknown_home"] += 1
        finally:
            consumer.close()
