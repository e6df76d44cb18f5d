"""Why is a home inefficient? A deterministic analysis of its evidence. Pure: no I/O.

The evidence (``Evidence``) is what the assistant's tools return for one home: the
register (floor area, U-value, rated COP, water system), its hourly series (indoor and
outdoor temperature, power, vibration, water flow), the twin's calibration of its
thermal model (``twin.model.calibrate``: envelope loss UA, setpoint, night set-back,
base load), and the energy intensity of its regional peers. ``analyse`` turns it into
ranked ``Finding``\\ s, each with the numbers it rests on and how to check them.

What each cause looks like in the evidence (the thresholds sit between the simulated
city's natural range and the causes' range; ``ecoretrofit eval explain`` measures them):

- **poor insulation**: calibrated UA well above the register's (``UA_reg = 250 W/K x
  U x floor/100 m2``), comfort kept;
- **degraded heat pump (low COP)**: the indoor temperature follows the outdoor one
  (hour-of-day means removed): the heat pump cannot keep up on cold hours;
- **thermostat set too high**: daytime setpoint above 22.4 C;
- **no night set-back**: night and day indoor temperature within 0.3 C;
- **always-on base load**: calibrated base load far above its floor-area norm;
- **a pump that never stops**: a vibration floor beyond the structure and the water
  loop's pump (which rises with flow), day and night.

>>> import numpy as np
>>> ts = 1_704_067_200_000 + np.arange(72) * 3_600_000
>>> hod = np.arange(72) % 24
>>> series = HourlySeries(ts, indoor=np.where((hod < 6) | (hod > 22), 24.0, 24.5), outdoor=np.full(72, 2.0),
...                       power=np.full(72, 1500.0), vibration=np.full(72, 0.3))
>>> reg = Register(floor_area_m2=100.0, u_value_w_m2k=0.6, cop_rated=3.2, water_system=False)
>>> ev = Evidence("H000001", "north", reg, series, calibration=None, peer_intensity=[0.5, 0.6, 0.7])
>>> [f.cause for f in analyse(ev).findings]
['high_setpoint']
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
from scipy.stats import theilslopes

from producers.simulator import INTERNAL_GAIN_FRACTION, PUMP_VIB_PER_LPM

HOUR_MS = 3_600_000
#: Heating degree-days base temperature, C.
HDD_BASE_C = 15.5
#: Register UA per (U-value x relative floor area): ~250 m2 of envelope per 100 m2 floor.
UA_PER_U_AND_SIZE = 250.0
#: Thresholds (see the module docstring).
UA_RATIO_POOR = 1.45
SAG_LOW_COP = 0.03
SETPOINT_HIGH_C = 22.4
SETBACK_NONE_C = 0.3
BASE_NORM_W_PER_SIZE = 170.0
BASE_EXCESS_W = 200.0
VIB_FLOOR_PUMP = 1.0
#: Assumed typical values for savings estimates.
COMFORT_SETPOINT_C = 21.0
TYPICAL_SETBACK_C = 2.0
SETBACK_HOURS = 8.0
PUMP_TYPICAL_W = 120.0
PUMP_MAX_W = 150.0


@dataclass(frozen=True)
class Register:
    floor_area_m2: float
    u_value_w_m2k: float
    cop_rated: float
    water_system: bool

    @property
    def ua_w_k(self) -> float:
        return UA_PER_U_AND_SIZE * self.u_value_w_m2k * self.floor_area_m2 / 100.0


@dataclass(frozen=True)
class HourlySeries:
    """Hourly means; ``flow`` is None without a water system. Hours are UTC (= local)."""

    ts_ms: np.ndarray
    indoor: np.ndarray
    outdoor: np.ndarray
    power: np.ndarray
    vibration: np.ndarray
    flow: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.ts_ms)
        for name in ("indoor", "outdoor", "power", "vibration") + (("flow",) if self.flow is not None else ()):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: {len(getattr(self, name))} values for {n} hours")

    @property
    def hour_of_day(self) -> np.ndarray:
        return (np.asarray(self.ts_ms, dtype=np.int64) // HOUR_MS) % 24


@dataclass(frozen=True)
class Evidence:
    home_id: str
    region: str
    register: Register
    hourly: HourlySeries
    calibration: dict | None  # twin.model.Calibration.as_dict(), None when it could not calibrate
    peer_intensity: Sequence[float]  # kWh per degree-day per 100 m2 of the region's homes


@dataclass
class Finding:
    cause: str
    title: str
    excess_kwh_per_day: float
    numbers: dict
    check: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Analysis:
    home_id: str
    baseline: dict
    features: dict
    findings: list[Finding]

    @property
    def causes(self) -> list[str]:
        return [f.cause for f in self.findings]

    def as_dict(self) -> dict:
        return {"home_id": self.home_id, "baseline": self.baseline, "features": self.features,
                "findings": [f.as_dict() for f in self.findings]}


# ------------------------------------------------------------------ evidence -> numbers
def baseline(series: HourlySeries, reg: Register, peer_intensity: Sequence[float]) -> dict:
    """Energy and heating degree-days over the window, kWh per degree-day, per 100 m2,
    and the home's percentile among its regional peers (100: uses the most)."""
    kwh = float(np.nansum(series.power)) / 1000.0
    hdd = float(np.nansum(np.maximum(0.0, HDD_BASE_C - series.outdoor))) / 24.0
    per_hdd = kwh / hdd if hdd > 0 else float("nan")
    intensity = per_hdd / (reg.floor_area_m2 / 100.0) if reg.floor_area_m2 > 0 else float("nan")
    peers = np.asarray([p for p in peer_intensity if math.isfinite(p)], dtype=float)
    pct = float(100.0 * np.mean(peers < intensity)) if len(peers) and math.isfinite(intensity) else float("nan")
    return {"days": round(len(series.ts_ms) / 24.0, 2), "kwh": round(kwh, 2), "hdd": round(hdd, 2),
            "kwh_per_hdd": round(per_hdd, 3), "kwh_per_hdd_per_100m2": round(intensity, 3),
            "peer_median": round(float(np.median(peers)), 3) if len(peers) else None,
            "peers": int(len(peers)), "percentile": round(pct, 1)}


def _demean_by_hour(a: np.ndarray, hod: np.ndarray) -> np.ndarray:
    means = np.zeros(24)
    for h in range(24):
        sel = hod == h
        if sel.any():
            means[h] = a[sel].mean()
    return a - means[hod]


def indoor_follows_outdoor(series: HourlySeries) -> float:
    """Slope of indoor on outdoor temperature once each hour of day's mean is removed:
    ~0 when the heating holds the thermostat's schedule, up to 1 when it cannot."""
    hod = series.hour_of_day
    ri, ro = _demean_by_hour(series.indoor, hod), _demean_by_hour(series.outdoor, hod)
    if float(ro @ ro) < 1e-9:
        return 0.0
    # Theil-Sen: a few hours off the schedule (a start-up transient, a door left open)
    # do not make a slope; a heat pump short on every cold hour does
    return float(theilslopes(ri, ro)[0])


def vibration_floor(series: HourlySeries) -> float:
    """Vibration not explained by the water loop's pump: the mean without a water system;
    with one, the intercept of vibration on flow minus the loop pump's part (its
    vibration rises by ``PUMP_VIB_PER_LPM`` per l/min)."""
    v = np.asarray(series.vibration, dtype=float)
    if series.flow is None:
        return float(v.mean())
    f = np.asarray(series.flow, dtype=float)
    if float(f.std()) < 1e-6:
        return float(v.mean())
    slope, intercept = np.polyfit(f, v, 1)
    return float(intercept - max(slope, 0.0) / PUMP_VIB_PER_LPM)


def thermostat(series: HourlySeries) -> tuple[float, float]:
    """(daytime setpoint, night set-back) from the indoor temperature alone: medians of
    10:00-20:00 and 01:00-05:00."""
    hod = series.hour_of_day
    day = float(np.median(series.indoor[(hod >= 10) & (hod < 20)]))
    night = float(np.median(series.indoor[(hod >= 1) & (hod < 5)]))
    return day, day - night


def features(ev: Evidence) -> dict:
    s, reg, cal = ev.hourly, ev.register, ev.calibration
    day_c, setback_c = thermostat(s)
    if cal is not None:  # the twin's fit is sharper than medians; fall back on them
        day_c, setback_c = float(cal["setpoint_c"]), float(cal["setback_c"])
    size = reg.floor_area_m2 / 100.0
    dt = float(np.mean(np.maximum(0.0, s.indoor - s.outdoor)))
    return {
        "setpoint_c": round(day_c, 2),
        "setback_c": round(setback_c, 2),
        "indoor_follows_outdoor": round(indoor_follows_outdoor(s), 3),
        "vibration_floor_mm_s": round(vibration_floor(s), 3),
        "ua_register_w_k": round(reg.ua_w_k, 1),
        "ua_calibrated_w_k": round(float(cal["ua_w_k"]), 1) if cal else None,
        "ua_ratio": round(float(cal["ua_w_k"]) / reg.ua_w_k, 3) if cal and reg.ua_w_k > 0 else None,
        "base_load_w": round(float(cal["base_load_w"]), 1) if cal else None,
        "base_norm_w": round(BASE_NORM_W_PER_SIZE * size, 1),
        "mean_indoor_outdoor_diff_c": round(dt, 2),
        "mean_power_w": round(float(np.mean(s.power)), 1),
        "cop_rated": reg.cop_rated,
    }


# ------------------------------------------------------------------ numbers -> findings
def analyse(ev: Evidence) -> Analysis:
    """Ranked findings (largest estimated excess first)."""
    base = baseline(ev.hourly, ev.register, ev.peer_intensity)
    ft = features(ev)
    h = ev.home_id
    ua = ft["ua_calibrated_w_k"] or ev.register.ua_w_k
    cop = ev.register.cop_rated
    heat_kwh_day = ua * ft["mean_indoor_outdoor_diff_c"] * 24.0 / 1000.0 / cop
    hourly_sql = (f"SELECT toStartOfHour(ts) AS hour, avg(indoor_temp_c), avg(outdoor_temp_c), avg(power_w), "
                  f"avg(vibration_mm_s), avg(water_flow_lpm) FROM telemetry WHERE home_id = '{h}' "
                  f"GROUP BY hour ORDER BY hour")
    profile = f"tool home_profile(home_id='{h}')"
    # the twin's what-if answer carries its calibration of the home
    calibrated = f"tool what_if(home_id='{h}', scenario={{}}) -> calibration"
    found: list[Finding] = []

    sag = ft["indoor_follows_outdoor"]
    ratio = ft["ua_ratio"]
    excess_vs_peers = 0.0
    if base["peer_median"] and math.isfinite(base["kwh_per_hdd_per_100m2"]):
        excess_vs_peers = max(0.0, (base["kwh_per_hdd_per_100m2"] - base["peer_median"]) * base["hdd"]
                              * ev.register.floor_area_m2 / 100.0 / max(base["days"], 1e-9))
    if sag >= SAG_LOW_COP:
        found.append(Finding(
            "low_cop", "the heat pump cannot keep up: indoor temperature falls with the outdoor one",
            max(excess_vs_peers, 0.1),
            {"indoor_follows_outdoor": sag, "threshold": SAG_LOW_COP, "cop_rated": cop,
             "kwh_per_hdd_per_100m2": base["kwh_per_hdd_per_100m2"], "peer_median": base["peer_median"],
             "percentile": base["percentile"]},
            [hourly_sql, f"tool energy_baseline(home_id='{h}')"]))
    if ratio is not None and ratio >= UA_RATIO_POOR and sag < SAG_LOW_COP:
        found.append(Finding(
            "poor_insulation", "heat loss far above the register's envelope",
            heat_kwh_day * (1.0 - 1.0 / ratio),
            {"ua_calibrated_w_k": ft["ua_calibrated_w_k"], "ua_register_w_k": ft["ua_register_w_k"],
             "ua_ratio": ratio, "threshold": UA_RATIO_POOR, "u_value_w_m2k": ev.register.u_value_w_m2k},
            [calibrated + ".ua_w_k", f"tool retrofit_savings(home_id='{h}') -> candidates.insulation_upgrade"]))
        # the power alone cannot tell a leaky envelope from a heat pump below its rating
        found.append(Finding(
            "low_cop", "or a heat pump below its rated COP (power alone shows only UA/COP)",
            0.5 * heat_kwh_day * (1.0 - 1.0 / ratio),
            {"ua_ratio": ratio, "cop_rated": cop, "indoor_follows_outdoor": sag}, [profile]))
    if ft["setpoint_c"] >= SETPOINT_HIGH_C:
        found.append(Finding(
            "high_setpoint", "thermostat set high",
            ua * (ft["setpoint_c"] - COMFORT_SETPOINT_C) * 24.0 / 1000.0 / cop,
            {"setpoint_c": ft["setpoint_c"], "threshold": SETPOINT_HIGH_C, "comfort_c": COMFORT_SETPOINT_C},
            [calibrated + ".setpoint_c", hourly_sql]))
    vib = ft["vibration_floor_mm_s"]
    pump_w = 0.0
    if vib >= VIB_FLOOR_PUMP:
        # the calibration takes all non-HVAC power for internal gains: a pump's watts
        # show in its base load scaled by 1 / (1 - 0.7 / COP)
        pump_w = PUMP_MAX_W / (1.0 - INTERNAL_GAIN_FRACTION / cop)
        found.append(Finding(
            "pump_never_stops", "a pump runs around the clock (vibration floor day and night)",
            PUMP_TYPICAL_W * 24.0 / 1000.0,
            {"vibration_floor_mm_s": vib, "threshold": VIB_FLOOR_PUMP,
             "base_load_w": ft["base_load_w"], "base_norm_w": ft["base_norm_w"]},
            [hourly_sql, f"tool decompose(home_id='{h}', metric='vibration_mm_s')"]))
    # a saturated heat pump breaks the calibration's model: its loads mean nothing then
    if ft["base_load_w"] is not None and sag < SAG_LOW_COP:
        excess_w = ft["base_load_w"] - ft["base_norm_w"] - pump_w
        if excess_w >= BASE_EXCESS_W:
            found.append(Finding(
                "base_load", "always-on electrical load",
                excess_w * 24.0 / 1000.0,
                {"base_load_w": ft["base_load_w"], "base_norm_w": ft["base_norm_w"], "excess_w": round(excess_w, 1),
                 "threshold_w": BASE_EXCESS_W},
                [calibrated + ".base_load_w",
                 f"SELECT quantile(0.05)(power_w) FROM telemetry WHERE home_id = '{h}' AND toHour(ts) BETWEEN 1 AND 4"]))
    if ft["setback_c"] < SETBACK_NONE_C:
        found.append(Finding(
            "no_setback", "no night set-back",
            ua * TYPICAL_SETBACK_C * SETBACK_HOURS / 1000.0 / cop,
            {"setback_c": ft["setback_c"], "threshold": SETBACK_NONE_C, "typical_setback_c": TYPICAL_SETBACK_C},
            [calibrated + ".setback_c", hourly_sql]))
    found.sort(key=lambda f: -f.excess_kwh_per_day)
    for f in found:
        f.excess_kwh_per_day = round(f.excess_kwh_per_day, 2)
    return Analysis(h, base, ft, found)
