"""Causes of inefficiency in the simulator: optional, deterministic, and confined to the
homes that have one."""

import numpy as np
import pytest

from producers.causes import CAUSES, CausePlan, HomeCause
from producers.simulator import CitySimulator

START = 1_704_067_200_000  # 1 January 2024, heating season
REGIONS = ("north", "south")


def run(causes, homes=12, ticks=360):
    sim = CitySimulator(homes, REGIONS, seed=9, start_ms=START, step_ms=60_000, causes=causes)
    cols = [sim.tick_columns() for _ in range(ticks)]
    return sim, {k: np.stack([c[k] for c in cols]) for k in ("indoor_temp_c", "power_w", "vibration_mm_s",
                                                              "energy_kwh", "voltage_v", "water_flow_lpm")}


def test_homes_without_a_cause_read_exactly_as_without_a_plan():
    plan = CausePlan([HomeCause(f"H{i:06d}", c, 0.5) for i, c in enumerate(CAUSES)])
    _, plain = run(None)
    _, caused = run(plan)
    untouched = slice(len(CAUSES), None)
    for name in plain:
        np.testing.assert_array_equal(plain[name][:, untouched], caused[name][:, untouched], err_msg=name)
    # and every cause changes its own home
    for i, cause in enumerate(CAUSES):
        changed = not np.allclose(plain["power_w"][:, i], caused["power_w"][:, i]) or \
            not np.allclose(plain["indoor_temp_c"][:, i], caused["indoor_temp_c"][:, i])
        assert changed, cause


def test_each_cause_has_its_physical_signature():
    plan = CausePlan([HomeCause(f"H{i:06d}", c, 0.5) for i, c in enumerate(CAUSES)])
    _, plain = run(None, ticks=1440)
    _, caused = run(plan, ticks=1440)
    p0, p1 = plain["power_w"].mean(0), caused["power_w"].mean(0)
    t0, t1 = plain["indoor_temp_c"].mean(0), caused["indoor_temp_c"].mean(0)
    for i, cause in enumerate(CAUSES):
        assert p1[i] > p0[i] * 1.05 or cause == "no_setback", (cause, p0[i], p1[i])
    assert t1[CAUSES.index("high_setpoint")] > t0[CAUSES.index("high_setpoint")] + 2.5
    k = CAUSES.index("pump_never_stops")
    assert caused["vibration_mm_s"][:, k].mean() > plain["vibration_mm_s"][:, k].mean() + 1.4


def test_random_plans_depend_on_seed_and_home_only():
    ids = [f"H{i:06d}" for i in range(400)]
    a = CausePlan.random(ids, seed=3, fraction=0.7)
    assert a == CausePlan.random(ids, seed=3, fraction=0.7)
    assert a != CausePlan.random(ids, seed=4, fraction=0.7)
    small = CausePlan.random(ids[:100], seed=3, fraction=0.7)
    assert small.ground_truth() == [c for c in a if c.home_id in set(ids[:100])]
    assert {c.cause for c in a} == set(CAUSES)
    assert 0.6 < len(a) / len(ids) < 0.8


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="unknown home"):
        CitySimulator(3, REGIONS, seed=1, start_ms=START, causes=CausePlan([HomeCause("H000009", "low_cop")]))
    with pytest.raises(ValueError, match="two causes"):
        CausePlan([HomeCause("H000001", "low_cop"), HomeCause("H000001", "base_load")])
    with pytest.raises(ValueError, match="severity"):
        HomeCause("H000001", "low_cop", 1.5)
