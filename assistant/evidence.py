"""Assemble one home's ``Evidence`` from its readings, register entry and peers: the one
path from data to ``assistant.analysis``, used by the assistant's tools (readings from
the warehouse) and by ``ecoretrofit eval explain`` (readings from the simulator). Pure.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from assistant.analysis import HOUR_MS, Evidence, HourlySeries, Register, baseline
from twin.attributes import building_for_model
from twin.model import CalibrationError, Climate, Observations, calibrate


def hourly_means(ts_ms: np.ndarray, **columns: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Means per UTC hour of each column (``None`` columns stay None); hours without a
    reading are left out."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    hour = ts // HOUR_MS
    uniq, inv = np.unique(hour, return_inverse=True)
    count = np.bincount(inv)
    out = {}
    for name, col in columns.items():
        if col is None:
            out[name] = None
            continue
        a = np.asarray(col, dtype=float)
        ok = np.isfinite(a)
        s = np.bincount(inv[ok], weights=a[ok], minlength=len(uniq))
        n = np.bincount(inv[ok], minlength=len(uniq))
        out[name] = np.where(n > 0, s / np.maximum(n, 1), np.nan)
    del count
    return uniq * HOUR_MS, out


def hourly_series(ts_ms, indoor, outdoor, power, vibration, flow=None) -> HourlySeries:
    hours, m = hourly_means(ts_ms, indoor=indoor, outdoor=outdoor, power=power, vibration=vibration, flow=flow)
    keep = np.isfinite(m["indoor"]) & np.isfinite(m["outdoor"]) & np.isfinite(m["power"]) & np.isfinite(m["vibration"])
    flow_h = m["flow"][keep] if m["flow"] is not None else None
    if flow_h is not None and not np.isfinite(flow_h).all():
        flow_h = np.nan_to_num(flow_h, nan=float(np.nanmean(flow_h)) if np.isfinite(flow_h).any() else 0.0)
    return HourlySeries(hours[keep], m["indoor"][keep], m["outdoor"][keep], m["power"][keep], m["vibration"][keep],
                        flow_h)


def register_of(attrs: dict, bom: list[dict], climate: Climate):
    """(``Register`` for the analysis, ``twin.model.Building`` for the calibration)."""
    building = building_for_model(attrs, bom, climate)
    b = attrs["building"]
    reg = Register(floor_area_m2=float(b["floor_area_m2"]), u_value_w_m2k=float(b["u_value_w_m2k"]),
                   cop_rated=float(building.cop_rated), water_system=bool(b.get("water_system")))
    return reg, building


def calibration_of(obs: Observations, building) -> dict | None:
    """The twin's calibration as a dict, or None when the window cannot calibrate it
    (a heat pump that saturates all the time leaves no heat-loss signal, for one)."""
    try:
        return calibrate(obs, building).as_dict()
    except CalibrationError:
        return None


def intensity(series: HourlySeries, reg: Register) -> float:
    """kWh per heating degree-day per 100 m2: what peers are compared on."""
    return float(baseline(series, reg, ()).get("kwh_per_hdd_per_100m2"))


def evidence(home_id: str, region: str, reg: Register, building, series: HourlySeries, obs: Observations | None,
             peer_intensity: Sequence[float]) -> Evidence:
    cal = calibration_of(obs, building) if obs is not None else None
    return Evidence(home_id, region, reg, series, cal, list(peer_intensity))
