"""``ecoretrofit eval maintenance``: the city's components for simulated months, under
three policies on the same seed (so the same homes and the same unit lives):

- ``run-to-failure``: technicians come only when something broke;
- ``fixed-interval``: preventive replacement every ``FIXED_INTERVAL_DAYS`` per type;
- ``predictive``: ``maintenance.workflow.PredictiveWorkflow`` (the code a stream
  processor runs) reads the telemetry, learns from the failures it sees, and opens
  predictive work orders.

Printed: per policy, failures, downtime hours, technician visits and cost; for the
predictive run, the precision and recall of its work orders (true when the asset would
have failed within the horizon without the visit) and their median lead time; and the
MTBF estimated from the work orders (``maintenance.stats``) against the simulator's true
mean life per type. In process, or with ``--through-kafka`` the predictive policy through
the broker and a real ``ecoretrofit maintain`` worker (``evaluation.maintenance_kafka``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from maintenance.assets import ASSET_TYPES, DAY_MS, HOUR_MS
from maintenance.fleet import DEFAULT_PREVENTIVE_DAYS, MaintenanceConfig
from maintenance.stats import reliability
from maintenance.workflow import TYPE_SIGNALS, PredictiveWorkflow, WorkflowConfig

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
#: The fixed-interval policy: replace about when a tenth of the units would have failed.
FIXED_INTERVAL_DAYS = {**DEFAULT_PREVENTIVE_DAYS, "circulation_pump": 2.0 * 365, "inverter": 4.0 * 365,
                       "water_heater": 6.0 * 365, "heat_pump": 6.0 * 365}
POLICIES = ("run-to-failure", "fixed-interval", "predictive")


def policy_config(policy: str, maintenance: MaintenanceConfig | None = None) -> MaintenanceConfig:
    """How the city is maintained under ``policy`` (``maintenance``: its other settings)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    base = maintenance or MaintenanceConfig()
    return MaintenanceConfig(
        technician_delay_ms=base.technician_delay_ms, report_delay_ms=base.report_delay_ms,
        history_years=base.history_years, history_preventive_days=base.history_preventive_days,
        visit_cost=base.visit_cost, downtime_cost_per_hour=base.downtime_cost_per_hour,
        preventive_days=FIXED_INTERVAL_DAYS if policy == "fixed-interval" else {},
    )


def simulate(policy: str, homes: int, days: float, seed: int, regions, step_ms: int = 30 * 60_000,
             maintenance: MaintenanceConfig | None = None, workflow: WorkflowConfig | None = None,
             progress=None, start_ms: int = START_MS) -> dict:
    """One policy over ``days`` simulated days from ``start_ms``; returns the raw
    outcome (pure apart from optional progress callbacks)."""
    from producers.simulator import CitySimulator

    mcfg = policy_config(policy, maintenance)
    sim = CitySimulator(homes, regions, seed, start_ms, step_ms=step_ms, maintenance=mcfg)
    fleet = sim.fleet
    history = fleet.drain_orders()
    orders = list(history)
    wf = None
    requests = []
    if policy == "predictive":
        wf = PredictiveWorkflow(fleet.register(), workflow)
        for o in history:
            wf.on_order(o)
    end = start_ms + int(days * DAY_MS)
    ticks = 0
    while sim.now_ms < end:
        rows = sim.tick()
        new = fleet.drain_orders()
        orders += new
        if wf is not None:
            for o in new:
                wf.on_order(o)
            for r in rows:
                for req in wf.observe(r):
                    install, fail, failed = fleet.current_unit(req.asset_id)
                    fleet.open_order(req.asset_id, req.ts, "predictive", req.source)
                    requests.append({"asset_id": req.asset_id, "ts": req.ts, "fail_ms": fail, "failed": failed,
                                     "p_fail": req.p_fail, "rul_hours": req.rul_hours})
                    for o in fleet.drain_orders():
                        orders.append(o)
                        wf.on_order(o)
        ticks += 1
        if progress and ticks % 480 == 0:
            progress(policy, (sim.now_ms - start_ms) / (end - start_ms))
    return {"policy": policy, "fleet": fleet, "orders": orders, "requests": requests, "start_ms": start_ms,
            "end_ms": sim.now_ms, "config": mcfg, "workflow": wf}


def outcome(run: dict) -> dict:
    """Failures, downtime, visits and cost of a run's simulated period."""
    fleet, cfg, start, end = run["fleet"], run["config"], run["start_ms"], run["end_ms"]
    latest: dict[str, dict] = {}
    for o in run["orders"]:
        if o["opened_ms"] >= start or (o.get("failure_ms") or 0) >= start:
            latest[o["order_id"]] = o
    failures = [f for f in fleet.failures if start <= f.ts < end]
    downtime = 0.0
    visits = parts = 0
    cost = 0.0
    for o in latest.values():
        spec = ASSET_TYPES[o["asset_type"]]
        if o["failure_ms"] is not None:
            downtime += ((o["closed_ms"] or end) - o["failure_ms"]) / HOUR_MS
        elif o["status"] == "closed":
            downtime += (o["closed_ms"] - o["opened_ms"] - cfg.technician_delay_ms) / HOUR_MS
        if o["status"] == "closed":
            visits += 1
            cost += cfg.visit_cost
            if o["replaced"]:
                parts += 1
                cost += spec.part_cost
    cost += sum(ASSET_TYPES[f.asset_type].failure_cost for f in failures)
    cost += downtime * cfg.downtime_cost_per_hour
    by_type = {}
    for f in failures:
        by_type[f.asset_type] = by_type.get(f.asset_type, 0) + 1
    return {"policy": run["policy"], "failures": len(failures), "failures_by_type": by_type,
            "downtime_hours": downtime, "visits": visits, "parts": parts, "cost_eur": cost}


def prediction_quality(run: dict, horizon_days: float) -> dict:
    """Precision/recall of the predictive orders and their lead time, per type and overall."""
    fleet, start, end = run["fleet"], run["start_ms"], run["end_ms"]
    horizon = horizon_days * DAY_MS
    reqs = run["requests"]
    tp = [r for r in reqs if r["failed"] or r["fail_ms"] - r["ts"] <= horizon]
    caught = 0
    missed = []
    by_asset: dict[str, list[int]] = {}
    for r in reqs:
        by_asset.setdefault(r["asset_id"], []).append(r["ts"])
    for f in fleet.failures:
        if not start <= f.ts < end or f.asset_type not in TYPE_SIGNALS:
            continue
        if any(f.ts - horizon <= t <= f.ts for t in by_asset.get(f.asset_id, ())):
            caught += 1
        else:
            missed.append(f)
    leads = [(r["fail_ms"] - r["ts"]) / HOUR_MS for r in tp]
    per_type = {}
    for t in TYPE_SIGNALS:
        rt = [r for r in reqs if fleet.asset(r["asset_id"]).asset_type == t]
        tpt = [r for r in tp if fleet.asset(r["asset_id"]).asset_type == t]
        mt = [f for f in missed if f.asset_type == t]
        if rt or mt:
            per_type[t] = {"orders": len(rt), "true": len(tpt), "missed_failures": len(mt),
                           "precision": len(tpt) / len(rt) if rt else None,
                           "recall": len(tpt) / (len(tpt) + len(mt)) if tpt or mt else None}
    return {"orders": len(reqs), "true": len(tp), "missed_failures": len(missed),
            "failures_caught_too_late": caught - 0,
            "precision": len(tp) / len(reqs) if reqs else None,
            "recall": len(tp) / (len(tp) + len(missed)) if tp or missed else None,
            "median_lead_hours": statistics.median(leads) if leads else None, "per_type": per_type}


def mtbf_table(run: dict) -> list[dict]:
    fleet = run["fleet"]
    fits = reliability(fleet.register(), run["orders"], run["end_ms"], by="type")
    return [{"asset_type": g.group[0], "units": g.units, "failures": g.failures, "mtbf_days": g.mtbf_days,
             "true_mean_life_days": fleet.true_mean_life_days(g.group[0])} for g in fits]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--homes", type=int, default=300)
    parser.add_argument("--months", type=float, default=6.0, help="simulated months (30 days each)")
    parser.add_argument("--seed", type=int, help="city seed (default: ECO_SEED)")
    parser.add_argument("--step-min", type=float, default=30.0, help="simulator step, minutes")
    parser.add_argument("--horizon-days", type=float, default=7.0)
    parser.add_argument("--threshold", type=float, default=0.5, help="p_fail that opens a predictive order")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--through-kafka", action="store_true",
                        help="run the predictive policy through the broker and a real `ecoretrofit maintain` worker "
                             "(starts the broker and registry if they are not running, stops what it started); "
                             "event time then ends a day ago")


def run(args: argparse.Namespace, settings) -> int:
    from ecoretrofit.errors import CommandError

    if args.homes < 1 or args.months <= 0 or args.step_min <= 0 or not 0 < args.threshold < 1:
        raise CommandError("--homes >= 1, --months > 0, --step-min > 0, 0 < --threshold < 1")
    seed = settings.seed if args.seed is None else args.seed
    days = 30.0 * args.months
    wcfg = WorkflowConfig(horizon_days=args.horizon_days, threshold=args.threshold)
    t0 = time.perf_counter()

    def progress(policy, frac):
        print(f"\r{policy}: {frac:5.1%}", end="", file=sys.stderr, flush=True)

    step_ms = int(args.step_min * 60_000)
    if args.through_kafka:
        from evaluation.maintenance_kafka import recent_start, simulate_through_kafka, stack_pieces

        start = recent_start(days, wcfg.period_ms)
        # the predictive policy in process too: the figures through Kafka must be the same
        runs = {p: simulate(p, args.homes, days, seed, settings.regions, step_ms, workflow=wcfg, progress=progress,
                            start_ms=start) for p in POLICIES}
        in_process = runs.pop("predictive")
        print(f"\npredictive: through Kafka ({args.homes} homes, {days:g} days, a real `maintain` worker)",
              file=sys.stderr)
        stop_stack = stack_pieces(settings)
        try:
            runs["predictive"] = simulate_through_kafka(
                settings, args.homes, days, seed, step_ms, policy_config("predictive"), workflow=wcfg, start_ms=start,
                log=lambda line: print(line, file=sys.stderr, flush=True))
        finally:
            stop_stack()
    else:
        runs = {p: simulate(p, args.homes, days, seed, settings.regions, step_ms, workflow=wcfg, progress=progress)
                for p in POLICIES}
    print("", file=sys.stderr)
    table = [outcome(r) for r in runs.values()]
    quality = prediction_quality(runs["predictive"], args.horizon_days)
    mtbf = mtbf_table(runs["run-to-failure"])
    out = {"homes": args.homes, "days": days, "seed": seed, "horizon_days": args.horizon_days,
           "threshold": args.threshold, "start_ms": runs["predictive"]["start_ms"], "policies": table,
           "predictive_orders": quality, "mtbf": mtbf, "seconds": time.perf_counter() - t0}
    kafka = runs["predictive"].get("kafka")
    if kafka is not None:
        out["through_kafka"] = {k: v for k, v in kafka.items() if k not in ("topics", "log")}
        same = {"policy": outcome(in_process), "predictive_orders": prediction_quality(in_process, args.horizon_days)}
        out["in_process_predictive"] = same
        out["through_kafka"]["agrees_with_in_process"] = (same["policy"] == table[-1] and
                                                         same["predictive_orders"] == quality)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    import datetime as dt

    began = dt.datetime.fromtimestamp(out["start_ms"] / 1000, dt.timezone.utc).date()
    print(f"{args.homes} homes, {days:g} simulated days from {began}, seed {seed}, step {args.step_min:g} min; "
          f"technicians {runs['predictive']['config'].technician_delay_ms / HOUR_MS:g} h after an order opens")
    if kafka is not None:
        print(f"predictive policy through Kafka and a real `maintain` worker: {kafka['readings']:,} readings "
              f"({kafka['readings_read']:,} read), {kafka['order_messages']:,} work-order messages read, "
              f"{kafka['predictions']:,} predictions and {kafka['predictive_orders']} predictive orders published, "
              f"{kafka['dead_letters']} dead letters, {kafka['seconds']:.0f} s; the other policies in process "
              f"(no stream processor involved)")
        table = table + [{**out["in_process_predictive"]["policy"], "policy": "  in process"}]
    print(f"\n{'policy':<16}{'failures':>9}{'downtime h':>12}{'visits':>8}{'parts':>7}{'cost EUR':>11}")
    for r in table:
        print(f"{r['policy']:<16}{r['failures']:>9}{r['downtime_hours']:>12.0f}{r['visits']:>8}{r['parts']:>7}"
              f"{r['cost_eur']:>11.0f}")
    q = quality

    def pct(x):
        return "-" if x is None else f"{x:.2f}"

    lead = "-" if q["median_lead_hours"] is None else f"{q['median_lead_hours'] / 24:.1f} days"
    print(f"\nPredictive work orders (horizon {args.horizon_days:g} days, p_fail >= {args.threshold:g}): "
          f"{q['orders']} opened, {q['true']} true, {q['missed_failures']} failures without one; "
          f"precision {pct(q['precision'])}, recall {pct(q['recall'])}, median lead {lead}")
    for t, v in q["per_type"].items():
        print(f"  {t:<18} orders {v['orders']:>4}  true {v['true']:>4}  missed {v['missed_failures']:>4}  "
              f"precision {pct(v['precision'])}  recall {pct(v['recall'])}")
    if kafka is not None:
        print("Through Kafka vs in process (same seed, start and code): "
              + ("every figure above is the same" if out["through_kafka"]["agrees_with_in_process"] else
                 f"DIFFERENT: in process {out['in_process_predictive']['predictive_orders']}"))
    print(f"\nMTBF from work orders (history + run, right-censored Weibull) vs the simulator's true mean life:")
    for m in mtbf:
        est = "-" if m["mtbf_days"] is None else f"{m['mtbf_days']:.0f}"
        print(f"  {m['asset_type']:<18}{m['failures']:>6} failures  MTBF {est:>6} d   true {m['true_mean_life_days']:.0f} d")
    print(f"({out['seconds']:.0f} s)")
    return 0
