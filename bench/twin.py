"""Benchmarks of the twin service, each beside a baseline from the same run:

- ``api``: p50/p99 of get-twin and list (plain, filtered, searched) over real HTTP
  (uvicorn on loopback, one client) with a city of ``homes`` twins holding live state;
  baseline: the unauthenticated ``/health`` endpoint of the same server (the floor of
  the framework, the socket and the client);
- ``what-if``: calibration on a week of one-minute telemetry and a one-year what-if
  (baseline and scenario); baseline: the simulator stepping the same home for a year
  at the same 15-minute step;
- ``dashboard``: under ``homes`` simulated live through the local stack, the city
  stream's update interval (p50/p99) and the readings/s it reports against what the
  simulator produced.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np


def _percentiles(samples: list[float]) -> dict:
    a = np.array(samples) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(samples)}


def bench_api(settings, homes: int = 10_000, requests: int = 1000) -> dict:
    import httpx
    import uvicorn

    from ecoretrofit.processes import free_port, http_ok
    from twin.auth import Tokens
    from twin.city import build_city
    from twin.service import create_app

    t0 = time.perf_counter()
    city = build_city(homes, settings.regions, settings.seed)
    build_s = time.perf_counter() - t0
    for row in city.sim.tick():  # every twin online with live state
        city.store.apply("telemetry", row)
    tokens = Tokens.for_data_dir(settings.data_dir)

    class NoHistory:
        def telemetry(self, *a):
            return []

    app = create_app(city.store, tokens, NoHistory(), city.building_of)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not http_ok(f"http://127.0.0.1:{port}/health") and time.monotonic() < deadline:
            time.sleep(0.1)
        rng = np.random.default_rng(1)
        auth = {"Authorization": f"Bearer {tokens.read}"}
        out: dict[str, dict] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=30) as c:
            cases = {
                "health (baseline)": lambda i: c.get("/health"),
                "get twin": lambda i: c.get(f"/twins/{city.sim.home_ids[int(rng.integers(homes))]}"),
                "list, page of 50": lambda i: c.get("/twins", params={"limit": 50, "offset": int(rng.integers(homes - 50))}),
                "list, region + status": lambda i: c.get("/twins", params={"region": settings.regions[i % len(settings.regions)],
                                                                           "status": "online", "limit": 50}),
                "search by street": lambda i: c.get("/twins", params={"q": "oak lane", "limit": 50}),
            }
            for name, call in cases.items():
                n = requests if name in ("health (baseline)", "get twin") else max(50, requests // 5)
                for i in range(10):  # warm-up
                    call(i)
                samples = []
                for i in range(n):
                    t = time.perf_counter()
                    r = call(i)
                    samples.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        raise RuntimeError(f"{name}: HTTP {r.status_code}")
                out[name] = _percentiles(samples)
        base = out["health (baseline)"]["p50_ms"]
        for v in out.values():
            v["x_baseline_p50"] = v["p50_ms"] / base
        return {"homes": homes, "build_s": build_s, "endpoints": out}
    finally:
        server.should_exit = True
        thread.join(10)


def bench_what_if(settings) -> dict:
    from producers.simulator import CitySimulator
    from twin.model import Building, Climate, Scenario, calibrate, observe, sim_climate, u_value_of, what_if

    start = 1_704_067_200_000
    sim = CitySimulator(4, settings.regions, settings.seed, start, step_ms=60_000)
    obs = observe(sim, 0, 7 * 1440)
    cm, cs, cd = sim_climate(sim)
    home = Building(u_value_w_m2k=u_value_of(sim.insulation[0]), size=float(sim.size[0]), cop_rated=3.2,
                    pump_w=100.0 if sim.has_water[0] else 0.0, climate=Climate(float(cm[0]), float(cs[0]), float(cd[0])))
    t = time.perf_counter()
    cal = calibrate(obs, home)
    calibrate_s = time.perf_counter() - t
    t = time.perf_counter()
    r = what_if(cal, Scenario(u_value_w_m2k=0.25, pv_kwp=4.0, horizon_days=365))
    year_s = time.perf_counter() - t
    # baseline: the simulator itself, one home, a year of 15-minute ticks
    one = CitySimulator(1, settings.regions[:1], settings.seed, start, step_ms=900_000)
    t = time.perf_counter()
    for _ in range(365 * 96):
        one.tick_columns()
    sim_s = time.perf_counter() - t
    return {"calibrate_s": calibrate_s, "what_if_year_s": year_s, "simulator_year_s": sim_s,
            "ratio": year_s / sim_s, "calibration_error_pct": cal.energy_error_pct,
            "saved_kwh": r.baseline.kwh - r.scenario.kwh}


def bench_dashboard(settings, homes: int = 1000, seconds: float = 30.0) -> dict:
    """The city stream under a live city of ``homes`` (the stack must be up)."""
    import httpx

    from ecoretrofit import processes
    from twin.auth import Tokens

    sim = processes.start_cli(settings, "bench-twin-simulate",
                              ["simulate", "--homes", str(homes), "--duration", str(seconds + 15), "--quiet"])
    tokens = Tokens.for_data_dir(settings.data_dir)
    intervals, rates, sizes = [], [], []
    try:
        time.sleep(8.0)  # the simulator reaches its pace
        url = f"http://{settings.bind_host}:{settings.port('twin')}/city/stream"
        with httpx.stream("GET", url, headers={"Authorization": f"Bearer {tokens.read}"}, timeout=30) as res:
            last, t_end, buf = None, time.monotonic() + seconds, ""
            for chunk in res.iter_text():
                buf += chunk
                while "\n\n" in buf:
                    frame, buf = buf.split("\n\n", 1)
                    data = next((ln[6:] for ln in frame.split("\n") if ln.startswith("data: ")), None)
                    if data is None:
                        continue
                    now = time.monotonic()
                    if last is not None:
                        intervals.append(now - last)
                        rates.append(json.loads(data)["readings_per_s"])
                    sizes.append(len(data))
                    last = now
                if time.monotonic() > t_end:
                    break
    finally:
        sim.stop()
    return {"homes": homes, "updates": len(intervals), "updates_per_s": len(intervals) / seconds,
            "interval": _percentiles(intervals), "readings_per_s_reported_median": float(np.median(rates[1:])) if len(rates) > 1 else 0.0,
            "readings_per_s_produced": float(homes), "event_bytes_median": float(np.median(sizes)) if sizes else 0.0}


def print_twin(r: dict) -> None:
    if "api" in r:
        a = r["api"]
        print(f"twin api  {a['homes']:,} twins (built in {a['build_s']:.1f}s), one client over loopback HTTP:")
        for name, v in a["endpoints"].items():
            print(f"          {name:<24} p50 {v['p50_ms']:>7.2f} ms  p99 {v['p99_ms']:>7.2f} ms  "
                  f"x{v['x_baseline_p50']:.1f} of /health")
    if "what_if" in r:
        w = r["what_if"]
        print(f"twin what-if  calibrate (7 days, 1-min) {w['calibrate_s']:.2f}s; one-year what-if {w['what_if_year_s']:.2f}s "
              f"vs the simulator stepping one home for a year {w['simulator_year_s']:.2f}s (x{w['ratio']:.2f})")
    if "dashboard" in r:
        d = r["dashboard"]
        print(f"twin dashboard  {d['homes']:,} homes live: {d['updates_per_s']:.2f} updates/s, interval p50 "
              f"{d['interval']['p50_ms']:.0f} ms p99 {d['interval']['p99_ms']:.0f} ms; readings/s shown "
              f"{d['readings_per_s_reported_median']:.0f} vs {d['readings_per_s_produced']:.0f} produced; "
              f"{d['event_bytes_median'] / 1000:.0f} kB per update")
