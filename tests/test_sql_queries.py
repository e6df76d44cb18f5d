"""The named SQL queries of sinks/queries/ against the real local stack.

Each query runs the way ``ecoretrofit query NAME --param …`` runs it (the file, its
declared defaults, ClickHouse query parameters bound by the server) on readings
inserted straight into ``telemetry`` (which feeds the roll-ups), and is checked
against the same computation done in Python: the stream processor's own RollingZScore
for ``zscore``, a leave-one-out percentile for ``quantile_outliers``, kWh per
degree-day for ``inefficient_homes``. Every test uses its own regions.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from processors.detectors.zscore import RollingZScore
from sinks import named_queries, warehouse
from helpers import unique

REPO = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc
COLUMNS = [
    "home_id", "region", "ts", "seq", "indoor_temp_c", "outdoor_temp_c", "power_w", "energy_kwh",
    "voltage_v", "vibration_mm_s", "water_flow_lpm", "water_temp_c", "uv_intensity_mw_cm2",
    "pump_pressure_bar", "kafka_partition", "kafka_offset",
]
FMT = "%Y-%m-%d %H:%M:%S"




def row(region, home, ts, seq, **values) -> dict:
    base = {"home_id": home, "region": region, "ts": ts, "seq": seq, "indoor_temp_c": 21.0,
            "outdoor_temp_c": 5.0, "power_w": 500.0, "energy_kwh": 1000.0, "voltage_v": 230.0,
            "vibration_mm_s": 0.5, "water_flow_lpm": None, "water_temp_c": None,
            "uv_intensity_mw_cm2": None, "pump_pressure_bar": None, "kafka_partition": 0, "kafka_offset": seq}
    base.update(values)
    return base


def insert(client, rows: list[dict]) -> None:
    client.insert("telemetry", [[r[c] for c in COLUMNS] for r in rows], column_names=COLUMNS)


def run_named(client, settings, name: str, **params) -> list[dict]:
    """A named query as the CLI runs it: declared defaults, then the given parameters."""
    q = named_queries.load_named(name)
    res = client.query(q.sql(settings), parameters=q.bind({k: str(v) for k, v in params.items()}))
    return [dict(zip(res.column_names, r)) for r in res.result_rows]


def naive(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo else ts


# The meter's rise between the last reading of an hour and the first of the next: it
# belongs to the later hour (the roll-ups count every increment once).
BETWEEN_HOURS_KWH = 0.05


def hourly_series(region, homes, start_hour, hours, per_hour, energy, temp, seed) -> list[dict]:
    """``per_hour`` readings per home and hour whose meter rises by exactly
    ``energy(home_index, hour)`` kWh within each hour, plus BETWEEN_HOURS_KWH from one
    hour to the next (so an hour after the first meters ``energy + BETWEEN_HOURS_KWH``),
    outdoor temperature ``temp(home_index, hour, i)``, random distinct power."""
    rng = random.Random(seed)
    step = 3600 // per_hour
    rows = []
    for hi, home in enumerate(homes):
        meter = 1000.0 + 100 * hi
        seq = 0
        for k in range(hours):
            e = energy(hi, k)
            for i in range(per_hour):
                ts = start_hour + dt.timedelta(hours=k, seconds=i * step)
                rows.append(row(region, home, ts, seq, energy_kwh=meter, outdoor_temp_c=temp(hi, k, i),
                                power_w=rng.uniform(100, 5000)))
                seq += 1
                if i < per_hour - 1:
                    meter += e / (per_hour - 1)
            meter += BETWEEN_HOURS_KWH
    return rows


def leave_one_out_quantile(values: list[float], i: int, q: float) -> float:
    peers = sorted(values[:i] + values[i + 1:])
    pos = q * (len(peers) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(peers) - 1)
    return peers[lo] + (pos - lo) * (peers[hi] - peers[lo])


# -------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def client(stack_settings):
    return warehouse.connect(stack_settings)


@pytest.fixture(scope="module")
def energy_data(client):
    """Regions A and B of 30 homes and C of 5, six hours from an hour one day ago, 12
    readings per home and hour. Normal hourly energy is 0.8-1.2 kWh; planted outliers:
    A/H003 in hour 2, A/H007 in hour 4, B/H005 in hour 2, C/H001 in hour 1."""
    start = (dt.datetime.now(UTC) - dt.timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    regions = {"A": unique("qa"), "B": unique("qb"), "C": unique("qc")}
    planted = {("A", 3, 2): 3.0, ("A", 7, 4): 3.0, ("B", 5, 2): 2.6, ("C", 1, 1): 5.0}
    rng = random.Random(42)
    energies = {}
    rows = []
    for key, region in regions.items():
        homes = [f"H{i:03d}" for i in range(30 if key != "C" else 5)]
        e = {(h, k): planted.get((key, h, k), rng.uniform(0.8, 1.2)) for h in range(len(homes)) for k in range(6)}
        rows += hourly_series(region, homes, start, 6, 12, lambda h, k, e=e: e[(h, k)],
                              lambda h, k, i: 5.0, seed=ord(key))
        for (h, k), v in e.items():
            energies[(region, homes[h], naive(start + dt.timedelta(hours=k)))] = v + (BETWEEN_HOURS_KWH if k else 0.0)
    insert(client, rows)
    return {"start": start, "until": start + dt.timedelta(hours=6), "regions": regions,
            "energies": energies, "rows": rows,
            "planted": {(regions[r], f"H{h:03d}", naive(start + dt.timedelta(hours=k))) for r, h, k in planted}}


# ----------------------------------------------------------------------- zscore
def test_zscore_equals_streaming_detector(client, stack_settings):
    """Same series, same window (the N readings BEFORE each one), same warm-up: the SQL
    z-score equals RollingZScore's within 1e-6, per home and metric, NULLs skipped."""
    region = unique("zs")
    start = (dt.datetime.now(UTC) - dt.timedelta(hours=3)).replace(microsecond=0)
    rng = random.Random(7)
    rows = []
    for home, level in (("HZ1", 1000.0), ("HZ2", 3000.0)):
        for i in range(900):
            power = level + rng.gauss(0, 40) + (4000 if i in (300, 301, 650) else 0)
            flow = None if i % 13 == 0 else 3.0 + rng.gauss(0, 0.2) + (9 if i == 500 else 0)
            rows.append(row(region, home, start + dt.timedelta(seconds=i), i, power_w=power, water_flow_lpm=flow))
    random.Random(1).shuffle(rows)  # insertion order must not matter, ts order does
    insert(client, rows)
    rows.sort(key=lambda r: (r["home_id"], r["ts"]))
    until = (start + dt.timedelta(seconds=900)).strftime(FMT)

    def streaming(metric, window, warmup):
        out = {}
        for home in ("HZ1", "HZ2"):
            det = RollingZScore(window=window, warmup=warmup)
            for r in rows:
                x = r[metric]
                if r["home_id"] != home or x is None:
                    continue
                ev = det.evidence()
                out[(home, naive(r["ts"]))] = (det.zscore(x), ev)
                det.learn_one(x)  # score, then learn
        return out

    for metric in ("power_w", "water_flow_lpm"):
        want = streaming(metric, 60, 20)
        got = run_named(client, stack_settings, "zscore", region=region, metric=metric, window=60, warmup=20,
                        threshold=0, since=start.strftime(FMT), until=until, lookback_minutes=0)
        assert len(got) == len(want) == (1800 if metric == "power_w" else 1800 - 2 * 70)
        for g in got:
            z, ev = want[(g["home_id"], naive(g["ts"]))]
            assert g["metric"] == metric and g["window_count"] == ev.count
            if z is None:
                assert g["zscore"] is None
            else:
                assert abs(g["zscore"] - z) < 1e-6
                assert g["window_mean"] == pytest.approx(ev.mean, rel=1e-12)
                assert g["window_std"] == pytest.approx(ev.std, rel=1e-9)
                assert g["score"] == pytest.approx(math.erf(abs(z) / math.sqrt(2)), abs=1e-9)

    # the default window and warm-up (the processor's 120 / 30) and threshold 4: the spikes
    want = streaming("power_w", 120, 30)
    flagged = {k for k, (z, _) in want.items() if z is not None and abs(z) >= 4}
    assert {i for _, i in {(h, int((t - naive(start)).total_seconds())) for h, t in flagged}} >= {300, 650}
    got = run_named(client, stack_settings, "zscore", region=region, since=start.strftime(FMT), until=until)
    assert {(g["home_id"], naive(g["ts"])) for g in got} == flagged
    assert all(abs(g["zscore"]) >= 4 for g in got)

    # reporting from the middle of the series: the look-back fills the first windows
    mid = start + dt.timedelta(seconds=450)
    got = run_named(client, stack_settings, "zscore", region=region, home="HZ2", threshold=0,
                    since=mid.strftime(FMT), until=until, lookback_minutes=10)
    assert len(got) == 450
    for g in got:
        z, ev = want[("HZ2", naive(g["ts"]))]
        assert g["window_count"] == 120 and abs(g["zscore"] - z) < 1e-6

    # parameters are checked even where no reading matches
    for name, bad in (("zscore", {"metric": "energy_kwh"}), ("zscore", {"window": 1}),
                      ("hourly_energy", {"by": "city"}), ("quantile_outliers", {"quantile": 1.5})):
        with pytest.raises(Exception, match="must be"):
            run_named(client, stack_settings, name, region=unique("nothing"), **bad)


# ------------------------------------------------------------ quantile_outliers
def test_quantile_outliers_find_planted_hours_only(client, stack_settings, energy_data):
    d = energy_data
    span = {"since": d["start"].strftime(FMT), "until": d["until"].strftime(FMT)}
    found = set()
    for region in d["regions"].values():
        got = run_named(client, stack_settings, "quantile_outliers", region=region, ratio=1.5, **span)
        found |= {(g["region"], g["home_id"], naive(g["hour"])) for g in got}
    planted_c = {p for p in d["planted"] if p[0] == d["regions"]["C"]}
    assert found == d["planted"] - planted_c  # region C has 5 homes: below min_homes = 10
    got = run_named(client, stack_settings, "quantile_outliers", region=d["regions"]["C"], ratio=1.5,
                    min_homes=5, **span)
    assert {(g["region"], g["home_id"], naive(g["hour"])) for g in got} == planted_c

    # every home-hour (ratio 0) against a leave-one-out percentile computed here
    region = d["regions"]["A"]
    got = run_named(client, stack_settings, "quantile_outliers", region=region, ratio=0, limit=10_000, **span)
    assert len(got) == 30 * 6
    by_hour = defaultdict(dict)
    for (r, home, hour), e in d["energies"].items():
        if r == region:
            by_hour[hour][home] = e
    for g in got:
        homes = by_hour[naive(g["hour"])]
        names = sorted(homes)
        want = leave_one_out_quantile([homes[h] for h in names], names.index(g["home_id"]), 0.99)
        assert g["energy_kwh"] == pytest.approx(homes[g["home_id"]], rel=1e-9)
        assert g["peers_quantile_kwh"] == pytest.approx(want, rel=1e-9)
        assert g["region_homes"] == 30


# ------------------------------------------------------------ inefficient_homes
def test_inefficient_homes_rank_planted_homes(client, stack_settings):
    """20 homes over two cold days; homes 4 and 11 use 1.8x the energy per degree-day
    of their peers (0.9-1.1x): they, and only they, are the region's inefficient homes."""
    region = unique("ineff")
    start = (dt.datetime.now(UTC) - dt.timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    rng = random.Random(3)
    homes = [f"H{i:03d}" for i in range(20)]
    k = {h: (1.8 if h in (4, 11) else rng.uniform(0.9, 1.1)) for h in range(20)}
    temp = {(h, hr, i): 6 + 4 * math.sin(hr / 24 * 2 * math.pi) + rng.gauss(0, 0.5)
            for h in range(20) for hr in range(48) for i in range(6)}

    def hour_mean(h, hr):
        return sum(temp[(h, hr, i)] for i in range(6)) / 6

    rows = hourly_series(region, homes, start, 48, 6, lambda h, hr: 0.2 + 0.1 * k[h] * (18 - hour_mean(h, hr)),
                         lambda h, hr, i: temp[(h, hr, i)], seed=9)
    insert(client, rows)
    span = {"since": start.strftime(FMT), "until": (start + dt.timedelta(hours=48)).strftime(FMT)}

    got = run_named(client, stack_settings, "inefficient_homes", region=region, min_ratio=1.3, **span)
    assert [(g["rank"], g["home_id"]) for g in got] == [(1, "H011"), (2, "H004")] or \
        [(g["rank"], g["home_id"]) for g in got] == [(1, "H004"), (2, "H011")]

    # kWh per degree-day of every home, as computed here
    got = {g["home_id"]: g for g in run_named(client, stack_settings, "inefficient_homes", region=region,
                                               top=100, min_ratio=0, **span)}
    assert len(got) == 20
    per_hdd = {}
    for h, home in enumerate(homes):
        energy = sum(0.2 + 0.1 * k[h] * (18 - hour_mean(h, hr)) for hr in range(48)) + 47 * BETWEEN_HOURS_KWH
        hdd = sum(max(0.0, 18 - hour_mean(h, hr)) for hr in range(48)) / 24
        per_hdd[home] = energy / hdd
        assert got[home]["energy_kwh"] == pytest.approx(energy, rel=1e-9)
        assert got[home]["hdd"] == pytest.approx(hdd, rel=1e-9)
        assert got[home]["kwh_per_hdd"] == pytest.approx(energy / hdd, rel=1e-9)
        assert got[home]["hours"] == 48
    values = sorted(per_hdd.values())
    median = (values[9] + values[10]) / 2
    assert all(g["region_median_kwh_per_hdd"] == pytest.approx(median, rel=1e-9) for g in got.values())
    assert [h for h, _ in sorted(per_hdd.items(), key=lambda kv: -kv[1])] == \
        [h for h, _ in sorted(got.items(), key=lambda kv: kv[1]["rank"])]
    # a warm base temperature leaves no degree-days: nobody is ranked
    assert run_named(client, stack_settings, "inefficient_homes", region=region, base_c=-5, **span) == []


# ------------------------------------------------- daily_peaks, hourly_energy
def test_daily_peaks_and_hourly_energy_from_rollups(client, stack_settings, energy_data):
    d = energy_data
    region = d["regions"]["A"]
    mine = [r for r in d["rows"] if r["region"] == region]
    by_day = defaultdict(lambda: defaultdict(list))
    for r in mine:
        by_day[r["ts"].date()][r["home_id"]].append(r)
    got = run_named(client, stack_settings, "daily_peaks", region=region, top=3,
                    since=d["start"].date().isoformat(), until=(d["until"].date() + dt.timedelta(days=1)).isoformat())
    want = []
    for day in sorted(by_day):
        peaks = sorted(((max(rs, key=lambda r: r["power_w"]), h) for h, rs in by_day[day].items()),
                       key=lambda p: (-p[0]["power_w"], p[1]))[:3]
        want += [(day, h, p["power_w"], naive(p["ts"])) for p, h in peaks]
    assert [(g["day"], g["home_id"], g["power_peak_w"], naive(g["peak_at"])) for g in got] == want

    span = {"since": d["start"].strftime(FMT), "until": d["until"].strftime(FMT)}
    homes = run_named(client, stack_settings, "hourly_energy", region=region, **span)
    assert len(homes) == 30 * 6
    for g in homes:
        assert g["energy_kwh"] == pytest.approx(d["energies"][(region, g["home_id"], naive(g["hour"]))], rel=1e-9)
        assert g["readings"] == 12
    regions = run_named(client, stack_settings, "hourly_energy", by="region", region=region, **span)
    assert len(regions) == 6
    for g in regions:
        want = sum(e for (r, _, hour), e in d["energies"].items() if r == region and hour == naive(g["hour"]))
        assert (g["home_id"], g["homes"], g["readings"]) == ("", 30, 360)
        assert g["energy_kwh"] == pytest.approx(want, rel=1e-9)


# ---------------------------------------------------------------------- the CLI
def test_query_cli_lists_and_runs_each_named_query(stack_settings, energy_data, monkeypatch, capsys):
    from ecoretrofit import cli

    d = energy_data
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ECO_")}, **stack_settings.env()}
    listing = subprocess.run([sys.executable, "-m", "ecoretrofit.cli", "query", "--list"], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    for name in ("zscore", "quantile_outliers", "inefficient_homes", "daily_peaks", "hourly_energy"):
        assert f"\n{name}: " in "\n" + listing.stdout
    assert "--param window" in listing.stdout and "default 120" in listing.stdout

    # one real subprocess, JSON out
    span = ["--param", f"since={d['start'].strftime(FMT)}", "--param", f"until={d['until'].strftime(FMT)}"]
    region = d["regions"]["A"]
    proc = subprocess.run(
        [sys.executable, "-m", "ecoretrofit.cli", "query", "quantile_outliers", "--param", f"region={region}",
         "--param", "ratio=1.5", *span, "--format", "json"],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    flagged = {(r["home_id"], naive(dt.datetime.fromisoformat(r["hour"]))) for r in json.loads(proc.stdout)}
    assert flagged == {(h, t) for r, h, t in d["planted"] if r == region}

    # the rest in-process (same code path), CSV out
    for k in [k for k in os.environ if k.startswith("ECO_")]:
        monkeypatch.delenv(k)
    for k, v in stack_settings.env().items():
        monkeypatch.setenv(k, v)
    runs = {
        "zscore": ["--param", f"region={region}", "--param", "threshold=0", "--param", "home=H001", *span],
        "inefficient_homes": ["--param", f"region={region}", "--param", "min_ratio=0", *span],
        "daily_peaks": ["--param", f"region={region}", "--param", "days=3"],
        "hourly_energy": ["--param", f"region={region}", "--param", "by=region", *span],
        "quantile_outliers": ["--param", f"region={region}", "--param", "ratio=1.5", *span],
    }
    for name, args in runs.items():
        assert cli.main(["query", name, *args, "--format", "csv"]) == 0, name
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) > 1, name
        if name == "zscore":
            assert lines[0].startswith("region,home_id,metric,ts,value") and len(lines) == 1 + 72
        if name == "hourly_energy":
            assert len(lines) == 1 + 6
    # a parameter the query does not declare is refused, naming the ones it has
    assert cli.main(["query", "daily_peaks", "--param", "hours=3"]) == 1
    assert "has no parameter hours" in capsys.readouterr().err
