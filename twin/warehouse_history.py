"""Twin history from the warehouse: hourly roll-ups for charts (the named query
``hourly_energy``), 5-minute means of the raw readings (kept 7 days) to calibrate the
what-if model. Thin adapter over clickhouse-connect; the SQL is built by pure code."""

from __future__ import annotations

import datetime as dt

import numpy as np

from sinks.named_queries import load_named
from sinks.warehouse import connect
from twin.model import Observations

CALIBRATION_DAYS = 7  # the raw table's retention
BIN_MS = 300_000


def iso(ms: int) -> str:
    """``iso(0) == '1970-01-01 00:00:00.000'``: what the named queries parse."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def observations_sql(database: str) -> str:
    """5-minute means of one home's readings in [since, until), oldest first."""
    return f"""
        SELECT intDiv(toUnixTimestamp64Milli(ts), {BIN_MS}) * {BIN_MS} + {BIN_MS // 2} AS t,
               avg(indoor_temp_c), avg(outdoor_temp_c), avg(power_w), avg(water_flow_lpm)
        FROM {database}.telemetry
        WHERE region = {{region:String}} AND home_id = {{home:String}}
          AND ts >= fromUnixTimestamp64Milli({{since:Int64}}) AND ts < fromUnixTimestamp64Milli({{until:Int64}})
        GROUP BY t ORDER BY t"""


RECENT_METRICS = ("indoor_temp_c", "outdoor_temp_c", "power_w", "voltage_v", "vibration_mm_s", "water_flow_lpm",
                  "water_temp_c", "uv_intensity_mw_cm2", "pump_pressure_bar")


def recent_sql(database: str) -> str:
    """One-minute means of every metric of one home in [since, until), oldest first."""
    cols = ", ".join(f"avg({m}) AS {m}" for m in RECENT_METRICS)
    return f"""
        SELECT intDiv(toUnixTimestamp64Milli(ts), 60000) * 60000 AS t, {cols}
        FROM {database}.telemetry
        WHERE region = {{region:String}} AND home_id = {{home:String}}
          AND ts >= fromUnixTimestamp64Milli({{since:Int64}}) AND ts < fromUnixTimestamp64Milli({{until:Int64}})
        GROUP BY t ORDER BY t"""


def daily(rows: list[dict]) -> list[dict]:
    """Hourly rows folded into days: energy summed, power averaged, peak kept.

    >>> daily([{"t": 0, "energy_kwh": 1.0, "power_avg_w": 100.0, "power_max_w": 300.0, "indoor_avg_c": 20.0,
    ...         "outdoor_avg_c": 5.0, "readings": 3600},
    ...        {"t": 3_600_000, "energy_kwh": 2.0, "power_avg_w": 300.0, "power_max_w": 900.0, "indoor_avg_c": 21.0,
    ...         "outdoor_avg_c": 7.0, "readings": 3600}])[0]["energy_kwh"]
    3.0
    """
    days: dict[int, list[dict]] = {}
    for r in rows:
        days.setdefault(r["t"] // 86_400_000 * 86_400_000, []).append(r)
    out = []
    for t, rs in sorted(days.items()):
        w = np.array([r["readings"] for r in rs], dtype=float)
        mean = lambda k: float(np.average([r[k] for r in rs], weights=w)) if w.sum() else None  # noqa: E731
        out.append({"t": t, "energy_kwh": sum(r["energy_kwh"] for r in rs), "power_avg_w": mean("power_avg_w"),
                    "power_max_w": max(r["power_max_w"] for r in rs), "indoor_avg_c": mean("indoor_avg_c"),
                    "outdoor_avg_c": mean("outdoor_avg_c"), "readings": int(w.sum())})
    return out


class WarehouseHistory:
    """``twin.service.History`` over ClickHouse (the local warehouse service or a server)."""

    def __init__(self, settings, region_of):
        self.settings = settings
        self.region_of = region_of  # home id -> region (the primary key's prefix)
        self._client = None
        self._hourly = load_named("hourly_energy")

    @property
    def client(self):
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def _rows(self, params: dict) -> list[dict]:
        q = self._hourly
        res = self.client.query(q.sql(self.settings), parameters=q.bind(params))
        out = []
        for r in res.named_results():
            hour = r["hour"]
            t = int(hour.replace(tzinfo=dt.timezone.utc).timestamp() * 1000) if hour.tzinfo is None else \
                int(hour.timestamp() * 1000)
            out.append({"t": t, "region": r["region"], "energy_kwh": float(r["energy_kwh"] or 0.0),
                        "power_avg_w": r["power_avg_w"], "power_max_w": r["power_max_w"],
                        "indoor_avg_c": r["indoor_avg_c"], "outdoor_avg_c": r["outdoor_avg_c"],
                        "readings": int(r["readings"])})
        return out

    def telemetry(self, home_id: str, start_ms: int, end_ms: int, step: str) -> list[dict]:
        rows = self._rows({"by": "home", "home": home_id, "region": self.region_of(home_id),
                           "since": iso(start_ms), "until": iso(end_ms), "limit": "20000"})
        for r in rows:
            r.pop("region")
        return daily(rows) if step == "day" else rows

    def regions(self, start_ms: int, end_ms: int) -> list[dict]:
        """Energy per region and hour (the city page's chart)."""
        return self._rows({"by": "region", "since": iso(start_ms), "until": iso(end_ms), "limit": "20000"})

    def recent(self, home_id: str, start_ms: int, end_ms: int) -> dict:
        """Per-minute series of every metric: {"t": [...], metric: [...]}, None where absent."""
        res = self.client.query(recent_sql(self.settings.clickhouse_database), parameters={
            "region": self.region_of(home_id), "home": home_id, "since": start_ms, "until": end_ms})
        out: dict[str, list] = {"t": []}
        for m in RECENT_METRICS:
            out[m] = []
        for row in res.result_rows:
            out["t"].append(int(row[0]))
            for m, v in zip(RECENT_METRICS, row[1:]):
                out[m].append(None if v is None or v != v else round(float(v), 3))
        return out

    def observations(self, home_id: str, end_ms: int) -> Observations:
        res = self.client.query(observations_sql(self.settings.clickhouse_database), parameters={
            "region": self.region_of(home_id), "home": home_id,
            "since": end_ms - CALIBRATION_DAYS * 86_400_000, "until": end_ms})
        rows = res.result_rows
        a = np.array([[np.nan if v is None else float(v) for v in r] for r in rows], dtype=float).reshape(-1, 5)
        flow = a[:, 4] if len(a) and np.isfinite(a[:, 4]).any() else None
        return Observations(a[:, 0].astype(np.int64), a[:, 1], a[:, 2], a[:, 3], flow)
