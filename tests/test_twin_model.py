"""The what-if model against ground truth: the simulator re-run with the upgraded homes."""

import numpy as np
import pytest

from producers.simulator import CitySimulator
from twin.model import (
    Building,
    CalibrationError,
    Climate,
    Observations,
    Scenario,
    ScenarioError,
    calibrate,
    sim_climate,
    u_value_of,
    what_if,
)

START = 1_704_067_200_000 + 10 * 86_400_000  # 11 January 2024: heating season
HOMES, OBS_DAYS, HORIZON_DAYS, U_RATIO = 12, 7, 14, 0.5


def _building(sim, i, cop=3.2):
    cm, cs, cd = sim_climate(sim)
    return Building(u_value_w_m2k=u_value_of(sim.insulation[i]), size=float(sim.size[i]), cop_rated=cop,
                    pump_w=100.0 if sim.has_water[i] else 0.0,
                    climate=Climate(float(cm[i]), float(cs[i]), float(cd[i])))


@pytest.fixture(scope="module")
def city():
    """Two identical cities; after a week of telemetry the second one's homes get an
    envelope with half the U-value (same heat pump, same thermostat) and both run on."""
    def make():
        return CitySimulator(HOMES, ("north", "south", "east"), seed=5, start_ms=START, step_ms=60_000)

    base, upgraded = make(), make()
    cols = {k: [] for k in ("ts", "indoor_temp_c", "outdoor_temp_c", "power_w", "water_flow_lpm")}
    for _ in range(OBS_DAYS * 1440):
        c = base.tick_columns()
        upgraded.tick_columns()
        cols["ts"].append(c["ts"].copy())
        for k in list(cols)[1:]:
            cols[k].append(c[k].copy())
    obs = {k: np.array(v) for k, v in cols.items()}  # (ticks, homes)
    horizon_start = base.now_ms
    upgraded.ua = upgraded.ua * U_RATIO
    e0, e1 = base._energy.copy(), upgraded._energy.copy()
    outdoor = []
    for j in range(HORIZON_DAYS * 1440):
        c = base.tick_columns()
        upgraded.tick_columns()
        if j % 15 == 0:  # the model's 15-minute steps
            outdoor.append(c["outdoor_temp_c"].copy())
    return {
        "sim": base, "obs": obs, "start": horizon_start, "outdoor": np.array(outdoor),
        "true_base_kwh": base._energy - e0, "true_upgraded_kwh": upgraded._energy - e1,
    }


def _observations(city, i):
    o, sim = city["obs"], city["sim"]
    flow = o["water_flow_lpm"][:, i] if sim.has_water[i] else None
    return Observations(o["ts"][:, i], o["indoor_temp_c"][:, i], o["outdoor_temp_c"][:, i], o["power_w"][:, i], flow)


@pytest.fixture(scope="module")
def predictions(city):
    sim, out = city["sim"], []
    for i in range(HOMES):
        b = _building(sim, i)
        cal = calibrate(_observations(city, i), b)
        sc = Scenario(u_value_w_m2k=b.u_value_w_m2k * U_RATIO, horizon_days=HORIZON_DAYS)
        given = what_if(cal, sc, start_ms=city["start"], outdoor_c=city["outdoor"][:, i])
        climate = what_if(cal, sc, start_ms=city["start"])
        out.append((cal, given, climate))
    return out


def test_calibration_reproduces_the_observed_window(predictions):
    for cal, _, _ in predictions:
        assert abs(cal.energy_error_pct) < 2.0
        assert cal.cv_rmse_hourly_pct < 30.0  # ASHRAE Guideline 14: hourly CV(RMSE) < 30 %


def test_thermostat_recovered(city, predictions):
    sim = city["sim"]
    for i, (cal, _, _) in enumerate(predictions):
        assert cal.setpoint_c == pytest.approx(sim.setpoint[i], abs=0.15)
        assert cal.setback_c == pytest.approx(sim.setback[i], abs=0.25)
        if sim.setback[i] > 0:
            assert cal.tau_identified
            assert cal.tau_h == pytest.approx(sim.heat_cap[i] / sim.ua[i] / 3600, rel=0.25)


def test_insulation_upgrade_matches_the_rerun_simulator(city, predictions):
    """Stated error: with the horizon's outdoor temperature, the kWh saved by halving the
    U-value is within 10 % of the re-run simulator's for the city and within 35 % per
    home (median 10 %); the baseline energy within 5 %. With the region's climate
    instead of the weather, the city's savings within 20 %."""
    true_saved = city["true_base_kwh"] - city["true_upgraded_kwh"]
    saved = np.array([g.baseline.kwh - g.scenario.kwh for _, g, _ in predictions])
    saved_climate = np.array([c.baseline.kwh - c.scenario.kwh for _, _, c in predictions])
    baseline = np.array([g.baseline.kwh for _, g, _ in predictions])
    rel = saved / true_saved - 1
    assert abs(saved.sum() / true_saved.sum() - 1) < 0.10
    assert np.max(np.abs(rel)) < 0.35 and np.median(np.abs(rel)) < 0.10
    assert np.max(np.abs(baseline / city["true_base_kwh"] - 1)) < 0.05
    assert abs(saved_climate.sum() / true_saved.sum() - 1) < 0.20


def test_scenarios_move_the_right_way(city, predictions):
    cal = predictions[4][0]
    runs = {
        "cop": Scenario(cop=5.0, horizon_days=7),
        "setpoint": Scenario(setpoint_c=cal.setpoint_c - 2, horizon_days=7),
        "pv": Scenario(pv_kwp=6.0, horizon_days=7),
    }
    r = {k: what_if(cal, s, start_ms=city["start"]) for k, s in runs.items()}
    assert r["cop"].scenario.kwh < r["cop"].baseline.kwh
    assert r["setpoint"].scenario.kwh < r["setpoint"].baseline.kwh
    assert r["pv"].scenario.kwh < r["pv"].baseline.kwh and r["pv"].scenario.peak_kw <= r["pv"].baseline.peak_kw
    cold = what_if(cal, Scenario(setpoint_c=16.0, comfort_c=18.0, horizon_days=3), start_ms=city["start"])
    assert cold.scenario.hours_below_comfort > cold.baseline.hours_below_comfort
    # same scenario, same answer: baseline is the calibrated home unchanged
    assert r["cop"].baseline == r["pv"].baseline
    water = next(i for i in range(HOMES) if city["sim"].has_water[i])
    wcal = predictions[water][0]
    pump = what_if(wcal, Scenario(pump_w=25.0, horizon_days=2), start_ms=city["start"])
    assert pump.baseline.kwh - pump.scenario.kwh == pytest.approx((100 - 25) * 48 / 1000, rel=0.01)


def test_bad_scenarios_name_the_field(city, predictions):
    cal = predictions[0][0]
    for sc, field in [
        (Scenario(u_value_w_m2k=-1.0), "u_value_w_m2k"),
        (Scenario(cop=float("nan")), "cop"),
        (Scenario(horizon_days=0), "horizon_days"),
        (Scenario(setpoint_c=True), "setpoint_c"),
    ]:
        with pytest.raises(ScenarioError) as e:
            what_if(cal, sc)
        assert e.value.field == field
    dry = next(i for i in range(HOMES) if not city["sim"].has_water[i])
    with pytest.raises(ScenarioError) as e:
        what_if(predictions[dry][0], Scenario(pump_w=30.0))
    assert e.value.field == "pump_w"


def test_calibration_refuses_too_little_data(city):
    o = _observations(city, 0)
    short = Observations(o.ts_ms[:600], o.indoor_c[:600], o.outdoor_c[:600], o.power_w[:600])
    with pytest.raises(CalibrationError, match="at least"):
        calibrate(short, _building(city["sim"], 0))
