"""``ecoretrofit maintenance stats|publish``: reliability of the city's components, and
its work-order history onto the work-orders topic.

MTBF (Weibull mean life, and total time on test / failures), Kaplan-Meier median and
restricted mean, Weibull shape/scale and MTTR per component type (``--by model`` or
``--by region`` too), from right-censored unit lives, and the assets whose next failure
is expected soonest. The data are the simulated city's asset register and its years of
back-dated work orders (``ECO_HOMES``, ``ECO_SEED``, ``ECO_REGIONS``; ``--homes`` and
``--years`` override), beside the simulator's true mean life per group.
"""

from __future__ import annotations

import argparse
import json
import time

from ecoretrofit.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="maintenance_command", metavar="{stats,publish}")
    sub.required = True
    st = sub.add_parser("stats", help="MTBF, MTTR, Kaplan-Meier and Weibull fits per component group")
    st.add_argument("--homes", type=int, help="homes in the simulated city (default: ECO_HOMES)")
    st.add_argument("--years", type=float, default=8.0, help="history: homes commissioned 1..YEARS years ago")
    st.add_argument("--by", choices=("type", "model", "region"), default="type", help="grouping")
    st.add_argument("--next", type=int, default=10, metavar="K", help="assets with the soonest expected failure")
    st.add_argument("--json", action="store_true", help="print JSON")
    pub = sub.add_parser("publish", help="the simulated city's back-dated work orders onto the work-orders topic")
    pub.add_argument("--homes", type=int, help="homes in the simulated city (default: ECO_HOMES)")
    pub.add_argument("--years", type=float, default=8.0, help="history: homes commissioned 1..YEARS years ago")


def run(args: argparse.Namespace, settings) -> int:
    if args.maintenance_command == "publish":
        return _publish(args, settings)
    return _stats(args, settings)


def _city(args, settings):
    """The simulator's own homes (same regions and water systems as `simulate`) and
    their components' history up to now."""
    from maintenance.fleet import MaintenanceConfig
    from producers.simulator import CitySimulator

    homes = args.homes or settings.homes
    if homes < 1 or args.years < 1:
        raise CommandError("--homes and --years must be >= 1")
    now = int(time.time() * 1000) // 1000 * 1000
    sim = CitySimulator(homes, settings.regions, settings.seed, now,
                        maintenance=MaintenanceConfig(history_years=args.years))
    return homes, now, sim.fleet


def _publish(args, settings) -> int:
    from maintenance.publish import publish_work_orders

    homes, _, fleet = _city(args, settings)
    orders = fleet.drain_orders()
    sent = publish_work_orders(settings, orders)
    print(f"{sent} work-order versions of {homes} homes -> {settings.topic_workorders}")
    return 0


def _stats(args: argparse.Namespace, settings) -> int:
    from maintenance.stats import next_failures, reliability

    homes, now, fleet = _city(args, settings)
    register, orders = fleet.register(), fleet.drain_orders()
    fits = reliability(register, orders, now, by=args.by)
    soon = next_failures(register, orders, now, reliability(register, orders, now, by="model"))[: args.next]
    truth = {}
    for g in fits:
        model = g.group[1] if args.by == "model" else None
        truth[g.group] = fleet.true_mean_life_days(g.group[0], model)
    if args.json:
        print(json.dumps({"homes": homes, "seed": settings.seed, "now_ms": now, "orders": len(orders),
                          "by": args.by,
                          "groups": [{**g.as_dict(), "true_mean_life_days": truth[g.group]} for g in fits],
                          "next_failures": soon}, indent=2))
        return 0
    print(f"{homes} homes (seed {settings.seed}), {len(register)} components, {len(orders)} work-order versions "
          f"over {args.years:g} years; lives right-censored at replacement before failure and now")
    head = f"{'group':<34}{'units':>7}{'fail':>6}{'shape':>7}{'scale d':>9}{'MTBF d':>8}{'true d':>8}" \
           f"{'TTT d':>8}{'KM med d':>9}{'KM rmst':>8}{'MTTR h':>8}"
    print(head)
    print("-" * len(head))

    def f(x, w, p=0):
        return f"{'-':>{w}}" if x is None else f"{x:{w}.{p}f}"

    for g in fits:
        print(f"{'/'.join(g.group):<34}{g.units:>7}{g.failures:>6}{f(g.weibull_shape, 7, 2)}"
              f"{f(g.weibull_scale_days, 9)}{f(g.mtbf_days, 8)}{f(truth[g.group], 8)}"
              f"{f(g.mtbf_ttt_days if g.failures else None, 8)}{f(g.km_median_days, 9)}"
              f"{f(g.km_restricted_mean_days, 8)}{f(g.mttr_hours, 8, 1)}")
    print(f"\nNext expected failures (Weibull per type and model, given each unit's age):")
    for r in soon:
        when = time.strftime("%Y-%m-%d", time.gmtime(r["next_failure_ms"] / 1000))
        print(f"  {r['asset_id']:<14}{r['asset_type']:<18}{r['model']:<14}age {r['age_days']:7.0f} d  "
              f"expected in {r['expected_remaining_days']:6.0f} d ({when})")
    return 0
