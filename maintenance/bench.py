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
