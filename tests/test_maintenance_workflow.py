"""Predictive maintenance closed loop, in process: the workflow reads the simulated
telemetry, learns from failures and opens predictive orders the technicians act on."""

from __future__ import annotations

import json

import pytest

from evaluation.maintenance_eval import START_MS, outcome, prediction_quality, simulate
from maintenance.assets import DAY_MS, HOUR_MS
from maintenance.predictor import VERSION
from maintenance.workflow import PredictiveWorkflow, WorkflowConfig

REGIONS = ("north", "south", "east")
HOMES, DAYS, SEED = 300, 120, 42


@pytest.fixture(scope="module")
def runs():
    return {p: simulate(p, HOMES, DAYS, SEED, REGIONS) for p in ("run-to-failure", "predictive")}


def test_degrading_pumps_get_a_predictive_order_before_they_fail(runs):
    run = runs["predictive"]
    fleet, cfg = run["fleet"], run["config"]
    ahead = [r for r in run["requests"] if fleet.asset(r["asset_id"]).asset_type == "circulation_pump"
             and not r["failed"] and r["fail_ms"] - r["ts"] > cfg.technician_delay_ms]
    assert ahead, "no pump got a predictive order early enough for the technician"
    for r in ahead:  # the technician came before the failure: that unit never failed
        assert not [f for f in fleet.failures if f.asset_id == r["asset_id"] and f.ts == r["fail_ms"]]


def test_predictive_policy_prevents_failures_on_the_same_seed(runs):
    base, pred = outcome(runs["run-to-failure"]), outcome(runs["predictive"])
    assert pred["failures"] < 0.7 * base["failures"]
    assert pred["downtime_hours"] < base["downtime_hours"]
    q = prediction_quality(runs["predictive"], 7.0)
    assert q["true"] > 0 and q["recall"] > 0.3 and q["median_lead_hours"] > 24


def test_one_order_per_asset_and_episode(runs):
    run = runs["predictive"]
    seen = {}
    for o in run["orders"]:
        if o["kind"] == "predictive" and o["opened_ms"] >= START_MS:
            seen.setdefault(o["asset_id"], set()).add(o["order_id"])
    opened_per_asset = {a: len(ids) for a, ids in seen.items()}
    wf = run["workflow"]
    # every request the workflow made is a distinct (asset, episode)
    assert len(wf.requested) == len(run["requests"])
    # an asset gets a second predictive order only in a later episode (after a replacement)
    for a, n in opened_per_asset.items():
        assert n <= wf.episode.get(a, 0) + 1


def _feed(wf, home, days, start, level, ts_step=HOUR_MS):
    out = []
    for k in range(int(days * 24)):
        out += wf.observe({"home_id": home, "ts": start + k * ts_step, "vibration_mm_s": level(k / 24.0),
                           "pump_pressure_bar": 3.0 - 0.1 * level(k / 24.0)})
    return out


def _trained_workflow():
    assets = [{"asset_id": f"H{i:06d}-CP", "home_id": f"H{i:06d}", "asset_type": "circulation_pump"}
              for i in range(8)]
    wf = PredictiveWorkflow(assets, WorkflowConfig(min_failures=3))
    t = START_MS
    for i in range(6):  # six pumps wear out over 30 days after 40 healthy ones, and fail
        home = f"H{i:06d}"
        _feed(wf, home, 70, t, lambda d: 1.0 + 3.0 * max(0.0, (d - 40) / 30.0))
        fail = t + 70 * DAY_MS
        wf.on_order({"asset_id": f"{home}-CP", "status": "open", "failure_ms": fail})
        wf.on_order({"asset_id": f"{home}-CP", "status": "closed", "failure_ms": fail, "replaced": True,
                     "closed_ms": fail + DAY_MS})
    return wf, t


def test_restart_from_checkpoint_opens_no_duplicate_and_repair_resets():
    wf, t = _trained_workflow()
    wear = lambda d: 1.0 + 3.0 * max(0.0, (d - 40) / 30.0)  # noqa: E731
    first = _feed(wf, "H000007", 68, t, wear)
    assert [r.asset_id for r in first] == ["H000007-CP"]
    req = first[0]
    assert (t + 70 * DAY_MS) - req.ts > 24 * HOUR_MS  # early enough for a technician
    assert req.source == f"model:rul@{VERSION}" and req.top_signals
    # a restarted worker resumes from the JSON checkpoint and sees the same readings again
    again = PredictiveWorkflow([{"asset_id": "H000007-CP", "home_id": "H000007",
                                 "asset_type": "circulation_pump"}], WorkflowConfig(min_failures=3))
    again.restore(json.loads(json.dumps(wf.state())))
    assert _feed(again, "H000007", 68, t, wear) == []
    # the technician replaces the pump: indicators start afresh, the risk is gone,
    # and a later wear-out is a new episode with its own order
    again.on_order({"asset_id": "H000007-CP", "status": "open", "failure_ms": None})
    t2 = t + 69 * DAY_MS
    again.on_order({"asset_id": "H000007-CP", "status": "closed", "failure_ms": None, "replaced": True,
                    "closed_ms": t2})
    assert _feed(again, "H000007", 30, t2, lambda d: 1.0) == []
    assert again.latest["H000007-CP"]["p_fail"] < 0.1
    later = _feed(again, "H000007", 68, t2 + 30 * DAY_MS, wear)
    assert [r.request_id for r in later] == ["PM-H000007-CP-1"] and req.request_id == "PM-H000007-CP-0"
