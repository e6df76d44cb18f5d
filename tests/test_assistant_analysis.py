"""The deterministic analysis: features from evidence, ranked findings, and the
evaluation against the simulator's ground truth."""

import numpy as np
import pytest

from assistant.analysis import (Evidence, HourlySeries, Register, analyse, baseline, indoor_follows_outdoor,
                                vibration_floor)
from evaluation.explain_eval import evaluate

TS = 1_704_067_200_000 + np.arange(96) * 3_600_000
HOD = np.arange(96) % 24
REG = Register(floor_area_m2=100.0, u_value_w_m2k=0.6, cop_rated=3.2, water_system=False)
RNG = np.random.default_rng(0)
OUT = 2.0 + 3.0 * np.sin(np.arange(96) / 9.0)


def series(indoor, power=1500.0, vibration=0.3, flow=None):
    return HourlySeries(TS, np.asarray(indoor, float) + 0.0 * HOD, OUT, np.full(96, power), np.broadcast_to(
        np.asarray(vibration, float), (96,)).copy(), flow)


def test_indoor_following_outdoor_is_measured():
    held = series(np.where((HOD < 6) | (HOD > 22), 19.0, 21.0))
    assert abs(indoor_follows_outdoor(held)) < 1e-9
    sagging = series(21.0 + 0.5 * (OUT - OUT.mean()))
    assert indoor_follows_outdoor(sagging) == pytest.approx(0.5, abs=0.05)


def test_vibration_floor_removes_the_water_loop_pump():
    flow = 2.0 + 10.0 * RNG.random(96)
    loop = 0.3 + 1.5 * (1 + 0.015 * flow)
    assert vibration_floor(series(21.0, vibration=loop, flow=flow)) == pytest.approx(0.3, abs=0.01)
    assert vibration_floor(series(21.0, vibration=loop + 2.0, flow=flow)) == pytest.approx(2.3, abs=0.01)


def test_baseline_percentile_among_peers():
    b = baseline(series(21.0, power=1000.0), REG, [0.1, 0.2, 100.0])
    assert b["kwh"] == pytest.approx(96.0)
    assert b["percentile"] == pytest.approx(66.7, abs=0.1)


def test_findings_are_ranked_and_carry_numbers_and_checks():
    indoor = np.full(96, 24.0)  # high and flat: two findings
    ev = Evidence("H000007", "north", REG, series(indoor, vibration=2.5), None, [0.5])
    a = analyse(ev)
    assert a.causes[:1] == ["high_setpoint"] and set(a.causes) == {"high_setpoint", "pump_never_stops", "no_setback"}
    excess = [f.excess_kwh_per_day for f in a.findings]
    assert excess == sorted(excess, reverse=True)
    for f in a.findings:
        assert f.numbers and f.check and all("H000007" in c for c in f.check)


def test_a_home_without_trouble_has_no_finding():
    ev = Evidence("H000001", "north", REG, series(np.where((HOD < 6) | (HOD > 22), 19.0, 21.0)), None, [0.5])
    assert analyse(ev).findings == []


def test_evaluation_names_the_true_causes_of_a_small_city():
    r = evaluate(homes=48, days=2, seed=5, fraction=0.75, regions=("north", "south"))
    assert r["homes_with_cause"] + r["homes_without_cause"] == 48
    assert r["top1"] >= 0.8 and r["top3"] >= r["top1"]
    assert r["false_cause_rate"] <= 0.35
    # the first finding of a caused home is the truth most of the time, cause by cause
    seen = [c for c, p in r["per_cause"].items() if p["homes"]]
    assert len(seen) >= 4
