"""``ecoretrofit eval explain``: does the deterministic analysis name the true cause?

A city whose homes get known causes of inefficiency (``producers.causes``, a share
``--fraction`` of homes, one cause each) runs for ``--days`` simulated January days at
one reading per minute. Each home's evidence is assembled by ``assistant.evidence`` (the
path the assistant's tools take) and analysed by ``assistant.analysis.analyse`` (what
``ecoretrofit explain`` runs). Scored per cause: top-1 (the first finding is the true
cause) and top-3 accuracy; on homes without a cause, the false-cause rate: the share
with any finding that is not true of the home. A home the simulator built without a
night set-back (about 40% of homes) truly has no set-back, so that finding is true of
it, not false.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from assistant.analysis import analyse
from assistant.evidence import evidence, hourly_series, intensity, register_of
from maintenance.fleet import Fleet
from producers.causes import CAUSES, CausePlan
from producers.simulator import CitySimulator
from twin.attributes import register
from twin.model import Climate, Observations, sim_climate

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z: heating season
STEP_MS = 60_000
CALIBRATION_BIN_MS = 300_000


def _bin(a: np.ndarray, k: int) -> np.ndarray:
    n = a.shape[0] // k * k
    return a[:n].reshape(n // k, k, *a.shape[1:]).mean(axis=1)


def evaluate(homes: int, days: float, seed: int, fraction: float, regions, progress=None) -> dict:
    ids = [f"H{i:06d}" for i in range(homes)]
    plan = CausePlan.random(ids, seed=seed, fraction=fraction)
    sim = CitySimulator(homes, regions, seed, START_MS, step_ms=STEP_MS, causes=plan)
    ticks = int(days * 1440)
    names = ("ts", "indoor_temp_c", "outdoor_temp_c", "power_w", "vibration_mm_s", "water_flow_lpm")
    cols = {k: np.empty((ticks, homes)) for k in names}
    for t in range(ticks):
        c = sim.tick_columns()
        for k in names:
            cols[k][t] = c[k]
    # what the warehouse would return: 5-minute means for the calibration, hourly means
    k5 = CALIBRATION_BIN_MS // STEP_MS
    five = {k: _bin(v, k5) for k, v in cols.items()}
    reg_entries = register(sim, START_MS)
    boms: dict[str, list[dict]] = {}
    for a in Fleet(seed, sim.home_ids, sim.home_regions, sim.has_water, START_MS).register():
        boms.setdefault(a["home_id"], []).append(a)
    cm, cs, cd = sim_climate(sim)

    regs, series, obs = [], [], []
    for i, h in enumerate(ids):
        reg, building = register_of(reg_entries[h], boms.get(h, []), Climate(float(cm[i]), float(cs[i]), float(cd[i])))
        flow = cols["water_flow_lpm"][:, i] if sim.has_water[i] else None
        series.append(hourly_series(cols["ts"][:, i], cols["indoor_temp_c"][:, i], cols["outdoor_temp_c"][:, i],
                                    cols["power_w"][:, i], cols["vibration_mm_s"][:, i], flow))
        obs.append(Observations(five["ts"][:, i].astype(np.int64), five["indoor_temp_c"][:, i],
                                five["outdoor_temp_c"][:, i], five["power_w"][:, i],
                                five["water_flow_lpm"][:, i] if sim.has_water[i] else None))
        regs.append((reg, building))
    by_region: dict[str, list[float]] = {}
    for i, h in enumerate(ids):
        by_region.setdefault(sim.home_regions[i], []).append(intensity(series[i], regs[i][0]))

    per = {c: {"homes": 0, "top1": 0, "top3": 0} for c in CAUSES}
    none = {"homes": 0, "false": 0}
    confusion: dict[str, dict[str, int]] = {}
    homes_out = []
    for i, h in enumerate(ids):
        ev = evidence(h, sim.home_regions[i], regs[i][0], regs[i][1], series[i], obs[i], by_region[sim.home_regions[i]])
        a = analyse(ev)
        truth = plan.cause_of(h)
        found = a.causes
        natural = {"no_setback"} if sim.setback[i] == 0 else set()
        if truth is None:
            none["homes"] += 1
            wrong = [c for c in found if c not in natural]
            none["false"] += bool(wrong)
            label = "none"
        else:
            p = per[truth.cause]
            p["homes"] += 1
            p["top1"] += bool(found) and found[0] == truth.cause
            p["top3"] += truth.cause in found[:3]
            label = truth.cause
        first = found[0] if found else "none"
        confusion.setdefault(label, {}).setdefault(first, 0)
        confusion[label][first] += 1
        homes_out.append({"home_id": h, "truth": label, "found": found})
        if progress and i % 50 == 0:
            progress(i)
    n_caused = sum(p["homes"] for p in per.values())
    return {
        "homes": homes, "days": days, "seed": seed, "fraction": fraction,
        "top1": round(sum(p["top1"] for p in per.values()) / max(n_caused, 1), 4),
        "top3": round(sum(p["top3"] for p in per.values()) / max(n_caused, 1), 4),
        "false_cause_rate": round(none["false"] / max(none["homes"], 1), 4),
        "homes_with_cause": n_caused,
        "homes_without_cause": none["homes"],
        "per_cause": {c: {"homes": p["homes"], "top1": round(p["top1"] / max(p["homes"], 1), 4),
                          "top3": round(p["top3"] / max(p["homes"], 1), 4)} for c, p in per.items()},
        "confusion_top1": confusion,
        "home_results": homes_out,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--homes", type=int, default=240)
    parser.add_argument("--days", type=float, default=7.0, help="simulated days (at least 1; January)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fraction", type=float, default=0.7, help="share of homes given a cause")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings) -> int:
    if args.days < 1 or args.homes < 1:
        print("eval explain: need --days >= 1 and --homes >= 1", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    r = evaluate(args.homes, args.days, args.seed, args.fraction, settings.regions)
    r["seconds"] = round(time.monotonic() - t0, 1)
    if args.json:
        print(json.dumps({k: v for k, v in r.items() if k != "home_results"}, indent=2))
        return 0
    print(f"{r['homes']} homes, {r['days']} days, seed {r['seed']}: {r['homes_with_cause']} with a cause, "
          f"{r['homes_without_cause']} without ({r['seconds']} s)")
    print(f"{'cause':18} {'homes':>5} {'top-1':>6} {'top-3':>6}")
    for c, p in r["per_cause"].items():
        print(f"{c:18} {p['homes']:5d} {p['top1']:6.1%} {p['top3']:6.1%}")
    print(f"{'all':18} {r['homes_with_cause']:5d} {r['top1']:6.1%} {r['top3']:6.1%}")
    print(f"false-cause rate on homes without a cause: {r['false_cause_rate']:.1%}")
    return 0
