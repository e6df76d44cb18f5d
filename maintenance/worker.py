"""The predictive-maintenance stream processor (``ecoretrofit maintain``): a thin Kafka
adapter around ``maintenance.workflow.PredictiveWorkflow``, the same object
``eval maintenance`` runs in process.

- Reads the telemetry topic (health indicators per asset, homes registered from their
  readings) and the work-orders topic (open orders, and labels: a closed order on a
  failure teaches the type's predictor, a replacement starts a new episode).
- Publishes every prediction on the predictions topic, and each ``OrderRequest`` as a
  predictive work order (version 1, status open) on the work-orders topic. Its
  ``order_id`` is the request id ``PM-<asset_id>-<episode>``: a replayed window asks
  for the same order again, so at worst the same record is sent twice, never a second
  order.
- Event time joins the two topics: a work order waits until its home's telemetry has
  reached the order's time, or everything on the topics has been read (a poll
  brought nothing), or ``hold_s`` of wall time passed; so a failure's label finds the
  readings before it even when the order is read first.
- One checkpoint file (``maintenance.checkpoint``: SQLite, JSON rows, never a
  pickle), written atomically every ``checkpoint_interval_s`` and at stop: the
  workflow's state, the held orders, the asset facts orders need, and the next offset
  of every partition; of the per-asset predictor states (nearly all of the state), only
  those that changed since the last checkpoint. The producer is
  flushed first, so a checkpoint never claims an order that was not delivered. A
  restarted worker resumes exactly there; the partitions are assigned, not
  group-managed, so there is no rebalance to lose state in. The per-type models learn
  from the whole fleet's failures: one worker owns the fleet. A second one started by
  mistake computes the same order ids, so it duplicates records, not orders.

Every message goes to the workflow or to the dead-letter topic, never nowhere: a
reading must pass ``processors.intake.screen`` (size, Avro, the plausibility contract),
a work order must decode; a refused message, or one the worker fails on, is
dead-lettered with the shared ``processors.intake.dead_letter`` (reason, source
topic/partition/offset, bounded raw bytes) and header ``refused_by: maintain`` (the
anomaly processor refuses the same bad reading under its own name). Counts per topic
and outcome are on /metrics (``eco_maintenance_messages_total``): what was read is
what was used plus what was dead-lettered.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import schemas
from ecoretrofit import metrics
from ecoretrofit.serde import DecodeError, decoder_for, encoder_for
from maintenance.checkpoint import CheckpointStore
from maintenance.workflow import PredictiveWorkflow, WorkflowConfig, home_assets
from processors.intake import dead_letter, screen, screen_work_order

log = logging.getLogger(__name__)


def _order_time(o: dict) -> int:
    return max(int(o["opened_ms"]), int(o.get("closed_ms") or 0), int(o.get("failure_ms") or 0))


class MaintenanceWorker:
    def __init__(self, settings, checkpoint: Path, config: WorkflowConfig | None = None, hold_s: float = 60.0):
        self.settings = settings
        self.path = Path(checkpoint)
        self.hold_s = float(hold_s)
        self.workflow = PredictiveWorkflow([], config)
        self.offsets: dict[str, dict[int, int]] = {}
        self.held: list[tuple[float, dict]] = []  # (wall time received, order) awaiting telemetry
        self.last_ts: dict[str, int] = {}  # home -> its latest reading's event time
        self.facts: dict[str, tuple[str, str]] = {}  # asset -> (region, model) for the orders it opens
        self.counts = {"readings": 0, "orders_in": 0, "dead_letters": 0, "predictions": 0, "orders_out": 0}
        self.store = CheckpointStore(self.path)
        if not self.store.empty():
            self._load(*self.store.load())

    # ------------------------------------------------------------ checkpoint
    def _load(self, state: dict, assets: dict) -> None:
        self.workflow.restore(state["workflow"], assets)
        self.offsets = {t: {int(p): int(o) for p, o in parts.items()} for t, parts in state["offsets"].items()}
        self.held = [(time.time(), o) for o in state["held"]]
        self.last_ts = {h: int(v) for h, v in state["last_ts"].items()}
        self.facts = {a: (f[0], f[1]) for a, f in state["facts"].items()}

    def state(self) -> dict:
        """Everything but the per-asset predictor states (``workflow.asset_states``)."""
        return {"workflow": self.workflow.state(assets=False), "offsets": self.offsets,
                "held": [o for _, o in self.held], "last_ts": self.last_ts,
                "facts": {a: list(f) for a, f in self.facts.items()}}

    def checkpoint(self, producer) -> int:
        """Once every record produced so far is delivered, save; returns the bytes written."""
        left = producer.flush(30)
        if left:
            raise RuntimeError(f"{left} records not delivered: checkpoint skipped")
        return self.save()

    def save(self) -> int:
        """Write the state (of the assets, those that changed); returns the bytes written."""
        changed = self.workflow.take_changed()
        self.store.save(self.state(), self.workflow.asset_states(changed))
        return self.store.last_bytes

    # ------------------------------------------------------------ the work
    def on_reading(self, reading: dict) -> list[dict]:
        """One telemetry reading; returns the work orders to publish."""
        home = reading["home_id"]
        if home not in self.last_ts:
            has_water = any(reading.get(f) is not None for f in schemas.WATER_METRICS)
            self.workflow.add_assets(home_assets(home, has_water))
        for a, _t in self.workflow.home_assets.get(home, ()):
            if a not in self.facts:
                self.facts[a] = (reading["region"], "unknown")
        self.last_ts[home] = max(self.last_ts.get(home, 0), int(reading["ts"]))
        self.counts["readings"] += 1
        out = []
        for req in self.workflow.observe(reading):
            region, model = self.facts.get(req.asset_id, (reading["region"], "unknown"))
            out.append({"order_id": req.request_id, "asset_id": req.asset_id, "home_id": home, "region": region,
                        "asset_type": self.workflow.asset_type[req.asset_id], "model": model,
                        "kind": "predictive", "source": req.source, "opened_ms": req.ts, "status": "open",
                        "closed_ms": None, "failure_ms": None, "failure_code": None, "cause_code": None,
                        "resolution_code": None, "replaced": False, "version": 1})
        return out

    def on_order(self, order: dict, now: float) -> None:
        self.counts["orders_in"] += 1
        self.facts[order["asset_id"]] = (order["region"], order["model"])
        self.held.append((now, order))

    def release(self, now: float, telemetry_drained: bool = False) -> None:
        """Hand the workflow every held order its home's telemetry has caught up with
        (every held order if the telemetry is drained)."""
        keep = []
        for received, o in self.held:
            if telemetry_drained or _order_time(o) <= self.last_ts.get(o["home_id"], -1) \
                    or now - received >= self.hold_s:
                self.workflow.add_assets([o])
                self.workflow.on_order(o)
            else:
                keep.append((received, o))
        self.held = keep

    # ------------------------------------------------------------ Kafka
    def refuse(self, producer, m, exc: DecodeError) -> None:
        """Send message ``m`` to the dead letters with its reason."""
        t = m.topic()
        self.counts["dead_letters"] += 1
        log.warning("dead letter %s[%d]@%d: %s: %.300s", t, m.partition(), m.offset(), exc.reason, exc)
        metrics.DEAD_LETTERS.labels("maintain", t, exc.reason).inc()
        key, value, headers = dead_letter(m.key(), m.value(), exc, t, m.partition(), m.offset(), refused_by="maintain")
        producer.produce(self.settings.topic_deadletter, value, key=key, headers=headers)

    def run(self, stop, checkpoint_interval_s: float) -> None:
        """Consume until ``stop()`` is true; checkpoint at the end."""
        from confluent_kafka import Consumer, Producer, TopicPartition

        s = self.settings
        topics = {s.topic_telemetry: schemas.TELEMETRY_READING, s.topic_workorders: schemas.WORK_ORDER}
        decoders = {t: decoder_for(s, name) for t, name in topics.items()}
        pred_enc = encoder_for(s, s.topic_predictions, schemas.MAINTENANCE_PREDICTION)
        order_enc = encoder_for(s, s.topic_workorders, schemas.WORK_ORDER)
        consumer = Consumer({**s.kafka_client_config(), "group.id": "eco-maintain", "enable.auto.commit": False,
                             "auto.offset.reset": s.processor_offset_reset})
        producer = Producer(s.producer_config())
        meta = consumer.list_topics(timeout=30)
        assignment = []
        for t in topics:
            if t not in meta.topics or meta.topics[t].error is not None:
                raise RuntimeError(f"topic {t} does not exist")
            known = self.offsets.setdefault(t, {})
            for p in sorted(meta.topics[t].partitions):
                assignment.append(TopicPartition(t, p, known.get(p, -2)))  # -2: OFFSET_BEGINNING
        consumer.assign(assignment)
        log.warning("maintain: %d partitions assigned, resuming %s", len(assignment), self.offsets)
        last_cp = time.monotonic()
        try:
            while not stop():
                msgs = consumer.consume(2000, 0.2)
                now = time.time()
                orders_out: list[dict] = []
                now_ms = int(now * 1000)
                tally: dict[tuple[str, str], int] = {}
                for m in msgs:
                    if m.error():
                        continue
                    t = m.topic()
                    self.offsets[t][m.partition()] = m.offset() + 1
                    try:
                        if t == s.topic_telemetry:
                            rec = screen(m.value(), decoders[t].decode, now_ms=now_ms, regions=s.known_regions)
                        else:
                            rec = screen_work_order(m.value(), decoders[t].decode, now_ms=now_ms,
                                                    regions=s.known_regions)
                    except DecodeError as exc:
                        self.refuse(producer, m, exc)
                        tally[t, "dead_letter"] = tally.get((t, "dead_letter"), 0) + 1
                        continue
                    try:
                        if t == s.topic_telemetry:
                            orders_out += self.on_reading(rec)
                        else:
                            self.on_order(rec, now)
                    except Exception as exc:  # one bad record must not stop the fleet's predictions
                        log.exception("maintain: %s[%d]@%d failed", t, m.partition(), m.offset())
                        self.refuse(producer, m, DecodeError(f"processing failed: {exc!r}", "processing_error"))
                        tally[t, "dead_letter"] = tally.get((t, "dead_letter"), 0) + 1
                        continue
                    tally[t, "used"] = tally.get((t, "used"), 0) + 1
                self.release(now, telemetry_drained=not msgs)
                for o in orders_out:
                    producer.produce(s.topic_workorders, order_enc.encode(o), key=o["asset_id"].encode())
                    self.counts["orders_out"] += 1
                    metrics.MAINTENANCE_PUBLISHED.labels("predictive_order").inc()
                    log.warning("predictive order %s opened (%s)", o["order_id"], o["source"])
                for p in self.workflow.drain_predictions():
                    region = self.facts.get(p["asset_id"], ("", ""))[0]
                    top = list(p["top_signals"])
                    rec = {**p, "region": region, "prediction_id": f"{p['asset_id']}/{p['ts']}/{p['model']}",
                           "top_signals": [n for n, _ in top], "top_contributions_hours": [c for _, c in top]}
                    producer.produce(s.topic_predictions, pred_enc.encode(rec), key=p["asset_id"].encode())
                    self.counts["predictions"] += 1
                    metrics.MAINTENANCE_PUBLISHED.labels("prediction").inc()
                producer.poll(0)
                # Counted once everything the batch caused is handed to the producer, and
                # after the held orders: who sees N messages counted sees their orders
                # produced and what is still held (eval maintenance --through-kafka paces
                # the simulator on these figures).
                metrics.MAINTENANCE_HELD_ORDERS.set(len(self.held))
                for (t, outcome), n in tally.items():
                    metrics.MAINTENANCE_MESSAGES.labels(t, outcome).inc(n)
                if time.monotonic() - last_cp >= checkpoint_interval_s:
                    wrote = self.checkpoint(producer)
                    metrics.CHECKPOINTS.labels(component="maintain").inc()
                    last_cp = time.monotonic()
                    log.warning("maintain: checkpoint of %d bytes %s", wrote, self.counts)
            self.checkpoint(producer)
            log.warning("maintain: stopped after checkpoint %s", self.counts)
        finally:
            consumer.close()
            self.store.close()
