"""The simulated city: pure, deterministic, vectorised over homes. No Kafka, no I/O.

Each home is a small physical model, stepped once per tick for every home at once
with numpy:

- **outdoor temperature** per region: annual mean, seasonal cycle (coldest around
  20 January), daily cycle (coldest before dawn, warmest mid-afternoon), a slow
  weather anomaly (AR(1), ~1.5 days) and a fast one (~20 min); each home adds a
  micro-climate offset and sensor noise. Local time is taken to be UTC.
- **indoor temperature**: a one-node thermal model ``C dT/dt = UA (T_out - T_in) +
  internal gains + solar + Q_hvac`` with home-specific envelope loss ``UA`` (size x
  insulation) and time constant ``C / UA`` of 4-10 h. The HVAC is a heat pump with
  feed-forward plus proportional control toward a thermostat setpoint (with a night
  set-back in most homes), saturating at its capacity.
- **power** = base load + occupancy load (weekday / weekend profile with morning and
  evening peaks, shifted per home, AR(1) multiplicative noise) + HVAC electricity
  (heat / COP) + the water pump, plus meter noise. **energy_kwh** integrates the true
  power (monotonic, starts at a per-home meter reading).
- **voltage** ~230 V: feeder variation per region, the city's load cycle, a per-home
  offset and the home's own load drop.
- **vibration** (mm/s): a structural baseline, plus the circulation pump for homes
  with a water system (lognormal noise).
- **water system** (about ``water_fraction`` of homes, fixed per home): a hot-water
  recirculation loop with UV steriliser: flow = recirculation + demand (shower peaks),
  outlet temperature dips with demand, UV intensity and pump pressure fall with flow.
  Homes without one report ``None`` (``NaN`` in ``tick_columns``).
- **components** (optional, ``maintenance=MaintenanceConfig()``): each home's bill of
  materials (``maintenance.fleet.Fleet``, ``sim.fleet``) wears out; a worn component
  changes its home's physics or sensors (a worn pump shakes and loses pressure, a UV
  lamp dims, a filter clogs, a heat pump's COP falls, insulation leaks), a failed one
  stops, and technicians reset the wear. Only homes with a worn or failed component are
  touched, and the fleet draws from its own hash streams, never the noise generator.
- **causes of inefficiency** (optional, ``causes=CausePlan``, ``producers.causes``):
  poor insulation, a degraded heat pump, a high thermostat, no night set-back, an
  always-on load, a pump that never stops, for the whole run, with ground truth. Only
  the homes with a cause are touched.

Per-home parameters come from a counter-based hash of ``(seed, home index)``, so home
``H000042`` is the same home in a city of 100 or of 100,000. Noise comes from one
``numpy`` generator seeded with ``seed``: the same arguments give the same readings.
The random draws never depend on the fault plan, so a run with faults equals the run
without them everywhere the faults do not reach.

``seq`` counts reading *slots*: it advances by one per tick for every home, also when a
meter dropout suppresses the reading, so a jump in ``seq`` reveals lost readings.

>>> sim = CitySimulator(homes=3, regions=("north", "south"), seed=1, start_ms=1_700_000_000_000)
>>> rows = sim.tick()
>>> [r["home_id"] for r in rows], [r["seq"] for r in rows], rows[0]["ts"]
(['H000000', 'H000001', 'H000002'], [0, 0, 0], 1700000000000)
>>> sorted(rows[0]) == sorted(FIELDS)
True
>>> [r["seq"] for r in sim.tick()], sim.now_ms
([1, 1, 1], 1700000002000)
>>> cols = sim.tick_columns()
>>> cols["power_w"].shape, bool(cols["emitted"].all())
((3,), True)
"""

from __future__ import annotations

import gc
import math
import os
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Sequence

import numpy as np

import schemas
from ecoretrofit.hashing import uniforms as _uniforms
from maintenance.fleet import Fleet, MaintenanceConfig
from producers.causes import CauseEffects, CausePlan
from producers.faults import FaultPlan, FaultRecord

#: The TelemetryReading fields, in schema order.
FIELDS = tuple(schemas.field_names(schemas.TELEMETRY_READING))
FLOAT_FIELDS = FIELDS[4:]
WATER_FIELDS = FIELDS[10:]

DAY_MS = 86_400_000


def home_id(index: int) -> str:
    """``H`` + the zero-padded home index: ``home_id(42) == 'H000042'``."""
    return f"H{index:06d}"


# --------------------------------------------------------------- daily profiles
_HOURS = np.arange(1440) / 60.0


def _bump(mu: float, sd: float) -> np.ndarray:
    d = (_HOURS - mu + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / sd) ** 2)


def _smoothstep(a: float, b: float) -> np.ndarray:
    x = np.clip((_HOURS - a) / (b - a), 0.0, 1.0)
    return x * x * (3 - 2 * x)


#: Occupancy (fraction of a home's peak appliance load) per minute of the day.
OCC_WEEKDAY = 0.10 + 0.55 * _bump(7.2, 0.8) + 0.15 * _bump(12.8, 1.0) + 0.95 * _bump(19.3, 1.7)
OCC_WEEKEND = 0.12 + 0.45 * _bump(9.6, 1.3) + 0.35 * _bump(13.5, 2.2) + 0.90 * _bump(19.0, 1.9)
#: Hot-water demand (fraction of peak) per minute: shower peaks.
WATER_WEEKDAY = 0.02 + 0.90 * _bump(7.0, 0.6) + 0.15 * _bump(13.0, 2.0) + 0.55 * _bump(20.5, 1.2)
WATER_WEEKEND = 0.02 + 0.80 * _bump(9.3, 1.0) + 0.25 * _bump(13.5, 2.5) + 0.55 * _bump(20.5, 1.3)
#: Thermostat night set-back (0 by day, 1 at night, one-hour ramps).
SETBACK = np.where(_HOURS >= 12, _smoothstep(22.5, 23.5), 1.0 - _smoothstep(5.5, 6.5))

#: Share of a home's non-HVAC electricity that ends up as heat indoors.
INTERNAL_GAIN_FRACTION = 0.7
#: Extra circulation-pump electricity per litre/minute of flow, W.
PUMP_W_PER_LPM = 6.0
#: Relative rise of the circulation pump's vibration per litre/minute of flow.
PUMP_VIB_PER_LPM = 0.015
#: Proportional thermostat gain, in multiples of the home's loss UA.
CONTROL_GAIN_PER_UA = 3.0


# ------------------------------------------------- physics shared with twin/ (pure)
def calendar(ts: int) -> tuple[float, int, float, bool, float]:
    """``(hour, minute of day, day of year, weekend, season)`` of a UTC millisecond
    timestamp; ``season`` is -1 around 20 January and +1 half a year later."""
    tm = time.gmtime(ts // 1000)
    ms_of_day = ts % DAY_MS
    hour = ms_of_day / 3_600_000.0
    minute = ms_of_day // 60_000
    doy = tm.tm_yday - 1 + ms_of_day / DAY_MS
    season = -math.cos(2 * math.pi * (doy - 20.0) / 365.25)
    return hour, minute, doy, tm.tm_wday >= 5, season


def region_climate(seed: int, regions: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per region: annual mean outdoor temperature, seasonal and daily amplitude (C),
    from the region's name, so it does not depend on order."""
    ridx = np.array([zlib.crc32(r.encode()) for r in regions], dtype=np.uint64)

    def ru(stream: int) -> np.ndarray:
        return _uniforms(seed, ridx, 1000 + stream)

    return 7.0 + 6.0 * ru(0), 7.0 + 4.0 * ru(1), 3.0 + 3.0 * ru(2)


def outdoor_normal(mean, season_amp, daily_amp, hour: float, season: float):
    """The climate's outdoor temperature without weather (coldest before dawn)."""
    daily = -math.cos(2 * math.pi * (hour - 4.5) / 24.0)
    return mean + season_amp * season + daily_amp * daily


def sun_fraction(hour: float, season: float) -> float:
    """Sun on a clear day, 0 at night .. 1 at noon; days are longer in summer."""
    half_day = 6.0 + 2.0 * season
    return max(0.0, math.cos(0.5 * math.pi * (hour - 12.5) / half_day)) if abs(hour - 12.5) < half_day else 0.0


def solar_gain_w(size, sun: float, season: float):
    """Solar heat gain through a home of relative ``size``."""
    return (350.0 * (0.65 + 0.35 * season) * sun) * size


def heat_pump_step(t_in, t_out, sp, ua, heat_cap, gain, q_int, solar, q_heat_max, q_cool_max, cop, dt: float,
                   hvac_cap=None):
    """One step of the one-node thermal model with its heat pump: feed-forward plus
    proportional control toward ``sp``, saturating at capacity. Returns
    ``(indoor temperature after dt, heat delivered W (< 0: cooling), HVAC electricity W)``."""
    q = ua * (sp - t_out) - q_int - solar + gain * (sp - t_in)
    np.clip(q, -q_cool_max, q_heat_max, out=q)
    if hvac_cap is not None:
        q *= hvac_cap
    t_next = t_in + (dt / heat_cap) * (ua * (t_out - t_in) + q_int + solar + q)
    hvac_w = np.where(q > 0, q / cop, -q / (1.15 * cop)) + 0.02 * np.abs(q)
    return t_next, q, hvac_w


#: One thread draws every simulator's next tick of noise while the current tick is
#: encoded and sent (numpy's generators release the GIL while they draw).
_noise_pool: ThreadPoolExecutor | None = None
_noise_pool_lock = threading.Lock()


def _draw_ahead(rng: np.random.Generator, size: int) -> Future:
    global _noise_pool
    if _noise_pool is None:
        with _noise_pool_lock:
            if _noise_pool is None:
                _noise_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-noise")
    return _noise_pool.submit(rng.standard_normal, size)


def _forget_noise_pool() -> None:  # a forked child has the pool but not its thread
    global _noise_pool
    _noise_pool = None


os.register_at_fork(after_in_child=_forget_noise_pool)


# AR(1) processes: name -> (stationary sd, time constant s)
_AR = {
    "weather_slow": (3.0, 36 * 3600.0),
    "weather_fast": (0.5, 20 * 60.0),
    "feeder": (1.5, 40 * 60.0),
    "occ": (0.30, 15 * 60.0),
    "indoor": (0.10, 15 * 60.0),
    "demand": (0.50, 4 * 60.0),
    "wtemp": (0.40, 20 * 60.0),
    "press": (0.02, 10 * 60.0),
}


class _Group:
    """Faults of one (kind, metric), as arrays the tick loop can apply at once."""

    __slots__ = ("kind", "metric", "records", "idx", "start", "end", "mag", "held", "act")

    def __init__(self, kind: str, metric: str, records: list[FaultRecord], index: dict[str, int]):
        self.kind, self.metric, self.records = kind, metric, records
        self.idx = np.array([index[r.home_id] for r in records], dtype=np.int64)
        self.start = np.array([r.start_ms for r in records], dtype=np.int64)
        self.end = np.array([r.end_ms for r in records], dtype=np.int64)
        self.mag = np.array([r.magnitude for r in records], dtype=np.float64)
        self.held = np.full(len(records), np.nan)
        self.act = np.empty(0, dtype=np.int64)

    def frac(self, a: np.ndarray, ts: int) -> np.ndarray:
        """Elapsed fraction of each active fault's window."""
        return (ts - self.start[a]) / (self.end[a] - self.start[a])


class CitySimulator:
    """``homes`` homes over ``regions``; one reading per home per tick.

    ``tick()`` returns dicts matching the TelemetryReading schema; ``tick_columns()``
    returns the same tick as numpy columns (``NaN`` for null water fields) plus an
    ``emitted`` mask (False where a meter dropout suppressed the reading), for bulk
    paths. Each call advances time by ``step_ms``, or jumps to ``ts_ms`` when given
    (live mode: wall-clock time); the physics uses the actual elapsed time, which
    should stay below ~10 minutes per tick for the thermal model to be accurate.
    ``first_home`` numbers the homes from there (home ``i`` is ``home_id(first_home +
    i)``): a city of its own beside another, e.g. a benchmark's beside the live one.
    """

    def __init__(
        self,
        homes: int,
        regions: Sequence[str],
        seed: int,
        start_ms: int,
        step_ms: int = 1000,
        water_fraction: float = 0.35,
        faults: FaultPlan | None = None,
        maintenance: MaintenanceConfig | None = None,
        causes: CausePlan | None = None,
        first_home: int = 0,
    ):
        if homes < 1:
            raise ValueError("homes must be at least 1")
        if homes > 1_000_000:
            raise ValueError("at most 1,000,000 homes (six-digit home ids)")
        regions = tuple(regions)
        if not regions:
            raise ValueError("at least one region")
        if step_ms <= 0:
            raise ValueError("step_ms must be positive")
        if not 0.0 <= water_fraction <= 1.0:
            raise ValueError("water_fraction must be in [0, 1]")
        self.n = n = int(homes)
        self.regions = regions
        self.seed = int(seed)
        self.step_ms = int(step_ms)
        self.water_fraction = float(water_fraction)
        self.now_ms = int(start_ms)  # timestamp of the next tick
        self.ticks = 0
        self._last_ts: int | None = None

        idx = np.arange(n, dtype=np.uint64)

        def u(stream: int) -> np.ndarray:
            return _uniforms(self.seed, idx, stream)

        # ---- identity
        if not 0 <= first_home <= 999_999_999 - n:
            raise ValueError("first_home: home ids have at most nine digits")
        self.home_ids: list[str] = [home_id(first_home + i) for i in range(n)]
        self.home_index: dict[str, int] = {h: i for i, h in enumerate(self.home_ids)}
        self.region_idx = np.minimum((u(0) * len(regions)).astype(np.int64), len(regions) - 1)
        self.has_water = u(1) < water_fraction
        self.water_idx = np.flatnonzero(self.has_water)
        self.home_regions: list[str] = [regions[i] for i in self.region_idx.tolist()]
        self.water_homes: frozenset[str] = frozenset(self.home_ids[i] for i in self.water_idx.tolist())
        self._hid_arr = np.array(self.home_ids, dtype=object)
        self._reg_arr = np.array(self.home_regions, dtype=object)
        self._hid_arr.flags.writeable = False
        self._reg_arr.flags.writeable = False

        # ---- building and occupants
        self.size = 0.6 + 0.9 * u(2)  # relative floor area (~60-150 m2)
        self.insulation = 0.6 + 1.0 * u(3)  # 0.6 retrofitted .. 1.6 leaky
        self.ua = 150.0 * self.size * self.insulation  # W/K
        tau_s = (4.0 + 6.0 * u(4)) * 3600.0
        self.heat_cap = self.ua * tau_s  # J/K
        self.gain = CONTROL_GAIN_PER_UA * self.ua  # proportional controller, W/K
        self.setpoint = 19.5 + 2.5 * u(5)
        self.setback = np.where(u(7) < 0.6, 1.0 + 2.0 * u(6), 0.0)
        self.shift_min = np.round((u(8) * 2.0 - 1.0) * 60.0).astype(np.int64)
        self.base_load = (90.0 + 160.0 * u(9)) * self.size
        self.occ_load = (700.0 + 1500.0 * u(10)) * self.size
        self.cop = 2.6 + 1.2 * u(11)
        self.q_heat_max = self.ua * 36.0  # sized for -12 C outside, with margin
        self.q_cool_max = self.ua * 16.0
        self.micro = 1.4 * u(12) - 0.7
        self.v_offset = 4.0 * u(13) - 2.0
        self.vib_base = 0.15 + 0.45 * u(14)
        self.pump_vib = np.where(self.has_water, 0.8 + 1.2 * u(15), 0.0)
        # water system (used on water_idx only)
        w = self.water_idx
        self.recirc = (1.5 + 2.0 * u(16))[w]
        self.demand_peak = (6.0 + 8.0 * u(17))[w]
        self.hot_sp = (55.0 + 5.0 * u(18))[w]
        self.uv0 = (30.0 + 15.0 * u(19))[w]
        self.p0 = (2.6 + 0.8 * u(20))[w]
        self.pump_w = np.where(self.has_water, 60.0 + 80.0 * u(21), 0.0)

        # ---- causes of inefficiency (optional): the home as it really is, for the whole
        # run; the register (``insulation``, the rated COP) keeps what it was built as.
        self.causes: CausePlan | None = causes
        self._pump_add_w: np.ndarray | None = None
        self._pump_vib_add: np.ndarray | None = None
        if causes is not None and len(causes):
            e = CauseEffects.of(causes, self.home_index, n)
            self.ua = self.ua * e.ua_factor  # heat capacity stays: a shorter time constant
            self.gain = CONTROL_GAIN_PER_UA * self.ua
            self.q_heat_max = self.ua * 36.0 * e.capacity_factor
            self.q_cool_max = self.ua * 16.0 * e.capacity_factor
            self.cop = self.cop * e.cop_factor
            self.setpoint = self.setpoint + e.setpoint_add_c
            self.setback = np.where(e.no_setback, 0.0, self.setback)
            self.base_load = self.base_load + e.base_add_w
            if e.pump_add_w.any():
                self._pump_add_w, self._pump_vib_add = e.pump_add_w, e.pump_vib_add

        # ---- regions: climate from the region's name, so it does not depend on order
        self.clim_mean, self.clim_season, self.clim_daily = region_climate(self.seed, regions)

        # ---- dynamic state
        self._rng = np.random.default_rng(self.seed)
        init = np.random.default_rng([self.seed, 1])
        r, nw = len(regions), len(w)
        self._weather_slow = init.standard_normal(r) * _AR["weather_slow"][0]
        self._weather_fast = init.standard_normal(r) * _AR["weather_fast"][0]
        self._feeder = init.standard_normal(r) * _AR["feeder"][0]
        self._occ = init.standard_normal(n) * _AR["occ"][0]
        self._indoor_dist = init.standard_normal(n) * _AR["indoor"][0]
        self._demand = init.standard_normal(nw) * _AR["demand"][0]
        self._wtemp = init.standard_normal(nw) * _AR["wtemp"][0]
        self._press = init.standard_normal(nw) * _AR["press"][0]
        self._indoor = self.setpoint - self.setback * 0.5 + init.standard_normal(n) * 0.3
        self._energy = 2000.0 + 40000.0 * u(22)
        self._seq = np.zeros(n, dtype=np.int64)
        self._ar_cache: dict[float, dict[str, tuple[float, float]]] = {}
        # one draw per tick, carved into views; the next tick's is drawn ahead in the
        # background (the same numbers in the same order: one generator, one draw in
        # flight at a time)
        self._nz = 9 * n + 7 * nw + 3 * r
        self._next_z: Future | None = None
        self._pid = os.getpid()

        # ---- components (optional): wear and failures of each home's bill of materials
        self._wpos = np.full(n, -1, dtype=np.int64)
        self._wpos[w] = np.arange(nw)
        self.fleet: Fleet | None = None
        if maintenance is not None:
            self.fleet = Fleet(self.seed, self.home_ids, self.home_regions, self.has_water, self.now_ms,
                               maintenance, home_indices=range(n))

        # ---- faults
        self._groups: list[_Group] = []
        self._bounds = np.empty(0, dtype=np.int64)
        self._seg = (1, 0)  # [lo, hi) on which the active set is known; empty at first
        self.faults: FaultPlan | None = None
        if faults is not None:
            self.set_faults(faults)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        if self._next_z is not None:  # the draw in flight, as numbers
            state["_next_z"] = self._next_z.result()
        return state

    def __setstate__(self, state: dict) -> None:
        drawn = state["_next_z"]
        if drawn is not None:
            state["_next_z"] = Future()
            state["_next_z"].set_result(drawn)
        state["_pid"] = os.getpid()
        self.__dict__.update(state)

    # ------------------------------------------------------------ construction
    @classmethod
    def from_settings(cls, settings, start_ms: int | None = None, **kw) -> "CitySimulator":
        """A simulator of ``settings.homes`` homes in ``settings.regions``, seeded with
        ``settings.seed``; ``start_ms`` defaults to now, rounded down to ``step_ms``."""
        step = int(kw.get("step_ms", 1000))
        if start_ms is None:
            start_ms = int(time.time() * 1000) // step * step
        return cls(settings.homes, settings.regions, settings.seed, start_ms, **kw)

    def set_faults(self, plan: FaultPlan | None) -> None:
        """Apply ``plan`` from now on (it may cover the past: those faults are over)."""
        self.faults = plan
        self._groups = []
        if plan is None or len(plan) == 0:
            self._bounds = np.empty(0, dtype=np.int64)
            self._seg = (1, 0)
            return
        by: dict[tuple[str, str], list[FaultRecord]] = {}
        for rec in plan.ground_truth():
            if rec.home_id not in self.home_index:
                raise ValueError(f"fault on unknown home {rec.home_id!r} (city has {self.n} homes)")
            by.setdefault((rec.kind, rec.metric), []).append(rec)
        self._groups = [_Group(k, m, recs, self.home_index) for (k, m), recs in sorted(by.items())]
        self._bounds = np.unique(np.concatenate([np.concatenate([g.start, g.end]) for g in self._groups]))
        self._seg = (1, 0)

    # ------------------------------------------------------------ ticking
    def tick_columns(self, ts_ms: int | None = None) -> dict[str, np.ndarray]:
        """One tick as columns: every schema field (water fields ``NaN`` where null),
        plus ``emitted`` (bool). ``home_id`` and ``region`` are shared read-only object
        arrays; the other arrays are fresh each tick."""
        ts = self.now_ms if ts_ms is None else int(ts_ms)
        if self._last_ts is None:
            dt_ms = self.step_ms
        else:
            dt_ms = ts - self._last_ts
            if dt_ms < 0:
                raise ValueError(f"time went backwards: {ts} after {self._last_ts}")
        cols = self._compute(ts, dt_ms / 1000.0)
        self._last_ts = ts
        self.now_ms = ts + self.step_ms
        self.ticks += 1
        return cols

    def tick(self, ts_ms: int | None = None) -> list[dict]:
        """One tick as TelemetryReading dicts (Python floats, ``None`` for absent water
        fields, ``ts`` in int milliseconds), in home order, without dropped readings."""
        c = self.tick_columns(ts_ms)
        ts = self._last_ts
        em = c["emitted"]
        if em.all():
            sel = None
            hids, regs = self.home_ids, self.home_regions
            water = self.has_water
        else:
            sel = np.flatnonzero(em)
            hids, regs = self._hid_arr[sel].tolist(), self._reg_arr[sel].tolist()
            water = self.has_water[sel]

        def col(name: str) -> list:
            a = c[name]
            return (a if sel is None else a[sel]).tolist()

        def wcol(name: str) -> list:
            a = c[name]
            if sel is not None:
                a = a[sel]
            return np.where(water, a, None).tolist()

        # Building many dicts triggers collections that find nothing (floats and
        # strings only): pause the cyclic GC meanwhile, ~20% faster.
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._rows(ts, hids, regs, col, wcol)
        finally:
            if paused:
                gc.enable()

    @staticmethod
    def _rows(ts, hids, regs, col, wcol) -> list[dict]:
        return [
            {
                "home_id": h,
                "region": r,
                "ts": ts,
                "seq": s,
                "indoor_temp_c": ti,
                "outdoor_temp_c": to,
                "power_w": p,
                "energy_kwh": e,
                "voltage_v": v,
                "vibration_mm_s": vb,
                "water_flow_lpm": wf,
                "water_temp_c": wt,
                "uv_intensity_mw_cm2": uv,
                "pump_pressure_bar": pp,
            }
            for h, r, s, ti, to, p, e, v, vb, wf, wt, uv, pp in zip(
                hids,
                regs,
                col("seq"),
                col("indoor_temp_c"),
                col("outdoor_temp_c"),
                col("power_w"),
                col("energy_kwh"),
                col("voltage_v"),
                col("vibration_mm_s"),
                wcol("water_flow_lpm"),
                wcol("water_temp_c"),
                wcol("uv_intensity_mw_cm2"),
                wcol("pump_pressure_bar"),
            )
        ]

    def ticks_columns(self, count: int):
        """Generator of ``count`` consecutive ``tick_columns()``."""
        for _ in range(count):
            yield self.tick_columns()

    # ------------------------------------------------------------ internals
    def _ar(self, dt: float) -> dict[str, tuple[float, float]]:
        c = self._ar_cache.get(dt)
        if c is None:
            c = {}
            for name, (sd, tau) in _AR.items():
                phi = math.exp(-dt / tau)
                c[name] = (phi, sd * math.sqrt(max(0.0, 1.0 - phi * phi)))
            if len(self._ar_cache) > 64:
                self._ar_cache.clear()
            self._ar_cache[dt] = c
        return c

    def _active(self, ts: int) -> list[_Group]:
        if not self._groups:
            return []
        lo, hi = self._seg
        if not lo <= ts < hi:
            k = int(np.searchsorted(self._bounds, ts, side="right"))
            lo = int(self._bounds[k - 1]) if k > 0 else -(2**62)
            hi = int(self._bounds[k]) if k < len(self._bounds) else 2**62
            self._seg = (lo, hi)
            for g in self._groups:
                g.act = np.flatnonzero((g.start <= ts) & (ts < g.end))
        return [g for g in self._groups if len(g.act)]

    def _compute(self, ts: int, dt: float) -> dict[str, np.ndarray]:
        n, w = self.n, self.water_idx
        nw, r = len(w), len(self.regions)
        ar = self._ar(dt)
        if self._next_z is not None and os.getpid() != self._pid:
            # its draw ahead happened (or not) in the parent: the noise would depend on timing
            raise RuntimeError("a simulator cannot go on ticking in a forked process; create one there")
        z = self._rng.standard_normal(self._nz) if self._next_z is None else self._next_z.result()
        self._next_z = _draw_ahead(self._rng, self._nz)
        zi = iter(range(0, 9 * n, n))

        def zn() -> np.ndarray:
            i = next(zi)
            return z[i : i + n]

        o = 9 * n
        zw = [z[o + k * nw : o + (k + 1) * nw] for k in range(7)]
        o += 7 * nw
        zr = [z[o + k * r : o + (k + 1) * r] for k in range(3)]

        hour, minute, doy, weekend, season = calendar(ts)
        mins = (minute + self.shift_min) % 1440

        active = self._active(ts)
        ua = self.ua
        cop = self.cop
        hvac_cap = None
        wear: dict = {}
        if self.fleet is not None:
            self.fleet.advance(ts)
            wear = self.fleet.wear(ts)
            if "envelope" in wear:
                i, x, failed = wear["envelope"]
                ua = ua.copy()
                ua[i] *= np.where(failed, 1.8, 1.0 + 0.6 * x)
            if "heat_pump" in wear:
                i, x, failed = wear["heat_pump"]
                cop = cop.copy()
                cop[i] *= 1.0 - 0.4 * x
                if failed.any():
                    hvac_cap = np.ones(n)
                    hvac_cap[i[failed]] = 0.0
        for g in active:
            a = g.act
            if g.kind == "insulation_degradation":
                ua = ua.copy() if ua is self.ua else ua
                ua[g.idx[a]] *= 1.0 + g.mag[a] * g.frac(a, ts)
            elif g.kind == "hvac_failure":
                hvac_cap = np.ones(n) if hvac_cap is None else hvac_cap
                hvac_cap[g.idx[a]] *= np.clip(1.0 - g.mag[a], 0.0, 1.0)

        # ---- weather (per region, then per home)
        phi, sd = ar["weather_slow"]
        self._weather_slow = phi * self._weather_slow + sd * zr[0]
        phi, sd = ar["weather_fast"]
        self._weather_fast = phi * self._weather_fast + sd * zr[1]
        phi, sd = ar["feeder"]
        self._feeder = phi * self._feeder + sd * zr[2]
        t_region = (
            outdoor_normal(self.clim_mean, self.clim_season, self.clim_daily, hour, season)
            + self._weather_slow + self._weather_fast
        )
        t_out = t_region[self.region_idx] + self.micro
        solar = solar_gain_w(self.size, sun_fraction(hour, season), season)

        # ---- occupants
        occ_prof = (OCC_WEEKEND if weekend else OCC_WEEKDAY)[mins]
        phi, sd = ar["occ"]
        self._occ = phi * self._occ + sd * zn()
        occ = self.occ_load * occ_prof * np.exp(self._occ)
        q_int = INTERNAL_GAIN_FRACTION * (self.base_load + occ)

        # ---- thermal model and HVAC
        sp = self.setpoint - self.setback * SETBACK[mins]
        self._indoor, q, hvac_w = heat_pump_step(
            self._indoor, t_out, sp, ua, self.heat_cap, self.gain, q_int, solar, self.q_heat_max, self.q_cool_max,
            cop, dt, hvac_cap)

        # ---- water system
        flow_w = None
        if nw:
            wprof = (WATER_WEEKEND if weekend else WATER_WEEKDAY)[mins[w]]
            phi, sd = ar["demand"]
            self._demand = phi * self._demand + sd * zw[0]
            demand = self.demand_peak * wprof * np.exp(self._demand)
            flow_w = self.recirc + demand + 0.05 * zw[1]
            if "circulation_pump" in wear:  # a stopped pump: no recirculation
                i, x, failed = wear["circulation_pump"]
                p = self._wpos[i[failed]]
                flow_w[p] = np.maximum(flow_w[p] - self.recirc[p], 0.0)
            if "water_filter" in wear:  # clogging
                i, x, failed = wear["water_filter"]
                flow_w[self._wpos[i]] *= np.where(failed, 0.2, 1.0 - 0.35 * x)
            phi, sd = ar["wtemp"]
            self._wtemp = phi * self._wtemp + sd * zw[2]
            wtemp_w = self.hot_sp - 0.22 * demand + self._wtemp + 0.05 * zw[4]
            uv_w = self.uv0 * (1.0 - 0.006 * flow_w) + 0.25 * zw[3]
            phi, sd = ar["press"]
            self._press = phi * self._press + sd * zw[5]
            press_w = self.p0 - 0.003 * flow_w * flow_w + self._press + 0.015 * zw[6]
            if "circulation_pump" in wear:  # bearing wear: pressure falls
                i, x, failed = wear["circulation_pump"]
                p = self._wpos[i]
                press_w[p] = np.where(failed, 0.1 * self.p0[p], press_w[p] - 0.6 * x)
            if "water_filter" in wear:
                i, x, failed = wear["water_filter"]
                press_w[self._wpos[i]] += np.where(failed, 0.8, 0.5 * x)
            if "uv_lamp" in wear:
                i, x, failed = wear["uv_lamp"]
                p = self._wpos[i]
                uv_w[p] = np.where(failed, 0.02 * self.uv0[p], uv_w[p] * (1.0 - 0.55 * x))
            if "water_heater" in wear:
                i, x, failed = wear["water_heater"]
                p = self._wpos[i]
                wtemp_w[p] = np.where(failed, wtemp_w[p] - 35.0, wtemp_w[p] - 10.0 * x)
            # A pump's outlet cannot fall below ambient: at high flow (or a worn pump) the
            # pump curve above would otherwise report tens of bar of vacuum.
            np.maximum(press_w, 0.0, out=press_w)

        # ---- power and energy
        p_true = self.base_load + occ + hvac_w
        if self._pump_add_w is not None:
            p_true = p_true + self._pump_add_w
        if nw:
            p_true[w] += self.pump_w[w] + PUMP_W_PER_LPM * flow_w
        p_true = np.abs(p_true + (8.0 + 0.015 * p_true) * zn())
        self._energy = self._energy + p_true * (dt / 3_600_000.0)

        # ---- voltage, vibration
        city_load = float((OCC_WEEKEND if weekend else OCC_WEEKDAY)[minute])
        volt = 231.0 + self._feeder[self.region_idx] + self.v_offset - 3.0 * city_load - 0.00045 * p_true + 0.3 * zn()
        pump_part = self.pump_vib.copy()
        if nw:
            pump_part[w] *= 1.0 + PUMP_VIB_PER_LPM * flow_w
        if self._pump_vib_add is not None:
            pump_part += self._pump_vib_add
        vib = (self.vib_base + pump_part) * np.exp(0.06 * zn())
        if "circulation_pump" in wear:  # bearing wear shakes; a stopped pump does not
            i, x, failed = wear["circulation_pump"]
            vib[i] *= np.where(failed, self.vib_base[i] / (self.vib_base[i] + pump_part[i]), 1.0 + 3.0 * x)
        if "inverter" in wear:
            i, x, failed = wear["inverter"]
            volt[i] = np.where(failed, 0.85 * volt[i], volt[i] - 8.0 * x)

        # ---- sensors
        phi, sd = ar["indoor"]
        self._indoor_dist = phi * self._indoor_dist + sd * zn()
        cols: dict[str, np.ndarray] = {
            "home_id": self._hid_arr,
            "region": self._reg_arr,
            "ts": np.full(n, ts, dtype=np.int64),
            "seq": self._seq.copy(),
            "indoor_temp_c": self._indoor + self._indoor_dist + 0.02 * zn(),
            "outdoor_temp_c": t_out + 0.08 * zn(),
            "power_w": p_true,
            "energy_kwh": self._energy.copy(),
            "voltage_v": volt,
            "vibration_mm_s": vib,
        }
        for name in WATER_FIELDS:
            cols[name] = np.full(n, np.nan)
        if nw:
            cols["water_flow_lpm"][w] = flow_w
            cols["water_temp_c"][w] = wtemp_w
            cols["uv_intensity_mw_cm2"][w] = uv_w
            cols["pump_pressure_bar"][w] = press_w
        self._seq += 1
        emitted = np.ones(n, dtype=bool)
        if "meter" in wear:  # a failed meter sends nothing
            emitted[wear["meter"][0]] = False

        # ---- sensor faults (physical ones were applied above)
        stuck: list[_Group] = []
        for g in active:
            a = g.act
            i = g.idx[a]
            k = g.kind
            if k == "voltage_sag":
                cols["voltage_v"][i] *= 1.0 - g.mag[a]
            elif k == "voltage_surge":
                cols["voltage_v"][i] *= 1.0 + g.mag[a]
            elif k == "pump_bearing_wear":
                f = g.frac(a, ts)
                cols["vibration_mm_s"][i] *= 1.0 + g.mag[a] * f**1.5
                phase = 2 * math.pi * (ts - g.start[a]) / 37_000.0
                cols["pump_pressure_bar"][i] += 0.12 * (g.mag[a] / 3.0) * f * np.sin(phase)
            elif k == "spike":
                cols[g.metric][i] += g.mag[a]
            elif k == "meter_dropout":
                emitted[i] = False
            elif k == "stuck_sensor":
                stuck.append(g)
        for g in stuck:  # last: a stuck sensor repeats whatever it showed first
            a = g.act
            i = g.idx[a]
            held = g.held[a]
            fresh = np.isnan(held)
            held[fresh] = cols[g.metric][i[fresh]]
            g.held[a] = held
            cols[g.metric][i] = held
        cols["emitted"] = emitted
        return cols
