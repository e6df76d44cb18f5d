"""The simulator's technicians on the work-orders topic, live: a thin adapter over
``maintenance.fleet.Fleet`` (which decides everything: the delay before a visit, the
repair, the new life of the part).

``step()``: every order opened elsewhere (a predictor's ``PM-...``, a person's) that
arrived on the topic goes to the fleet under its own id; then every new version the
fleet recorded (its own corrective orders, and the closing of whatever it acted on) is
published. The fleet's own versions come back on the topic too: their ids are known
and skipped. Orders start at the topic's end when the simulator starts (the
simulator's city starts then too; ``ecoretrofit maintenance publish`` sends its
back-dated history).
"""

from __future__ import annotations

import logging
import time

import schemas
from ecoretrofit.serde import DecodeError, decoder_for, encoder_for
from processors.intake import screen_work_order

log = logging.getLogger(__name__)


class TopicTechnicians:
    def __init__(self, settings, fleet, act: bool = True, on_taken=None, on_published=None):
        """``act=False``: only publish the fleet's own orders and ignore the others (the
        city runs to failure: a baseline whose failures are the ground truth of what
        the predictions said). ``on_taken(order)``: called with each order from elsewhere
        just before the fleet gets it; ``on_published(record)``: with each version the
        fleet recorded, as it is sent (an evaluation keeps the ground truth this way)."""
        from confluent_kafka import Consumer, Producer, TopicPartition

        self.settings, self.fleet, self.act = settings, fleet, act
        self.on_taken, self.on_published = on_taken, on_published
        self.fleet.drain_orders()  # the back-dated history is not this run's to publish
        self.known: set[str] = {o.order_id for o in fleet.open_orders.values()}
        self.decoder = decoder_for(settings, schemas.WORK_ORDER)
        self.encoder = encoder_for(settings, settings.topic_workorders, schemas.WORK_ORDER)
        self.producer = Producer(settings.producer_config())
        self.consumer = Consumer({**settings.kafka_client_config(), "group.id": "eco-technicians",
                                  "enable.auto.commit": False})
        t = settings.topic_workorders
        parts = self.consumer.list_topics(t, timeout=30).topics[t].partitions
        self.consumer.assign([TopicPartition(t, p, -1) for p in sorted(parts)])  # -1: OFFSET_END
        self.taken = self.published = self.malformed = 0

    def step(self) -> int:
        """Take the orders that arrived, publish the fleet's new versions; returns how many were published."""
        for m in self.consumer.consume(1000, 0):
            if m.error():
                continue
            try:
                o = screen_work_order(m.value(), self.decoder.decode, now_ms=int(time.time() * 1000),
                                      regions=self.settings.known_regions)
            except DecodeError as exc:  # the warehouse keeps it in dead_letters
                self.malformed += 1
                log.warning("%s work order skipped: %s", exc.reason, exc)
                continue
            if not self.act or o["status"] != "open" or o["order_id"] in self.known \
                    or o["asset_id"] not in self.fleet.by_id:
                continue
            self.known.add(o["order_id"])
            if self.on_taken is not None:
                self.on_taken(o)
            got = self.fleet.open_order(o["asset_id"], int(o["opened_ms"]), o["kind"], o["source"],
                                        order_id=o["order_id"])
            self.taken += got == o["order_id"]
        sent = 0
        for rec in self.fleet.drain_orders():
            self.known.add(rec["order_id"])
            if self.on_published is not None:
                self.on_published(rec)
            self.producer.produce(self.settings.topic_workorders, self.encoder.encode(rec),
                                  key=rec["asset_id"].encode())
            sent += 1
        self.producer.poll(0)
        self.published += sent
        return sent

    def close(self) -> None:
        self.producer.flush(30)
        self.consumer.close()
