"""Cost of the failure predictor, beside the processor's default detector measured in
the same run (events per second on one core).

- ``predictor``: ``RulPredictor.update`` per aggregated reading of one asset (indicators,
  prediction, p_fail and top signals), learning included: every 500 readings the unit
  fails and its buffer is learned; top signals only for assets at risk (p_fail >= 0.1),
  as the workflow runs it;
- ``workflow``: ``PredictiveWorkflow.observe`` per raw telemetry reading of a home with
  a water system (most readings only add to the home's 6-hour window; a closing window
  updates four predictors);
- baseline: the ``ewzscore`` detector's score + learn per value, as ``bench detectors``.

>>> r = measure_predictor_costs(n_readings=300)
>>> sorted(r), all(v > 0 for v in r.values())
(['baseline_ewzscore', 'predictor', 'workflow'], True)
"""

from __future__ import annotations

import random
import time


def measure_predictor_costs(n_readings: int = 20_000, seed: int = 0) -> dict[str, float]:
    from maintenance.predictor import RulPredictor
    from maintenance.workflow import PredictiveWorkflow, WorkflowConfig
    from processors.detectors.bench import measure_detector_costs

    rng = random.Random(seed)
    out = {}
    p = RulPredictor(["vibration_mm_s", "pump_pressure_bar"], horizon=168.0, cap=864.0, memory=600, explain_above=0.1)
    rows = [{"vibration_mm_s": 1.0 + 0.004 * (i % 500) + rng.gauss(0, 0.05),
             "pump_pressure_bar": 3.0 - 0.001 * (i % 500) + rng.gauss(0, 0.02)} for i in range(n_readings)]
    t0 = time.perf_counter()
    for i, r in enumerate(rows):
        p.update("A", r)
        if i % 500 == 499:
            p.failed("A")
    out["predictor"] = n_readings / max(time.perf_counter() - t0, 1e-9)

    types = ("heat_pump", "circulation_pump", "uv_lamp", "water_filter", "water_heater", "inverter")
    homes = [f"H{i:06d}" for i in range(20)]
    wf = PredictiveWorkflow([{"asset_id": f"{h}-{t}", "home_id": h, "asset_type": t} for h in homes for t in types],
                            WorkflowConfig())
    step = 10 * 60_000  # one reading per home every 10 minutes of event time
    readings = []
    for k in range(n_readings // len(homes) + 1):
        for h in homes:
            readings.append({"home_id": h, "ts": k * step, "indoor_temp_c": 21.0 + rng.gauss(0, 0.2),
                             "outdoor_temp_c": 5.0, "power_w": 900.0 + rng.gauss(0, 50), "voltage_v": 230.0,
                             "vibration_mm_s": 1.2, "water_flow_lpm": 4.0, "water_temp_c": 57.0,
                             "uv_intensity_mw_cm2": 35.0, "pump_pressure_bar": 3.0})
    readings = readings[:n_readings]
    t0 = time.perf_counter()
    for r in readings:
        wf.observe(r)
    out["workflow"] = len(readings) / max(time.perf_counter() - t0, 1e-9)
    out["baseline_ewzscore"] = measure_detector_costs(n_readings, ["ewzscore"])["ewzscore"]
    return out


def measure_checkpoint_sizes(homes: int = 30, days: float = 150.0, live_hours: float = 6.0, seed: int = 42,
                             checkpoint_s: float = 10.0) -> dict[str, float]:
    """What the maintenance worker's checkpoint costs, old layout beside new, on the
    worker's own logic (``MaintenanceWorker``, no Kafka) fed a simulated city: ``days``
    of backfill (one reading per home every 2 hours: every asset's buffer fills up),
    then ``live_hours`` at one reading per home per minute with a checkpoint every
    ``checkpoint_s`` seconds of event time (a live worker's default interval).

    - ``json_bytes_per_asset``: the whole state as one JSON document (the old layout,
      rewritten whole by every checkpoint), per tracked asset;
    - ``sqlite_bytes_per_asset``: the checkpoint file after a full save, per asset;
    - ``live_bytes_per_checkpoint_before`` / ``_after``: bytes written per checkpoint
      in the live stretch (the old layout: the whole document each time).
    """
    import json
    import os
    import tempfile
    from pathlib import Path

    from ecoretrofit.config import Settings
    from maintenance.assets import DAY_MS, HOUR_MS
    from maintenance.fleet import MaintenanceConfig
    from maintenance.worker import MaintenanceWorker
    from producers.simulator import CitySimulator

    step = 2 * HOUR_MS
    start = (int(time.time() * 1000) - int(days * DAY_MS) - DAY_MS) // DAY_MS * DAY_MS
    sim = CitySimulator(homes, ("north", "south"), seed, start, step_ms=step,
                        maintenance=MaintenanceConfig(preventive_days={}))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.sqlite"
        w = MaintenanceWorker(Settings(), path)
        for _ in range(int(days * DAY_MS // step)):
            for r in sim.tick():
                w.on_reading(r)
        assets = sum(1 for t, p in w.workflow.predictors.items() for _ in p.assets)

        def whole() -> int:
            return len(json.dumps({**w.state(), "workflow": w.workflow.state()}, separators=(",", ":")))

        out = {"assets": assets, "json_bytes_per_asset": whole() / assets}
        w.save()
        w.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out["sqlite_bytes_per_asset"] = os.path.getsize(path) / assets
        before, after, n = [], 0, 0
        ts = sim.now_ms
        end = ts + live_hours * HOUR_MS
        next_cp = ts + checkpoint_s * 1000
        t0 = time.perf_counter()
        while ts < end:
            for r in sim.tick(ts):
                w.on_reading(r)
            ts += 60_000
            while next_cp <= ts:
                if n % 60 == 0:  # the whole document barely changes between two checkpoints: sample it
                    before.append(whole())
                after += w.save()
                n += 1
                next_cp += checkpoint_s * 1000
        out.update(live_checkpoints=n, live_bytes_per_checkpoint_before=sum(before) / len(before),
                   live_bytes_per_checkpoint_after=after / n, seconds=time.perf_counter() - t0)
        w.store.close()
    return out
