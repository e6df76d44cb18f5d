"""The demo's predictive-maintenance phase: a small city's components over simulated
months, in accelerated time, through the real pipeline.

The live anomaly demo runs at one reading per second, but components wear out over
weeks and the predictor learns from failures: so this phase streams a backfill (one
reading per home every ``step_hours`` of simulated time, as fast as Kafka takes it) to
a telemetry topic of its own (the warehouse's daily-partitioned telemetry table is not
meant for months of back-dated readings in one block), with an ``ecoretrofit
maintain`` worker reading it. The simulator publishes its corrective orders (the
worker's labels) on the work-orders topic, but its technicians do not act on the
predictive ones: the backfill runs ahead of the worker, so they would come late; and
left alone, every unit's true failure time is the ground truth for the orders the
worker opened (``tests/test_maintain_stack.py`` closes the loop). The worker's
predictions and predictive orders land in the warehouse like any others.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ecoretrofit import processes
from ecoretrofit.admin import ensure_topics, unique_topic
from maintenance.assets import DAY_MS, HOUR_MS


def run_phase(settings, homes: int = 300, days: float = 150.0, step_hours: float = 2.0,
              settle_s: float = 180.0) -> dict:
    """Stream ``days`` of ``homes`` with maintenance on; returns what the worker did.
    ``settle_s``: how long the worker may go without a new prediction before the phase
    stops waiting for it."""
    from maintenance.fleet import MaintenanceConfig
    from maintenance.technicians import TopicTechnicians
    from producers.producer import TelemetryProducer
    from producers.simulator import CitySimulator
    from sinks.warehouse import connect

    topic = unique_topic("demo.maintenance.telemetry")
    ensure_topics(settings, {topic: settings.telemetry_partitions})
    local = settings.replace(topic_telemetry=topic)
    step_ms = int(step_hours * HOUR_MS)
    start = (int(time.time() * 1000) - int(days * DAY_MS)) // step_ms * step_ms
    sim = CitySimulator(homes, settings.regions, settings.seed, start, step_ms=step_ms,
                        maintenance=MaintenanceConfig(preventive_days={}))
    technicians = TopicTechnicians(local, sim.fleet, act=False)
    state = Path(tempfile.mkdtemp(prefix="eco-demo-maintain-")) / "state.sqlite"
    # checkpoints less often than the default: in accelerated time every asset changes between two
    # checkpoints, so each one rewrites every asset row
    worker = processes.start_cli(local, "maintainer", ["maintain", "--checkpoint", str(state)],
                                 env={"ECO_CHECKPOINT_INTERVAL_S": "60"})
    producer = TelemetryProducer(local)
    client = connect(settings)
    db = settings.clickhouse_database
    phase_ms = int(time.time() * 1000) - 1000
    sent = 0
    try:
        ticks = int(days * DAY_MS // step_ms)
        for k in range(ticks):
            sent += producer.send_columns(sim.tick_columns())
            if k % 12 == 0:
                technicians.step()
                producer.poll(0)
            if k % 240 == 0:
                print(f"    simulated day {k * step_ms // DAY_MS:>4} of {days:.0f}: {sent:,} readings", flush=True)
        producer.flush(60)
        # the worker catches up (its last windows reach the warehouse); the technicians
        # keep acting on what it opens
        # A loaded machine makes the worker slower, not wrong: wait while it makes progress
        # (new predictions within settle_s), up to four times that in all.
        last_window = (sim.now_ms - step_ms) // (6 * HOUR_MS) * (6 * HOUR_MS)
        started = time.monotonic()
        stalled_since = started
        counts = []
        while worker.running() and time.monotonic() - stalled_since < settle_s \
                and time.monotonic() - started < 4 * settle_s:
            technicians.step()
            got = client.query(f"SELECT toUnixTimestamp64Milli(max(ts)), count() FROM {db}.maintenance_predictions "
                               f"WHERE ingested_at >= fromUnixTimestamp64Milli({phase_ms})").result_rows[0]
            if not counts or int(got[1]) > counts[-1]:
                stalled_since = time.monotonic()
            counts.append(int(got[1]))
            # every partition done: the last windows are there and nothing more arrives
            if int(got[0] or 0) >= last_window and len(counts) >= 3 and counts[-1] == counts[-3]:
                break
            if len(counts) % 15 == 0:
                print(f"    the worker catches up: {counts[-1]:,} predictions so far", flush=True)
            time.sleep(2)
        time.sleep(3)
        technicians.step()
    finally:
        producer.close()
        technicians.close()
        worker.stop()
    time.sleep(3)  # the last orders reach the warehouse
    orders = client.query(
        f"SELECT order_id, asset_type, toUnixTimestamp64Milli(opened_ms), status, failure_ms IS NULL "
        f"FROM {db}.work_orders FINAL WHERE kind = 'predictive' AND ingested_at >= fromUnixTimestamp64Milli({phase_ms}) "
        f"ORDER BY opened_ms").result_rows
    preds = client.query(
        f"SELECT order_id, p_fail, rul_hours, top_signals FROM {db}.maintenance_predictions "
        f"WHERE order_id IS NOT NULL AND ingested_at >= fromUnixTimestamp64Milli({phase_ms})").result_rows
    n_preds = int(client.command(f"SELECT count() FROM {db}.maintenance_predictions "
                                 f"WHERE ingested_at >= fromUnixTimestamp64Milli({phase_ms})"))
    failures = [f for f in sim.fleet.failures if f.ts >= start]
    lead = {}  # order -> days from opening to the unit's true failure (None: had not failed by the end)
    for order_id, _t, opened, *_ in orders:
        aid = order_id[3:order_id.rindex("-")]
        after = [f.ts for f in failures if f.asset_id == aid and f.ts >= opened]
        lead[order_id] = (min(after) - opened) / DAY_MS if after else None
    return {"readings": sent, "homes": homes, "days": days, "predictions": n_preds, "orders": orders,
            "why": {o: (p, r, t) for o, p, r, t in preds}, "failures": len(failures), "lead": lead,
            "taken": technicians.taken, "log": worker.log_path}


def print_phase(r: dict) -> None:
    orders = r["orders"]
    print(f"\npredictive maintenance (accelerated: {r['days']:.0f} simulated days of {r['homes']} homes "
          f"streamed in minutes; components wear out at their simulated pace)")
    print(f"readings streamed      {r['readings']:>10,}")
    print(f"predictions            {r['predictions']:>10,}")
    print(f"component failures     {r['failures']:>10,}   (corrective orders: the predictor's labels)")
    print(f"predictive orders      {len(orders):>10,}   (opened by the `maintain` worker; last column: "
          f"the unit's true failure)")
    for order_id, asset_type, _opened, status, _ in orders[:10]:
        p, rul, top = r["why"].get(order_id, (None, None, []))
        why = f"p_fail {p:.2f}, RUL {rul / 24:4.1f} d ({', '.join(top) or '-'})" if p is not None else ""
        lead = r["lead"].get(order_id)
        truth = f"failed {lead:4.1f} d later" if lead is not None else "no failure by the end"
        print(f"  {order_id:<20} {asset_type:<14} {why:<64} {truth}")
    soon = sum(1 for v in r["lead"].values() if v is not None and v <= 7.0)
    print(f"  {soon} of {len(orders)} orders came within 7 days (the horizon) before the unit failed; here the "
          f"technicians left every order alone so that failures show what the orders said (live, "
          f"`simulate --maintenance` technicians act on them after `--technician-delay` hours)")
