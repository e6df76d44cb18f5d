"""``ecoretrofit eval maintenance --through-kafka``: the predictive policy run by the
deployed code. The simulated city streams its telemetry to a topic, its technicians
(``maintenance.technicians.TopicTechnicians``) publish the work orders and act on the
ones the worker opens, and a real ``ecoretrofit maintain`` process in between reads
both topics, learns, and opens predictive work orders: the same run as the in-process
``simulate("predictive", ...)``, but every reading and order crosses the broker.

The simulator cannot simply run ahead: in process, a predictive order opens in the very
tick whose readings closed the window that asked for it, and the technicians come
``technician_delay`` later. So the run is paced on the worker's own /metrics
(``eco_maintenance_messages_total``, counted only after what a batch caused was
produced):

- before the readings of a tick that closes the health windows, every work order
  published so far has been read and applied by the worker (none held back);
- after them, the worker has read every reading, and the technicians have taken every
  predictive order it opened, at the fleet's time of that tick.

Between window closes nothing the worker decides can change, so ticks there stream
freely. The figures agree with the in-process run on the same seed and start
(``tests/test_maintain_stack.py`` compares them); only the order in which homes of
different partitions reach the worker differs, which moves the predictors' running
statistics in the last bits of a float.

Event time starts ``days`` (and one more) before now: the worker screens readings
with the plausibility contract, which refuses readings over 400 days old.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from maintenance.assets import DAY_MS

#: How long the worker may take to catch up with one step of the pacing.
STEP_TIMEOUT_S = 180.0


def recent_start(days: float, period_ms: int) -> int:
    """A start ``days`` + 1 before now, on a window boundary (the run ends a day ago)."""
    return (int(time.time() * 1000) - int((days + 1) * DAY_MS)) // DAY_MS * DAY_MS // period_ms * period_ms


class _Pace:
    """The worker's progress, read from its /metrics."""

    def __init__(self, port: int, worker, telemetry: str, workorders: str):
        self.port, self.worker, self.telemetry, self.workorders = port, worker, telemetry, workorders

    def read(self) -> dict:
        from ecoretrofit.processes import scrape

        return {
            "readings": self._messages(self.telemetry),
            "orders_in": self._messages(self.workorders),
            "held": scrape(self.port, "eco_maintenance_held_orders"),
            "orders_out": self._published("predictive_order"),
            "predictions": self._published("prediction"),
            "dead_letters": scrape(self.port, "eco_dead_letters_total"),
        }

    def _samples(self, name: str) -> list[tuple[dict, float]]:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return []
        return [(smp.labels, smp.value) for fam in text_string_to_metric_families(text)
                for smp in fam.samples if smp.name == name]

    def _messages(self, topic: str) -> int:
        return int(sum(v for labels, v in self._samples("eco_maintenance_messages_total") if labels["topic"] == topic))

    def _published(self, kind: str) -> int:
        return int(sum(v for labels, v in self._samples("eco_maintenance_published_total") if labels["kind"] == kind))

    def until(self, done, what: str, step=None) -> dict:
        """Poll until ``done(progress)``; ``step()`` between polls."""
        from ecoretrofit.processes import tail

        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            if step is not None:
                step()
            got = self.read()
            if done(got):
                return got
            if not self.worker.running():
                raise RuntimeError(f"the maintain worker exited: {tail(self.worker.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the maintain worker did not {what} within {STEP_TIMEOUT_S:.0f} s: {got}")
            time.sleep(0.02)


def simulate_through_kafka(settings, homes: int, days: float, seed: int, step_ms: int, maintenance,
                           workflow=None, start_ms: int | None = None, log=None) -> dict:
    """The predictive policy through the broker and a real worker; returns a run shaped
    like ``maintenance_eval.simulate``'s (plus ``kafka``: what crossed the broker).
    ``maintenance``: the city's MaintenanceConfig under that policy
    (``maintenance_eval.policy_config("predictive")``). ``log(line)`` gets progress
    lines. The broker and registry must be up."""
    from ecoretrofit import metrics, processes
    from ecoretrofit.admin import ensure_topics, unique_topic
    from maintenance.publish import publish_work_orders
    from maintenance.technicians import TopicTechnicians
    from maintenance.workflow import WorkflowConfig
    from producers.producer import TelemetryProducer
    from producers.simulator import CitySimulator

    wcfg = workflow or WorkflowConfig()
    period = wcfg.period_ms
    start_ms = recent_start(days, period) if start_ms is None else int(start_ms)
    log = log or (lambda line: None)
    s = settings.replace(
        topic_telemetry=unique_topic("evalmaint.telemetry"), topic_workorders=unique_topic("evalmaint.workorders"),
        topic_predictions=unique_topic("evalmaint.predictions"), topic_deadletter=unique_topic("evalmaint.deadletter"),
        metrics_port=processes.free_port() - metrics.PORT_OFFSETS["maintain"])
    ensure_topics(s, {s.topic_telemetry: s.telemetry_partitions, s.topic_workorders: s.workorders_partitions,
                      s.topic_predictions: s.predictions_partitions, s.topic_deadletter: 1})

    sim = CitySimulator(homes, s.regions, seed, start_ms, step_ms=step_ms, maintenance=maintenance)
    fleet = sim.fleet
    history = fleet.drain_orders()
    orders = list(history)
    requests: list[dict] = []

    def taken(o: dict) -> None:  # what the in-process run records when it asks for the order
        _install, fail, failed = fleet.current_unit(o["asset_id"])
        requests.append({"asset_id": o["asset_id"], "ts": int(o["opened_ms"]), "fail_ms": fail, "failed": failed,
                         "p_fail": None, "rul_hours": None})

    technicians = TopicTechnicians(s, fleet, on_taken=taken, on_published=orders.append)
    # the back-dated history goes onto the topic for the worker; its versions are not
    # new orders for the technicians to act on
    technicians.known.update(o["order_id"] for o in history)
    publish_work_orders(s, history)
    state_dir = tempfile.mkdtemp(prefix="eco-eval-maintain-")
    state = Path(state_dir) / "state.sqlite"
    worker = processes.start_cli(s, "eval-maintain", [
        "maintain", "--checkpoint", str(state), "--hold", "3600",
        "--horizon-days", repr(wcfg.horizon_days), "--threshold", repr(wcfg.threshold)],
        env={"ECO_CHECKPOINT_INTERVAL_S": "86400"})  # a checkpoint is no part of the figures
    pace = _Pace(metrics.port_for(s, "maintain"), worker, s.topic_telemetry, s.topic_workorders)
    producer = TelemetryProducer(s)
    end = start_ms + int(days * DAY_MS)
    produced = 0
    synced_orders = -1  # order messages the worker had applied at the last sync
    t0 = time.perf_counter()
    try:
        window = None
        tick = 0
        while sim.now_ms < end:
            ts = sim.now_ms
            closes = window is not None and ts - ts % period != window
            window = ts - ts % period
            cols = sim.tick_columns()  # the fleet is at ts now
            technicians.step()  # the fleet's new versions onto the topic
            if closes:
                sent = len(history) + technicians.published
                if sent + pace.read()["orders_out"] != synced_orders:
                    producer.flush(60)
                    got = pace.until(lambda g: g["orders_in"] >= len(history) + technicians.published
                                     + g["orders_out"] and g["held"] == 0, "apply the work orders")
                    synced_orders = got["orders_in"]
            produced += producer.send_columns(cols)
            if closes:
                if producer.flush(60):
                    raise RuntimeError("telemetry not delivered within 60 s")
                pace.until(lambda g: g["readings"] >= produced, "read the readings")
                pace.until(lambda g: len(requests) >= g["orders_out"], "have its orders taken",
                           step=technicians.step)
            tick += 1
            if tick % max(1, int(10 * DAY_MS // step_ms)) == 0:
                g = pace.read()
                log(f"  day {(ts - start_ms) / DAY_MS:5.0f} of {days:g}: {produced:,} readings, "
                    f"{g['predictions']:,} predictions, {g['orders_out']} predictive orders, "
                    f"{len(orders) - len(history)} work-order versions ({time.perf_counter() - t0:.0f} s)")
        producer.flush(60)
        final = pace.until(lambda g: g["readings"] >= produced, "read the readings")
        technicians.step()
        log(f"  done: {produced:,} readings produced, {final['readings']:,} readings read, "
            f"{final['orders_out']} predictive orders "
            f"({time.perf_counter() - t0:.0f} s)")
    finally:
        producer.close()
        technicians.close()
        worker.stop()
        shutil.rmtree(state_dir, ignore_errors=True)
    return {"policy": "predictive", "fleet": fleet, "orders": orders, "requests": requests, "start_ms": start_ms,
            "end_ms": sim.now_ms, "config": maintenance, "workflow": None,
            "kafka": {"readings": produced, "readings_read": final["readings"], "order_messages": final["orders_in"],
                      "predictions": final["predictions"], "predictive_orders": final["orders_out"],
                      "dead_letters": int(final["dead_letters"]), "seconds": time.perf_counter() - t0,
                      "topics": [s.topic_telemetry, s.topic_workorders, s.topic_predictions, s.topic_deadletter],
                      "log": str(worker.log_path)}}


def stack_pieces(settings):
    """Start the broker and the registry (and the object store under the broker) unless
    running; returns ``stop()`` for what this started."""
    from infra.localstack.stack import LocalStack

    local = LocalStack(settings, log=lambda line: print(line, file=sys.stderr))
    started = local.up(supervise=False, only=("s3-master", "s3", "broker", "registry"))
    return lambda: local.down(only=started) if started else None
