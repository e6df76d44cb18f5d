"""``ecoretrofit bench``: measure, beside baselines taken in the same run, and print.

Figures, not assertions: the machine is shared and noisy, so each figure comes with
its baseline and the ratio between the two is what to compare across machines.
"""

from __future__ import annotations

import json
import sys
import time

from ecoretrofit.config import Settings

SECTIONS = ("produce", "process", "latency", "live", "detectors", "predictor", "checkpoint", "ingest", "queries",
            "twin", "gateway", "gateway_live", "lake")
DEFAULT = ("produce", "process", "latency", "detectors", "predictor")


def add_arguments(parser) -> None:
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated sections of {', '.join(SECTIONS)} (default: {', '.join(DEFAULT)})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--readings", type=int, default=200_000, help="produce: readings per round")
    parser.add_argument("--rounds", type=int, default=10,
                        help="produce: interleaved rounds of ours and the baseline (the median ratio is reported)")
    parser.add_argument("--live-homes", type=int, default=10_000, help="live: homes (readings/s)")
    parser.add_argument("--live-workers", type=int, default=2, help="live: Faust workers")
    parser.add_argument("--live-duration", type=float, default=60.0, help="live: seconds of load")
    parser.add_argument("--ingest-readings", type=int, default=300_000,
                        help="ingest: readings stored by each path (Kafka engine, sink, bulk insert)")
    parser.add_argument("--twin-homes", type=int, default=10_000, help="twin: twins behind the API")
    parser.add_argument("--twin-live-homes", type=int, default=1_000, help="twin: homes live for the dashboard")
    parser.add_argument("--gateway-devices", type=int, default=1000, help="gateway_live: devices at 1 Hz")
    parser.add_argument("--gateway-duration", type=float, default=60.0, help="gateway_live: seconds of load")
    parser.add_argument("--gateway-bridges", type=int, default=1,
                        help="gateway_live: MQTT bridges sharing the subscription")
    parser.add_argument("--gateway-transports", default="mqtt,https", help="gateway_live: mqtt, https or both")
    parser.add_argument("--lake-readings", type=float, default=5_000_000,
                        help="lake: readings through S3 objects and the lake ingester (e.g. 5e7)")
    parser.add_argument("--query-rows", type=int, default=10_000_000,
                        help="queries: readings bulk-inserted before the queries are timed")


def run(args, settings: Settings) -> int:
    from bench import pipeline
    from infra.localstack.stack import LocalStack

    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
    results: dict[str, object] = {}
    needs_stack = set(sections) - {"detectors", "predictor", "checkpoint"}
    stack = LocalStack(settings, log=lambda line: print(line, file=sys.stderr))
    started = stack.up() if needs_stack else []
    try:
        for name in sections:
            print(f"bench {name} …", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            if name == "produce":
                results[name] = pipeline.bench_produce(settings, readings=args.readings, rounds=args.rounds)
            elif name == "process":
                results[name] = pipeline.bench_process(settings)
            elif name == "latency":
                results[name] = pipeline.bench_latency(settings)
            elif name == "live":
                results[name] = pipeline.bench_live(settings, args.live_homes, args.live_workers, args.live_duration)
            elif name == "predictor":
                from maintenance.bench import measure_predictor_costs

                results[name] = measure_predictor_costs()
            elif name == "checkpoint":
                from maintenance.bench import measure_checkpoint_sizes

                results[name] = measure_checkpoint_sizes()
            elif name == "detectors":
                from processors.detectors.bench import measure_detector_costs

                results[name] = measure_detector_costs()
            elif name == "ingest":
                from bench import warehouse

                results[name] = warehouse.bench_ingest(settings, readings=args.ingest_readings)
            elif name == "queries":
                from bench import warehouse

                results[name] = warehouse.bench_queries(settings, rows=args.query_rows)
            elif name == "lake":
                from bench import warehouse

                results[name] = warehouse.bench_lake(settings, readings=int(args.lake_readings), stack=stack)
            elif name == "twin":
                from bench import twin

                results[name] = {"api": twin.bench_api(settings, homes=args.twin_homes),
                                 "what_if": twin.bench_what_if(settings),
                                 "dashboard": twin.bench_dashboard(settings, homes=args.twin_live_homes)}
            elif name == "gateway":
                from bench import gateway

                results[name] = gateway.bench_throughput(settings)
            elif name == "gateway_live":
                from bench import gateway

                results[name] = gateway.bench_live(
                    settings, args.gateway_devices, args.gateway_duration,
                    transports=tuple(t.strip() for t in args.gateway_transports.split(",") if t.strip()),
                    bridges=args.gateway_bridges)
            print(f"  done in {time.monotonic() - t0:.0f}s", file=sys.stderr)
    finally:
        if started:
            stack.down(only=started)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print_report(results)
    return 0


def print_report(results: dict) -> None:
    print("\n=========== EcoRetrofit benchmark (this machine, this run) ===========")
    if "produce" in results:
        r = results["produce"]
        print(f"produce   simulator+Avro+produce {r['ours_readings_per_s']:>10,.0f} readings/s (median of {r['rounds']})")
        print(f"          bare confluent-kafka   {r['baseline_msgs_per_s']:>10,.0f} msgs/s (pre-serialised, same "
              f"client settings, {r['bytes_per_reading']:.0f} B each)")
        idem = "idempotent" if r["other_idempotence"] else "not idempotent"
        print(f"          bare, {idem:<16} {r['other_idempotence_msgs_per_s']:>10,.0f} msgs/s (bare above is "
              f"{r['baseline_vs_other_idempotence']:.2f}x this; ECO_KAFKA_IDEMPOTENT_PRODUCERS, docs/delivery.md)")
        for k, (o, b, x) in enumerate(zip(r["ours_per_round"], r["baseline_per_round"], r["ratios_per_round"])):
            print(f"          round {k + 1:<2} {o:>12,.0f} vs {b:>9,.0f}/s  {x:>5.0%}")
        print(f"          ratio                  {r['ratio']:>10.0%}   (median of {r['rounds']} rounds; target >= 70%; "
              f"load average {r['load_average'][0]:.1f})")
    if "process" in results:
        r = results["process"]
        print(f"process   Faust worker           {r['faust_readings_per_s_per_worker']:>10,.0f} readings/s per worker")
        print(f"          bare consumer + maths  {r['baseline_readings_per_s']:>10,.0f} readings/s")
        per_round = ", ".join(f"{x:.0%}" for x in r.get("ratios_per_round", []))
        print(f"          ratio                  {r['ratio']:>10.0%}   (best of {r.get('rounds', 1)} each; "
              f"per round {per_round}; target >= 60%)")
        if "cpu_ratio" in r:
            per_round = ", ".join(f"{x:.0%}" for x in r["cpu_ratios_per_round"])
            print(f"          per CPU-second         {r['faust_readings_per_cpu_s']:>10,.0f} vs "
                  f"{r['baseline_readings_per_cpu_s']:,.0f} readings/s: {r['cpu_ratio']:.0%} (per round {per_round})")
        if "load_average" in r:
            print(f"          load average           {r['load_average']:>10.1f}   (at the end; other jobs on the cores)")
    if "latency" in results:
        r = results["latency"]
        print(f"latency   produce->anomaly       p50 {r['anomaly_p50_s'] * 1000:>7.0f} ms  p99 {r['anomaly_p99_s'] * 1000:>7.0f} ms"
              f"  ({r['anomaly_events']} events, {r['homes']} homes live; target p99 < 300 ms)")
        if "to_batch_p50_s" in r:
            print(f"          reading->worker batch  p50 {r['to_batch_p50_s'] * 1000:>7.0f} ms  p99 {r['to_batch_p99_s'] * 1000:>7.0f} ms"
                  f"  (produce, linger, broker, fetch)")
            print(f"          batch->event sent      p50 {r['batch_to_send_p50_s'] * 1000:>7.0f} ms  p99 "
                  f"{r['batch_to_send_p99_s'] * 1000:>7.0f} ms  (scoring the batch up to the reading)")
            print(f"          sent->event consumed   p50 {r['send_to_listener_p50_s'] * 1000:>7.0f} ms  p99 "
                  f"{r['send_to_listener_p99_s'] * 1000:>7.0f} ms  (worker's producer, broker, downstream fetch; "
                  f"load average {r['load_average']:.1f})")
        if "bare_hop_p50_s" in r:
            print(f"          baseline: one bare hop p50 {r['bare_hop_p50_s'] * 1000:>7.0f} ms  p99 {r['bare_hop_p99_s'] * 1000:>7.0f} ms"
                  f"  (confluent-kafka produce->consume through the same broker, same run, {r['bare_hops']} messages)")
        print(f"          produce->ClickHouse    p50 {r['clickhouse_p50_s'] * 1000:>7.0f} ms  p99 {r['clickhouse_p99_s'] * 1000:>7.0f} ms"
              f"  ({r['clickhouse_rows']:,} rows)")
    if "live" in results:
        r = results["live"]
        print(f"live      {r['homes']:,} homes, {r['workers']} workers: produced {r['produced_per_s']:,.0f}/s, "
              f"processed {r['processed_per_s']:,.0f}/s, lag {'GROWING' if r['lag_growing'] else 'flat'}, "
              + (f"caught up {r['drain_after_load_s']:.0f}s after the load" if r["caught_up"]
                 else "not caught up 60 s after the load"))
        handled = r["processed_total"] + r["dead_lettered_total"]
        print(f"          handled {handled:,.0f} readings (scored {r['processed_total']:,.0f}, dead-lettered "
              f"{r['dead_lettered_total']:,.0f}) for {r['in_topic_total']:,.0f} in the topic"
              + ("" if handled == r["in_topic_total"] else "  (NOT equal)"))
        for t, produced, processed, lag in r["lag_samples"]:
            print(f"          t={t:>5.0f}s produced {produced:>9,.0f} processed {processed:>9,.0f} lag {lag:>8,.0f}")
    if "ingest" in results:
        from bench import warehouse

        warehouse.print_ingest(results["ingest"])
    if "queries" in results:
        from bench import warehouse

        warehouse.print_queries(results["queries"])
    if "lake" in results:
        from bench import warehouse

        warehouse.print_lake(results["lake"])
    if "predictor" in results:
        r = results["predictor"]
        base = r["baseline_ewzscore"]
        print("predictor (events/s on one core; baseline: ewzscore score + learn, same run):")
        print(f"          RulPredictor.update per asset reading   {r['predictor']:>12,.0f}  "
              f"({r['predictor'] / base:.1%} of baseline {base:,.0f})")
        print(f"          workflow per telemetry reading          {r['workflow']:>12,.0f}  "
              f"({r['workflow'] / base:.1%} of baseline)")
    if "checkpoint" in results:
        r = results["checkpoint"]
        print(f"checkpoint maintenance worker, {r['assets']} assets after a backfill (buffers full):")
        print(f"          one JSON document (old)  {r['json_bytes_per_asset']:>10,.0f} bytes per asset")
        print(f"          SQLite, zlib rows (new)  {r['sqlite_bytes_per_asset']:>10,.0f} bytes per asset")
        print(f"          live, written per checkpoint: old {r['live_bytes_per_checkpoint_before']:,.0f} bytes, "
              f"new {r['live_bytes_per_checkpoint_after']:,.0f} bytes ({r['live_checkpoints']} checkpoints)")
    if "twin" in results:
        from bench import twin

        twin.print_twin(results["twin"])
    if "gateway" in results or "gateway_live" in results:
        from bench import gateway

        gateway.print_report(results)
    if "detectors" in results:
        print("detectors (events/s on one core, score_one + learn_one):")
        width = max(map(len, results["detectors"]), default=0)
        for name, rate in sorted(results["detectors"].items(), key=lambda kv: -kv[1]):
            print(f"          {name:<{width}} {rate:>12,.0f}")
