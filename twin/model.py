"""What-if model of one home: the simulator's thermal model, calibrated to the home's
own telemetry, run for a baseline and a scenario side by side. Pure: no I/O.

The physics is ``producers.simulator``'s, imported, not copied: the one-node envelope
with its heat pump (``heat_pump_step``), the occupancy and set-back profiles, the
calendar, the solar gains and the region's climate. What the calibration learns from
indoor/outdoor temperature and power (``calibrate``):

- the thermostat: setpoint, night set-back, the home's shift of its daily routine and
  the closed-loop time constant, from the indoor temperature alone (it follows the
  set-back schedule through a first-order lag of rate ``(UA + gain) / C``);
- the envelope loss ``UA`` and the household's base and occupancy loads, by least
  squares on power: ``P = L (1 - 0.7 k) + k UA X - k solar`` with ``k`` the heat pump's
  electricity per watt of heat (``1/COP`` heating, ``-1/(1.15 COP)`` cooling, plus
  parasitics), ``X`` the controller's demand, ``L`` the non-HVAC load;
- the COP itself is *not* identifiable from power (only ``UA/COP`` is): it is the
  register's rated value, so a COP scenario is relative to it;
- the heat capacity ``C = UA * tau``.

Scenarios change the calibrated home (``Scenario``): an insulation upgrade scales ``UA``
by ``u_new / u_register`` (same heat pump, same thermostat), a heat pump changes the
COP, a thermostat changes setpoint or set-back, PV adds generation from the
simulator's sun, a pump replacement changes the circulation pump's rated power.
Outdoor temperature over the horizon is the region's climate (no weather), or a
series the caller passes (a forecast, or the truth in a test).

>>> import numpy as np
>>> from producers.simulator import CitySimulator
>>> sim = CitySimulator(3, ("north",), seed=3, start_ms=1_704_067_200_000, step_ms=60_000)
>>> obs = observe(sim, 0, ticks=3 * 1440)
>>> home = Building(u_value_w_m2k=u_value_of(sim.insulation[0]), size=float(sim.size[0]), cop_rated=3.0,
...                 pump_w=0.0, climate=Climate(*(float(a[0]) for a in sim_climate(sim))))
>>> cal = calibrate(obs, home)
>>> abs(cal.energy_error_pct) < 5
True
>>> r = what_if(cal, Scenario(u_value_w_m2k=home.u_value_w_m2k / 2, horizon_days=7), start_ms=sim.now_ms)
>>> r.scenario.kwh < r.baseline.kwh
True
>>> Scenario(cop=0.2).validate(home)
Traceback (most recent call last):
...
twin.model.ScenarioError: cop: must be between 1.5 and 8.0 (got 0.2)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.signal import lfilter

from producers.simulator import (
    CONTROL_GAIN_PER_UA,
    DAY_MS,
    INTERNAL_GAIN_FRACTION,
    OCC_WEEKDAY,
    OCC_WEEKEND,
    PUMP_W_PER_LPM,
    SETBACK,
    calendar,
    heat_pump_step,
    outdoor_normal,
    solar_gain_w,
    sun_fraction,
)

#: The register's U-value of a home whose simulator insulation factor is 1.0: the
#: simulator's ``UA = 150 W/K x size x insulation`` over an envelope of ~250 m2 per
#: unit of size (floor area 100 m2 x size).
U_VALUE_PER_INSULATION = 0.6
#: Heat-capacity time constant assumed when the data cannot show it (no set-back).
TAU_PRIOR_H = 7.0
#: Heating capacity in W per W/K of the *original* envelope (the simulator's sizing).
HEAT_CAPACITY_PER_UA = 36.0
COOL_CAPACITY_PER_UA = 16.0
CALIBRATION_STEP_S = 300
HORIZON_STEP_S = 900
#: Thresholds on the measured window below which a calibration is refused.
MIN_WINDOW_HOURS = 24.0


def u_value_of(insulation: float) -> float:
    """The register's U-value (W/m2K) of a simulator insulation factor."""
    return round(U_VALUE_PER_INSULATION * float(insulation), 4)


class CalibrationError(ValueError):
    """The observed telemetry cannot calibrate the model (too short, no variation)."""


class ScenarioError(ValueError):
    """An invalid scenario; ``field`` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Climate:
    """The region's climate: annual mean, seasonal and daily amplitude, C."""

    mean_c: float
    season_c: float
    daily_c: float

    def outdoor(self, ts_ms: np.ndarray) -> np.ndarray:
        out = np.empty(len(ts_ms))
        for i, ts in enumerate(ts_ms.tolist()):
            hour, _, _, _, season = calendar(ts)
            out[i] = outdoor_normal(self.mean_c, self.season_c, self.daily_c, hour, season)
        return out


@dataclass(frozen=True)
class Building:
    """What the register knows about a home (and the calibration does not learn)."""

    u_value_w_m2k: float
    size: float  # relative floor area (floor area / 100 m2): scales solar gains
    cop_rated: float
    pump_w: float  # circulation pump's rated power; 0 without a water system
    climate: Climate


@dataclass(frozen=True)
class Observations:
    """One home's telemetry: equally long arrays; ``water_flow_lpm`` may be None."""

    ts_ms: np.ndarray
    indoor_c: np.ndarray
    outdoor_c: np.ndarray
    power_w: np.ndarray
    water_flow_lpm: np.ndarray | None = None


@dataclass(frozen=True)
class Calibration:
    building: Building
    ua_w_k: float
    tau_h: float
    tau_identified: bool
    setpoint_c: float
    setback_c: float
    shift_min: int
    base_load_w: float
    occ_load_w: float
    mean_flow_lpm: float
    window_hours: float
    samples: int
    observed_kwh: float
    simulated_kwh: float
    energy_error_pct: float  # simulated vs observed energy over the window (NMBE)
    cv_rmse_hourly_pct: float  # hourly energy, ASHRAE Guideline 14 style
    end_ms: int

    @property
    def heat_cap_j_k(self) -> float:
        return self.ua_w_k * self.tau_h * 3600.0

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("building")
        d["heat_cap_mj_k"] = round(self.heat_cap_j_k / 1e6, 3)
        d["cop_assumed"] = self.building.cop_rated
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


# ------------------------------------------------------------------ scenario
#: Every scenario field: (low, high, unit, meaning). Declared once: the API's request
#: model is derived from it.
SCENARIO_FIELDS: dict[str, tuple[float, float, str, str]] = {
    "u_value_w_m2k": (0.08, 3.0, "W/m2K", "insulation upgrade: the envelope's new U-value"),
    "cop": (1.5, 8.0, "", "a new heat pump's seasonal COP"),
    "setpoint_c": (12.0, 26.0, "C", "daytime thermostat setpoint"),
    "night_setback_c": (0.0, 8.0, "C", "night set-back below the setpoint (0: none)"),
    "pv_kwp": (0.0, 30.0, "kWp", "rooftop PV peak power"),
    "pump_w": (5.0, 500.0, "W", "replacement circulation pump's rated power"),
    "horizon_days": (1, 366, "days", "how far to simulate"),
    "price_eur_kwh": (0.0, 5.0, "EUR/kWh", "electricity price"),
    "feed_in_eur_kwh": (0.0, 5.0, "EUR/kWh", "paid for exported PV energy"),
    "co2_kg_kwh": (0.0, 2.0, "kg/kWh", "grid emission factor"),
    "comfort_c": (10.0, 25.0, "C", "daytime indoor temperature below which an hour counts as uncomfortable"),
}


@dataclass(frozen=True)
class Scenario:
    """Changes to the calibrated home; ``None`` keeps the home as it is."""

    u_value_w_m2k: float | None = None
    cop: float | None = None
    setpoint_c: float | None = None
    night_setback_c: float | None = None
    pv_kwp: float | None = None
    pump_w: float | None = None
    horizon_days: int = 30
    price_eur_kwh: float = 0.30
    feed_in_eur_kwh: float = 0.08
    co2_kg_kwh: float = 0.25
    comfort_c: float = 18.0  # WHO's minimum for healthy indoor temperatures

    def validate(self, building: Building | None = None) -> "Scenario":
        for name, (lo, hi, _, _) in SCENARIO_FIELDS.items():
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ScenarioError(name, f"must be a finite number (got {v!r})")
            if not lo <= v <= hi:
                raise ScenarioError(name, f"must be between {lo} and {hi} (got {v})")
        if isinstance(self.horizon_days, float) and not self.horizon_days.is_integer():
            raise ScenarioError("horizon_days", f"must be a whole number of days (got {self.horizon_days})")
        if building is not None and self.pump_w is not None and building.pump_w <= 0:
            raise ScenarioError("pump_w", "this home has no circulation pump")
        return self


@dataclass(frozen=True)
class Outcome:
    kwh: float  # imported from the grid
    kwh_export: float
    cost_eur: float
    co2_kg: float
    peak_kw: float  # highest 15-minute mean import
    hours_below_comfort: float
    daily_kwh: list[float]

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["daily_kwh"] = [round(x, 3) for x in self.daily_kwh]
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items()}


@dataclass(frozen=True)
class WhatIf:
    start_ms: int
    horizon_days: int
    baseline: Outcome
    scenario: Outcome
    calibration: Calibration
    weather: str  # "climate" or "given"

    def as_dict(self) -> dict:
        b, s = self.baseline, self.scenario
        return {
            "start_ms": self.start_ms,
            "horizon_days": self.horizon_days,
            "weather": self.weather,
            "baseline": b.as_dict(),
            "scenario": s.as_dict(),
            "delta": {
                "kwh": round(s.kwh - b.kwh, 3),
                "cost_eur": round(s.cost_eur - b.cost_eur, 3),
                "co2_kg": round(s.co2_kg - b.co2_kg, 3),
                "peak_kw": round(s.peak_kw - b.peak_kw, 3),
                "hours_below_comfort": round(s.hours_below_comfort - b.hours_below_comfort, 3),
            },
            "calibration": self.calibration.as_dict(),
        }


# ------------------------------------------------------------------ forcing
@dataclass
class _Forcing:
    """Everything on a time grid that does not depend on the home's state."""

    ts: np.ndarray
    minute: np.ndarray
    weekend: np.ndarray
    sun: np.ndarray
    season: np.ndarray

    @classmethod
    def grid(cls, ts: np.ndarray) -> "_Forcing":
        n = len(ts)
        minute = np.empty(n, dtype=np.int64)
        weekend = np.empty(n, dtype=bool)
        sun = np.empty(n)
        season = np.empty(n)
        for i, t in enumerate(ts.tolist()):
            hour, m, _, we, se = calendar(t)
            minute[i], weekend[i], season[i] = m, we, se
            sun[i] = sun_fraction(hour, se)
        return cls(ts, minute, weekend, sun, season)

    def mins(self, shift_min: int) -> np.ndarray:
        return (self.minute + shift_min) % 1440

    def occupancy(self, shift_min: int) -> np.ndarray:
        m = self.mins(shift_min)
        return np.where(self.weekend, OCC_WEEKEND[m], OCC_WEEKDAY[m])

    def setback(self, shift_min: int) -> np.ndarray:
        return SETBACK[self.mins(shift_min)]

    def solar(self, size: float) -> np.ndarray:
        return solar_gain_w(size, self.sun, self.season)


def _bins(obs: Observations, step_s: int):
    ts = np.asarray(obs.ts_ms, dtype=np.int64)
    cols = {
        "indoor": np.asarray(obs.indoor_c, dtype=float),
        "outdoor": np.asarray(obs.outdoor_c, dtype=float),
        "power": np.asarray(obs.power_w, dtype=float),
    }
    if obs.water_flow_lpm is not None:
        cols["flow"] = np.asarray(obs.water_flow_lpm, dtype=float)
    if any(len(c) != len(ts) for c in cols.values()):
        raise CalibrationError("observation arrays differ in length")
    ok = np.isfinite(ts.astype(float))
    for c in cols.values():
        ok &= np.isfinite(c)
    ts = ts[ok]
    if len(ts) < 2:
        raise CalibrationError("fewer than two complete readings")
    step_ms = step_s * 1000
    t0 = int(ts.min()) // step_ms * step_ms
    k = (ts - t0) // step_ms
    nb = int(k.max()) + 1
    count = np.bincount(k, minlength=nb)
    have = count > 0
    means = {}
    for name, c in cols.items():
        s = np.bincount(k, weights=c[ok], minlength=nb)
        means[name] = np.where(have, s / np.maximum(count, 1), np.nan)
    grid = t0 + np.arange(nb, dtype=np.int64) * step_ms + step_ms // 2
    return grid, have, means, int(ok.sum())


# ------------------------------------------------------------------ calibration
def calibrate(obs: Observations, building: Building, step_s: int = CALIBRATION_STEP_S) -> Calibration:
    """Fit the thermostat, envelope and loads of one home to its telemetry."""
    grid, have, m, samples = _bins(obs, step_s)
    window_h = (grid[-1] - grid[0]) / 3.6e6 + step_s / 3600.0
    if window_h < MIN_WINDOW_HOURS:
        raise CalibrationError(f"need at least {MIN_WINDOW_HOURS:.0f} h of telemetry, got {window_h:.1f} h")
    f = _Forcing.grid(grid)
    t_in, t_out = m["indoor"][have], m["outdoor"][have]

    # 1. thermostat: indoor temperature = first-order lag of the set-back schedule
    best = None
    for shift in range(-60, 61, 10):
        sb = f.setback(shift)
        for tau_c_h in np.geomspace(0.4, 5.0, 16):
            a = math.exp(-step_s / (tau_c_h * 3600.0))
            lag = lfilter([1.0 - a], [1.0, -a], sb, zi=[a * sb[0]])[0]
            x = np.column_stack([np.ones(have.sum()), -lag[have]])
            coef, *_ = np.linalg.lstsq(x, t_in, rcond=None)
            sse = float(np.sum((x @ coef - t_in) ** 2))
            if best is None or sse < best[0] - 1e-9:
                best = (sse, shift, float(tau_c_h), float(coef[0]), float(coef[1]))
    _, shift, tau_c_h, setpoint, setback = best
    tau_identified = setback >= 0.3
    if not tau_identified:
        setback, tau_h = 0.0, TAU_PRIOR_H
    else:
        tau_h = tau_c_h * (1.0 + CONTROL_GAIN_PER_UA)

    # 2. envelope and loads: linear least squares on power, regime by regime. Without
    # a set-back the routine's shift shows only in power: search it there.
    shifts = list(range(shift - 10, shift + 11, 5)) if tau_identified else list(range(-60, 61, 5))
    fits = [_fit_loads(f, m, have, building, t_in, t_out, setpoint, setback, s) for s in shifts]
    sse, shift, base, occ, ua, mean_flow = min(fits, key=lambda r: r[0])
    if not ua > 0:
        raise CalibrationError("no heat-loss signal in the window (UA not positive)")

    draft = Calibration(
        building=building, ua_w_k=ua, tau_h=tau_h, tau_identified=bool(tau_identified), setpoint_c=setpoint,
        setback_c=setback, shift_min=shift, base_load_w=base, occ_load_w=occ, mean_flow_lpm=mean_flow,
        window_hours=window_h, samples=samples, observed_kwh=0.0, simulated_kwh=0.0, energy_error_pct=0.0,
        cv_rmse_hourly_pct=0.0, end_ms=int(grid[-1]),
    )
    # 3. how well it reproduces the window it was fitted on, driven by the observed weather
    t_out_all = np.interp(grid, grid[have], m["outdoor"][have])
    run = _simulate(draft, [_Home.of(draft)], f, t_out_all, step_s, t0=float(m["indoor"][have][0]))
    sim_w = run.power[0][have]
    obs_w = m["power"][have]
    hours = (grid[have] - grid[0]) // 3_600_000
    obs_h = np.bincount(hours, weights=obs_w)
    sim_h = np.bincount(hours, weights=sim_w)
    used = np.bincount(hours) > 0
    obs_kwh = float(obs_w.sum() * step_s / 3.6e6)
    sim_kwh = float(sim_w.sum() * step_s / 3.6e6)
    rmse = float(np.sqrt(np.mean((sim_h[used] - obs_h[used]) ** 2)))
    return dataclasses.replace(
        draft,
        observed_kwh=obs_kwh,
        simulated_kwh=sim_kwh,
        energy_error_pct=100.0 * (sim_kwh - obs_kwh) / obs_kwh if obs_kwh > 0 else float("nan"),
        cv_rmse_hourly_pct=100.0 * rmse / float(obs_h[used].mean()) if obs_h[used].mean() > 0 else float("nan"),
    )


def _fit_loads(f: "_Forcing", m: dict, have: np.ndarray, building: Building, t_in: np.ndarray, t_out: np.ndarray,
               setpoint: float, setback: float, shift: int):
    """(sse, shift, base W, occupancy W, UA W/K, mean flow) for one routine shift."""
    sp = (setpoint - setback * f.setback(shift))[have]
    x_demand = (sp - t_out) + CONTROL_GAIN_PER_UA * (sp - t_in)
    prof = f.occupancy(shift)[have]
    solar = f.solar(building.size)[have]
    y = m["power"][have].copy()
    flow = m["flow"][have] if "flow" in m else np.zeros(len(y))
    mean_flow = float(flow.mean()) if building.pump_w > 0 else 0.0
    if building.pump_w > 0:
        y -= building.pump_w + PUMP_W_PER_LPM * flow
    k_heat = 1.0 / building.cop_rated + 0.02
    k_cool = -1.0 / (1.15 * building.cop_rated) + 0.02  # per W of (negative) heat
    heating = (sp - t_out) > 4.0
    for _ in range(5):
        k = np.where(heating, k_heat, k_cool)
        g = 1.0 - INTERNAL_GAIN_FRACTION * k
        x = np.column_stack([g, prof * g, x_demand * k])
        coef, *_ = np.linalg.lstsq(x, y + solar * k, rcond=None)
        base, occ, ua = (float(c) for c in coef)
        q = ua * x_demand - INTERNAL_GAIN_FRACTION * (base + occ * prof) - solar
        new = q > 0
        if np.array_equal(new, heating):
            break
        heating = new
    sse = float(np.sum((x @ coef - y - solar * k) ** 2))
    return sse, shift, base, occ, ua, mean_flow


# ------------------------------------------------------------------ simulation
@dataclass(frozen=True)
class _Home:
    """One column of a run: the calibrated home, possibly changed by a scenario."""

    ua: float
    cop: float
    setpoint: float
    setback: float
    pv_kwp: float
    pump_w: float

    @classmethod
    def of(cls, cal: Calibration, s: Scenario | None = None) -> "_Home":
        b = cal.building
        home = cls(cal.ua_w_k, b.cop_rated, cal.setpoint_c, cal.setback_c, 0.0, b.pump_w)
        if s is None:
            return home
        return cls(
            ua=home.ua if s.u_value_w_m2k is None else home.ua * s.u_value_w_m2k / b.u_value_w_m2k,
            cop=home.cop if s.cop is None else float(s.cop),
            setpoint=home.setpoint if s.setpoint_c is None else float(s.setpoint_c),
            setback=home.setback if s.night_setback_c is None else float(s.night_setback_c),
            pv_kwp=0.0 if s.pv_kwp is None else float(s.pv_kwp),
            pump_w=home.pump_w if s.pump_w is None else float(s.pump_w),
        )


@dataclass
class _Run:
    power: np.ndarray  # (homes, steps) net grid power, W (< 0: export)
    indoor: np.ndarray  # (homes, steps)


#: PV system losses (inverter, temperature, soiling): output per kWp at full sun, W.
PV_W_PER_KWP_FULL_SUN = 800.0


def _simulate(cal: Calibration, homes: Sequence[_Home], f: _Forcing, t_out: np.ndarray, step_s: int,
              t0: float | None = None) -> _Run:
    """Step every home column together with the simulator's heat-pump model."""
    n, steps = len(homes), len(f.ts)
    col = lambda name: np.array([getattr(h, name) for h in homes], dtype=float)  # noqa: E731
    ua, cop, pump = col("ua"), col("cop"), col("pump_w")
    ua0 = cal.ua_w_k  # the installed heat pump and thermostat stay sized for the old envelope
    heat_cap = np.full(n, cal.heat_cap_j_k)
    gain = np.full(n, CONTROL_GAIN_PER_UA * ua0)
    q_heat_max = np.full(n, HEAT_CAPACITY_PER_UA * ua0)
    q_cool_max = np.full(n, COOL_CAPACITY_PER_UA * ua0)
    sb = f.setback(cal.shift_min)
    sp = col("setpoint")[:, None] - col("setback")[:, None] * sb[None, :]
    load = cal.base_load_w + cal.occ_load_w * f.occupancy(cal.shift_min)
    q_int = INTERNAL_GAIN_FRACTION * load
    solar = f.solar(cal.building.size)
    pv = col("pv_kwp")[:, None] * PV_W_PER_KWP_FULL_SUN * ((0.65 + 0.35 * f.season) * f.sun)[None, :]
    indoor = np.empty((n, steps))
    hvac = np.empty((n, steps))
    t = sp[:, 0].copy() if t0 is None else np.full(n, t0)
    sp_t = np.ascontiguousarray(sp.T)
    for i in range(steps):
        t, _, hv = heat_pump_step(t, t_out[i], sp_t[i], ua, heat_cap, gain, q_int[i], solar[i], q_heat_max,
                                  q_cool_max, cop, float(step_s))
        indoor[:, i] = t
        hvac[:, i] = hv
    pump_w = pump + (PUMP_W_PER_LPM * cal.mean_flow_lpm if cal.building.pump_w > 0 else 0.0)
    power = load[None, :] + hvac + pump_w[:, None] - pv
    return _Run(power=power, indoor=indoor)


def _outcome(run: _Run, k: int, f: _Forcing, cal: Calibration, s: Scenario, step_s: int) -> Outcome:
    p = run.power[k]
    imp, exp = np.maximum(p, 0.0), np.maximum(-p, 0.0)
    h = step_s / 3600.0
    kwh, kwh_exp = float(imp.sum() * h / 1000), float(exp.sum() * h / 1000)
    per15 = max(1, int(round(900 / step_s)))
    usable = len(imp) // per15 * per15
    peak = float(imp[:usable].reshape(-1, per15).mean(axis=1).max() / 1000) if usable else float(imp.max() / 1000)
    day_time = f.setback(cal.shift_min) == 0.0
    below = float(np.sum((run.indoor[k] < s.comfort_c) & day_time) * h)
    day = (f.ts - f.ts[0]) // DAY_MS
    daily = np.bincount(day, weights=imp * h / 1000).tolist()
    return Outcome(
        kwh=kwh, kwh_export=kwh_exp, cost_eur=kwh * s.price_eur_kwh - kwh_exp * s.feed_in_eur_kwh,
        co2_kg=kwh * s.co2_kg_kwh, peak_kw=peak, hours_below_comfort=below, daily_kwh=daily,
    )


def what_if(cal: Calibration, scenario: Scenario, start_ms: int | None = None,
            outdoor_c: np.ndarray | None = None, step_s: int = HORIZON_STEP_S) -> WhatIf:
    """Baseline vs scenario over ``scenario.horizon_days`` from ``start_ms`` (default:
    the end of the calibration window). ``outdoor_c``: outdoor temperature per step
    (default: the region's climate)."""
    scenario.validate(cal.building)
    start = cal.end_ms if start_ms is None else int(start_ms)
    steps = int(scenario.horizon_days) * 86_400 // step_s
    ts = start + np.arange(steps, dtype=np.int64) * step_s * 1000
    f = _Forcing.grid(ts)
    if outdoor_c is None:
        t_out, weather = cal.building.climate.outdoor(ts), "climate"
    else:
        t_out, weather = np.asarray(outdoor_c, dtype=float), "given"
        if t_out.shape != (steps,) or not np.isfinite(t_out).all():
            raise ScenarioError("outdoor_c", f"need {steps} finite values, one per {step_s} s step")
    run = _simulate(cal, [_Home.of(cal), _Home.of(cal, scenario)], f, t_out, step_s)
    return WhatIf(
        start_ms=start, horizon_days=int(scenario.horizon_days),
        baseline=_outcome(run, 0, f, cal, scenario, step_s), scenario=_outcome(run, 1, f, cal, scenario, step_s),
        calibration=cal, weather=weather,
    )


# ------------------------------------------------------------------ simulator adapters (tests, demo)
def sim_climate(sim) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each home's region climate in a ``CitySimulator``: (mean, season, daily) per home."""
    r = sim.region_idx
    return sim.clim_mean[r], sim.clim_season[r], sim.clim_daily[r]


def observe(sim, index: int, ticks: int) -> Observations:
    """Run ``sim`` for ``ticks`` ticks and keep home ``index``'s telemetry."""
    cols = {k: np.empty(ticks) for k in ("indoor_temp_c", "outdoor_temp_c", "power_w", "water_flow_lpm")}
    ts = np.empty(ticks, dtype=np.int64)
    for i in range(ticks):
        c = sim.tick_columns()
        ts[i] = int(c["ts"][index])
        for k in cols:
            cols[k][i] = c[k][index]
    flow = cols["water_flow_lpm"] if sim.has_water[index] else None
    return Observations(ts, cols["indoor_temp_c"], cols["outdoor_temp_c"], cols["power_w"], flow)
