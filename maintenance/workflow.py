"""Predictive maintenance workflow: telemetry -> per-asset health -> predictions ->
predictive work orders; work orders -> labels. Pure, no I/O: the evaluation runs it in
process, a stream processor runs the same object between Kafka topics.

- ``observe(reading)`` takes telemetry readings (TelemetryReading dicts). They are
  averaged per home over ``period_ms`` windows (health moves over days, not seconds;
  averaging also quiets sensor noise); when a home's window closes, every predictable
  component of the home gets one update of its type's ``RulPredictor`` with the
  signals that type's wear shows on (``TYPE_SIGNALS``); heat pump and envelope only
  in windows when the home heats.
- A prediction with ``p_fail >= threshold``, for a type whose predictor has learned from
  at least ``min_failures`` failures, on an asset without an open order, asks for a
  predictive work order: one per asset and *episode* (the asset's current unit; a new
  episode starts when a replacement closes). The request's id is derived from the
  episode, so a replayed or restarted workflow asks for the same order again, never a
  second one.
- ``on_order(record)`` takes WorkOrder versions: an order on a failure teaches the
  type's predictor (the asset's readings up to the failure get their true remaining
  life); a replacement without failure resets the asset's indicators; either starts a
  new episode.

Times are event times in ms; predictors count time in hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from maintenance.assets import ASSET_TYPES, DAY_MS, HOUR_MS, asset_id
from maintenance.predictor import RulPredictor

#: The telemetry each type's wear shows on (``power_per_degree``: power over the
#: heating degrees, derived per window). Meters fail without warning: not predicted.
TYPE_SIGNALS: dict[str, tuple[str, ...]] = {
    "heat_pump": ("power_per_degree", "indoor_temp_c"),
    "circulation_pump": ("vibration_mm_s", "pump_pressure_bar"),
    "uv_lamp": ("uv_intensity_mw_cm2", "water_flow_lpm"),
    "water_filter": ("water_flow_lpm", "pump_pressure_bar"),
    "water_heater": ("water_temp_c",),
    "inverter": ("voltage_v",),
    "envelope": ("power_per_degree", "indoor_temp_c"),
}
#: Types whose signal is the heating: their windows count only when the home heats
#: (outdoor mean at most this, C); in mild weather power per degree is no health signal.
HEATING_TYPES = ("heat_pump", "envelope")
HEATING_BELOW_C = 8.0
_FIELDS = ("indoor_temp_c", "outdoor_temp_c", "power_w", "voltage_v", "vibration_mm_s", "water_flow_lpm",
           "water_temp_c", "uv_intensity_mw_cm2", "pump_pressure_bar")


@dataclass(frozen=True)
class WorkflowConfig:
    period_ms: int = 6 * HOUR_MS
    horizon_days: float = 7.0
    threshold: float = 0.5
    min_failures: int = 3
    baseline_windows: int = 28  # a unit's first week (6-hour windows) is its own healthy baseline
    model_name: str = "rul"

    @property
    def source(self) -> str:
        from maintenance.predictor import VERSION

        return f"model:{self.model_name}@{VERSION}"


@dataclass(frozen=True)
class OrderRequest:
    """Ask for a predictive work order. ``request_id`` is stable per asset and episode."""

    request_id: str
    asset_id: str
    ts: int
    source: str
    p_fail: float
    rul_hours: float
    top_signals: tuple


def home_assets(home_id: str, has_water: bool) -> list[dict]:
    """The predictable components of a home, from what its telemetry shows (a stream
    processor knows homes only from their readings): one per type, water types only
    where the home has a water system.

    >>> [a["asset_id"] for a in home_assets("H000001", has_water=False)]
    ['H000001-HP', 'H000001-INV', 'H000001-ENV']
    """
    return [{"asset_id": asset_id(home_id, t), "home_id": home_id, "asset_type": t}
            for t in TYPE_SIGNALS if has_water or not ASSET_TYPES[t].water_only]


class PredictiveWorkflow:
    def __init__(self, assets: list[dict], config: WorkflowConfig | None = None):
        """``assets``: the asset register (asset_id, home_id, asset_type, ...); more
        may join later (``add_assets``)."""
        self.config = cfg = config or WorkflowConfig()
        horizon_h = cfg.horizon_days * 24.0
        self.predictors = {
            t: RulPredictor(sig, alphas=(0.05, 0.2), baseline=cfg.baseline_windows, horizon=horizon_h,
                            explain_above=min(0.1, cfg.threshold), time_unit=HOUR_MS,
                            cap=max(2.0 * horizon_h, 1.2 * ASSET_TYPES[t].degrade_days * 24.0),
                            age_scale=24.0 * 365.0, memory=int(4 * ASSET_TYPES[t].degrade_days * DAY_MS
                                                              / cfg.period_ms) + 8, top=2)
            for t, sig in TYPE_SIGNALS.items()
        }
        self.failures_seen = {t: 0 for t in TYPE_SIGNALS}
        self.home_assets: dict[str, list[tuple[str, str]]] = {}
        self.asset_type: dict[str, str] = {}
        self.add_assets(assets)
        self.open_orders: set[str] = set()
        self.episode: dict[str, int] = {}
        self.requested: set[str] = set()  # request ids already asked for
        self.replaced_at: dict[str, int] = {}  # asset -> when its current unit went in
        self._window: dict[str, tuple[int, list[float], list[int]]] = {}
        self.latest: dict[str, dict] = {}  # asset -> its latest prediction record
        self._made: list[dict] = []  # predictions since the last drain_predictions()
        self._changed: set[str] = set()  # assets whose predictor state changed since take_changed()

    def add_assets(self, assets: list[dict]) -> None:
        """Register components (those of a type this workflow predicts; others are ignored)."""
        for a in assets:
            aid, t = a["asset_id"], a["asset_type"]
            if t in TYPE_SIGNALS and aid not in self.asset_type:
                self.asset_type[aid] = t
                self.home_assets.setdefault(a["home_id"], []).append((aid, t))

    def drain_predictions(self) -> list[dict]:
        """Every prediction made since the last call (one per asset and closed window)."""
        out, self._made = self._made, []
        return out

    # ------------------------------------------------------------ telemetry
    def observe(self, reading: dict) -> list[OrderRequest]:
        """One telemetry reading; returns the work orders to open (usually none)."""
        home, ts = reading["home_id"], int(reading["ts"])
        w = self._window.get(home)
        start = ts - ts % self.config.period_ms
        out: list[OrderRequest] = []
        if w is not None and w[0] != start:
            out = self._close(home, w)
            w = None
        if w is None:
            w = self._window[home] = (start, [0.0] * len(_FIELDS), [0] * len(_FIELDS))
        sums, counts = w[1], w[2]
        for i, f in enumerate(_FIELDS):
            v = reading.get(f)
            if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
                sums[i] += v
                counts[i] += 1
        return out

    def flush(self) -> list[OrderRequest]:
        """Close every open window (end of a run)."""
        out = []
        for home, w in list(self._window.items()):
            out += self._close(home, w)
        self._window.clear()
        return out

    def _close(self, home: str, w) -> list[OrderRequest]:
        start, sums, counts = w
        m = {f: (s / c if c else None) for f, s, c in zip(_FIELDS, sums, counts)}
        if m["power_w"] is not None and m["outdoor_temp_c"] is not None:
            m["power_per_degree"] = m["power_w"] / max(2.0, 18.0 - m["outdoor_temp_c"])
        ts = start + self.config.period_ms
        cfg = self.config
        out = []
        heating = m["outdoor_temp_c"] is not None and m["outdoor_temp_c"] <= HEATING_BELOW_C
        for aid, t in self.home_assets.get(home, ()):
            if t in HEATING_TYPES and not heating:
                continue
            if start < self.replaced_at.get(aid, start):
                continue  # the window mixes the old unit's readings with the new one's
            p = self.predictors[t]
            pred = p.update(aid, m, ts=ts)
            self._changed.add(aid)
            self.latest[aid] = rec = {"asset_id": aid, "home_id": home, "asset_type": t, "ts": ts,
                                      "model": cfg.source, "p_fail": pred.p_fail, "horizon_hours": pred.horizon,
                                      "rul_hours": pred.rul, "top_signals": pred.top_signals, "order_id": None}
            self._made.append(rec)
            if (pred.p_fail >= cfg.threshold and self.failures_seen[t] >= cfg.min_failures
                    and aid not in self.open_orders):
                rid = f"PM-{aid}-{self.episode.get(aid, 0)}"
                if rid not in self.requested:
                    self.requested.add(rid)
                    rec["order_id"] = rid
                    out.append(OrderRequest(rid, aid, ts, cfg.source, pred.p_fail, pred.rul, pred.top_signals))
        return out

    # ------------------------------------------------------------ work orders
    def on_order(self, o: dict) -> None:
        """One WorkOrder version (any source)."""
        aid = o["asset_id"]
        t = self.asset_type.get(aid)
        if t is None:
            return
        if o["status"] != "closed":
            self.open_orders.add(aid)
            return
        self.open_orders.discard(aid)
        if not o.get("replaced"):
            return
        p = self.predictors[t]
        self._changed.add(aid)
        if o.get("failure_ms") is not None:
            if p.failed(aid, ts=o["failure_ms"]) > 0:
                self.failures_seen[t] += 1
        else:
            p.reset(aid)
        self.episode[aid] = self.episode.get(aid, 0) + 1
        self.replaced_at[aid] = int(o.get("closed_ms") or 0)

    # ------------------------------------------------------------ checkpoint
    def state(self, assets: bool = True) -> dict:
        """Everything that decides future orders, as JSON-compatible values: the
        predictors, which episode each asset is in, which requests were already made,
        which assets have an open order, and the half-filled windows. ``assets=False``:
        without the predictors' per-asset states (``asset_states`` has them)."""
        return {
            "assets": [{"asset_id": a, "home_id": h, "asset_type": t}
                       for h, items in self.home_assets.items() for a, t in items],
            "predictors": {t: p.state(assets=assets) for t, p in self.predictors.items()},
            "failures_seen": dict(self.failures_seen),
            "open_orders": sorted(self.open_orders),
            "episode": dict(self.episode),
            "requested": sorted(self.requested),
            "replaced_at": dict(self.replaced_at),
            "windows": {h: [w[0], w[1], w[2]] for h, w in self._window.items()},
        }

    def take_changed(self) -> set[str]:
        """The assets whose predictor state changed since the last call."""
        out, self._changed = self._changed, set()
        return out

    def asset_states(self, assets) -> dict[str, tuple[str, dict | None]]:
        """{asset: (type, its predictor state, None if it has none now)}."""
        return {a: (self.asset_type[a], self.predictors[self.asset_type[a]].asset_state(a)) for a in assets}

    def restore(self, state: dict, assets: dict[str, tuple[str, dict]] | None = None) -> None:
        """Resume from ``state()`` (same register and config), or from
        ``state(assets=False)`` and ``asset_states``."""
        preds = {t: RulPredictor.from_state(s) for t, s in state["predictors"].items()}
        if set(preds) != set(self.predictors):
            raise ValueError("checkpoint predicts other component types")
        for aid, (t, st) in (assets or {}).items():
            preds[t].load_asset(aid, st)
        self.predictors = preds
        self.add_assets(state.get("assets", []))
        self.failures_seen = {t: int(state["failures_seen"].get(t, 0)) for t in self.predictors}
        self.open_orders = set(state["open_orders"])
        self.episode = {a: int(e) for a, e in state["episode"].items()}
        self.requested = set(state["requested"])
        self.replaced_at = {a: int(v) for a, v in state["replaced_at"].items()}
        self._window = {h: (int(w[0]), [float(v) for v in w[1]], [int(v) for v in w[2]])
                        for h, w in state["windows"].items()}
