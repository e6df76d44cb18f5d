"""``ecoretrofit demo``: the whole city on this machine for about a minute.

Brings the local stack up (unless it already runs), starts a Faust worker, streams
1,000 simulated homes live with a few injected faults, waits for the warehouse to
catch up, and prints what happened: readings produced vs stored, faults injected vs
anomalies found, the most anomalous homes, and what to run next. Ctrl-C stops
everything it started. The dashboard (the twin service of the stack) is printed with
its token at the start; ``--keep`` keeps the city live after the summary (stack,
processor and simulator) until Ctrl-C, so a newcomer can explore it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass

from ecoretrofit import metrics, processes
from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError

DEMO_FAULT_KINDS = ("spike", "voltage_sag", "voltage_surge", "stuck_sensor", "meter_dropout", "hvac_failure")


def add_arguments(parser) -> None:
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of live simulation (default 60)")
    parser.add_argument("--homes", type=int, default=None, help="homes to simulate (default ECO_HOMES, 1000)")
    parser.add_argument("--faults", type=int, default=2, help="faults injected per kind (default 2)")
    parser.add_argument("--keep-running", action="store_true", help="leave the stack up afterwards")
    parser.add_argument("--keep", action="store_true",
                        help="after the summary keep everything up, the city live, until Ctrl-C")
    parser.add_argument("--prometheus", action="store_true", help="also start Prometheus with the alert rules")
    parser.add_argument("--no-maintenance", action="store_true",
                        help="skip the predictive-maintenance phase (simulated months in accelerated time)")
    parser.add_argument("--readings", type=_count, default=None, metavar="N",
                        help="instead of the live city: N backdated readings (e.g. 5e7) through the S3 lake "
                             "into the warehouse, exactly once, with a progress bar (ecoretrofit/demo_bulk.py)")


def _count(text: str) -> int:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number such as 5e7 or 1000000") from None
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of readings >= 1")
    return int(value)


@dataclass
class DemoRun:
    start_ms: int
    end_ms: int = 0


def run(args, settings: Settings) -> int:
    from infra.localstack.stack import LocalStack
    from twin.auth import dashboard_url

    homes = args.homes or settings.homes
    if args.readings is not None:
        from ecoretrofit import demo_bulk

        try:
            result = demo_bulk.run_bulk(settings, args.readings, homes, keep_running=args.keep_running)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping what the demo started", file=sys.stderr)
            return 130
        return 0 if result.exact else 1
    stack = LocalStack(settings, with_prometheus=args.prometheus)
    print(f"EcoRetrofit Streams demo: {homes} homes for {args.duration:.0f}s\n")
    print("1/5 local stack")
    started = stack.up()
    print(f"\n    dashboard  {dashboard_url(settings)}\n")
    processor = live = None
    try:
        print("2/5 stream processor (Faust worker)")
        processor = _start_processor(settings)
        print("3/5 simulating the city live (1 reading per home per second)")
        run, plan, stats = _simulate(settings, homes, args.duration, args.faults)
        print("4/5 waiting for the processor to score and the warehouse to store every reading")
        _wait_for_processor(settings, stats.acked)
        report = _collect(settings, run, plan, stats)
        _print_summary(settings, report)
        if not args.no_maintenance:
            from ecoretrofit.demo_maintenance import print_phase, run_phase

            print("\n5/5 predictive maintenance, accelerated: simulated months of component wear "
                  "through Kafka to the `maintain` worker")
            print_phase(run_phase(settings))
        code = 0 if report["stored"] == stats.acked else 1
        if args.keep:
            live = processes.start_cli(settings, "demo-simulate",
                                       ["simulate", "--homes", str(homes), "--faults", str(args.faults), "--quiet"])
            print(f"\nthe city stays live: open {dashboard_url(settings)}\nCtrl-C stops everything the demo started",
                  flush=True)
            while live.running():
                time.sleep(1.0)
            raise CommandError("the live simulator stopped; see logs/demo-simulate.log")
        return code
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the demo started", file=sys.stderr)
        return 130 if not args.keep else 0
    finally:
        if live is not None:
            live.stop()
        if processor is not None:
            processor.stop()
        if not args.keep_running and started:
            stack.down(only=started)
        elif started:
            print("\nthe stack keeps running: `ecoretrofit stack down` stops it")


def _start_processor(settings: Settings) -> processes.Proc:
    proc = processes.start_cli(settings, "processor", ["process"])
    time.sleep(1.0)
    if not proc.running():
        proc.close_log()
        raise CommandError(f"the processor exited at start-up (code {proc.popen.returncode}); see {proc.log_path}")
    return proc


def _simulate(settings: Settings, homes: int, duration: float, faults_per_kind: int):
    from producers.faults import FaultPlan
    from producers.producer import TelemetryProducer, run_live
    from producers.simulator import CitySimulator

    metrics.serve(metrics.port_for(settings, "demo"), settings.bind_host)
    start_ms = int(time.time() * 1000)
    # Faults start after the detectors' warm-up and end before the run does.
    warmup_ms = int(max(settings.zscore_warmup + 10, duration * 0.45) * 1000)
    sim = CitySimulator(homes, settings.regions, settings.seed, start_ms)
    plan = FaultPlan.random(
        sim.home_ids, start_ms + warmup_ms, max(5_000, int(duration * 1000) - warmup_ms - 5_000),
        # a new draw of homes each run: back-to-back demos do not fault the same homes
        seed=settings.seed + start_ms // 1000, kinds=DEMO_FAULT_KINDS, faults_per_kind=faults_per_kind,
        warmup_ms=0, tail_ms=2_000,  # the window above already leaves the warm-up out
        water_homes=sim.water_homes,  # water faults only where there is a water system
    )
    sim.set_faults(plan)
    producer = TelemetryProducer(settings)
    t0 = time.monotonic()

    def on_tick(ticks: int, n: int) -> None:
        if ticks % 10 == 0:
            s = producer.stats
            print(f"    t={time.monotonic() - t0:5.1f}s  produced {s.sent:>8,}  acknowledged {s.acked:>8,}", flush=True)

    run = DemoRun(start_ms=start_ms)
    try:
        stats = asyncio.run(run_live(sim, producer, duration, on_tick=on_tick))
    finally:
        producer.close()
    run.end_ms = int(time.time() * 1000)
    if stats.failed:
        print(f"    {stats.failed} readings were not acknowledged: {stats.errors}")
    return run, plan, stats


def _wait_for_processor(settings: Settings, acked: int, stall_s: float = 60.0) -> None:
    """Until the demo's processor has scored (or dead-lettered) every acknowledged reading,
    while it makes progress: on a loaded machine it lags, and anomalies it has not sent
    yet would count as faults missed."""
    port = metrics.port_for(settings, "process")

    def done() -> int:
        return int(processes.scrape(port, "eco_readings_processed_total")
                   + processes.scrape(port, "eco_dead_letters_total"))

    last, since = done(), time.monotonic()
    while last < acked and time.monotonic() - since < stall_s:
        time.sleep(2)
        now = done()
        if now > last:
            last, since = now, time.monotonic()
            print(f"    scored {now:,} of {acked:,}", flush=True)
    if last < acked:
        print(f"    the processor scored {last:,} of {acked:,} and then stopped making progress", flush=True)


def _collect(settings: Settings, run: DemoRun, plan, stats, timeout_s: float = 90.0) -> dict:
    from sinks.warehouse import connect

    client = connect(settings)
    db = settings.clickhouse_database
    where = f"ts >= fromUnixTimestamp64Milli({run.start_ms}) AND ts <= fromUnixTimestamp64Milli({run.end_ms + 5000})"
    deadline = time.monotonic() + timeout_s
    stored = 0
    while time.monotonic() < deadline:
        stored = int(client.command(f"SELECT count() FROM {db}.telemetry WHERE {where}"))
        if stored >= stats.acked:
            break
        print(f"    stored {stored:,} of {stats.acked:,}", flush=True)
        time.sleep(2)
    time.sleep(2)  # the last anomaly events trail the last readings
    # Anomalies stamped after the run are about its end (every home falls silent when
    # the simulator stops and the processor reports that), not about the run.
    during = f"ts >= fromUnixTimestamp64Milli({run.start_ms}) AND ts <= fromUnixTimestamp64Milli({run.end_ms})"
    anomalies = client.query(
        f"SELECT home_id, metric, toUnixTimestamp64Milli(ts), severity, detector FROM {db}.anomalies WHERE {during}"
    ).result_rows
    top = client.query(
        f"SELECT home_id, any(region), count() AS n, groupUniqArray(metric), max(score) "
        f"FROM {db}.anomalies WHERE {during} GROUP BY home_id ORDER BY n DESC, home_id LIMIT 5"
    ).result_rows
    dead = int(client.command(
        f"SELECT count() FROM {db}.dead_letters WHERE received_at >= fromUnixTimestamp64Milli({run.start_ms})"))
    truth = plan.ground_truth()
    detected = [f for f in truth if _detected(f, anomalies)]
    faulty = {(f.home_id) for f in truth}
    false_alarms = [a for a in anomalies if a[0] not in faulty]
    return {
        "produced": stats.sent, "acked": stats.acked, "stored": stored, "dead_letters": dead,
        "faults": truth, "detected": detected, "anomalies": len(anomalies),
        "false_alarms": len(false_alarms), "top": top,
    }


def _detected(fault, anomalies, grace_ms: int = 30_000) -> bool:
    for home_id, metric, ts, _sev, _det in anomalies:
        if home_id == fault.home_id and metric in fault.metrics \
                and fault.start_ms <= ts <= fault.end_ms + grace_ms:
            return True
    return False


def _print_summary(settings: Settings, r: dict) -> None:
    from twin.auth import dashboard_url

    ok = "OK" if r["stored"] == r["acked"] else "MISMATCH"
    print("\n================ summary ================")
    print(f"readings produced      {r['produced']:>10,}")
    print(f"acknowledged by Kafka  {r['acked']:>10,}")
    print(f"stored in ClickHouse   {r['stored']:>10,}   {ok}")
    print(f"dead letters           {r['dead_letters']:>10,}")
    print(f"faults injected        {len(r['faults']):>10,}")
    print(f"  detected             {len(r['detected']):>10,}")
    by_kind: dict[str, list[int]] = {}
    for f in r["faults"]:
        by_kind.setdefault(f.kind, [0, 0])[0] += 1
    for f in r["detected"]:
        by_kind[f.kind][1] += 1
    for kind, (n, d) in sorted(by_kind.items()):
        print(f"    {kind:<18} {d}/{n}")
    print(f"anomaly events         {r['anomalies']:>10,}   ({r['false_alarms']} on homes without an injected fault)")
    if r["top"]:
        print("\nmost anomalous homes:")
        for home, region, n, metrics_, score in r["top"]:
            print(f"  {home}  {region:<8} {n:>3} events  {', '.join(sorted(metrics_))}  (max score {score:.6f})")
    db = settings.clickhouse_database
    print("\nwhere to look next:")
    print(f'  ecoretrofit query "SELECT region, count() FROM {db}.telemetry GROUP BY region"')
    print(f'  ecoretrofit query "SELECT * FROM {db}.anomalies ORDER BY ts DESC LIMIT 20"')
    print(f'  ecoretrofit query "SELECT * FROM {db}.dead_letters LIMIT 10"')
    print("  ecoretrofit stack status")
    print(f"  the dashboard: {dashboard_url(settings)}")
