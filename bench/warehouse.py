"""Warehouse benchmarks: ingestion paths side by side, and query latency at 10M+ rows.

- ``bench_ingest``: M readings stored three ways in one run (details in its
  docstring): the Kafka engine (``telemetry_queue`` -> view -> ``telemetry``) and the
  batching sink (``ecoretrofit sink``) consuming the same live production side by
  side; the sink again alone from a backlog (its own ceiling); and direct bulk inserts
  of the same readings (``insert_arrow`` of ``CitySimulator.tick_columns``, 100k rows
  per insert: no Kafka, no Avro), the practical ceiling of the warehouse. Kafka paths
  are timed from their first rows stored to their last by polling ``count()`` every
  0.1 s (group joins are reported apart).

  The Kafka engine is measured through the pipeline's own queue table rather than a
  throw-away copy: on the embedded warehouse (chdb 26.1) dropping a materialized view
  attached to a consuming Kafka table wedged the whole engine (every later query
  waited forever), so the benchmark never creates or drops Kafka tables. Its
  readings use a region of their own, deleted from every table afterwards.

- ``bench_queries``: fills a table with N (default 10M) backdated readings by direct
  bulk insert (insert_arrow from tick_columns; producing 10M readings through Kafka
  takes minutes here, and the stored rows are the same), then times every named query
  of sinks/queries/ (declared defaults, ``until`` set to the end of the data) and a few
  fixed dashboard queries, each after one warm-up run; ``SELECT 1`` (the HTTP round
  trip) and a full scan of one column are the baselines.

Tables the benchmark fills live in a database of their own, ``eco_bench`` by default,
built from sinks/sql without the Kafka-engine tables (so the roll-up views of 015 fire
on the bulk inserts as they do in production) and dropped at the end. The data sits in
the last day, inside the 7-day TTL of ``telemetry``.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np

import schemas
from ecoretrofit import processes
from ecoretrofit.admin import ensure_topics
from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError

BENCH_DB = "eco_bench"
READING_FIELDS = tuple(schemas.field_names(schemas.TELEMETRY_READING))
NULLABLE = {"water_flow_lpm", "water_temp_c", "uv_intensity_mw_cm2", "pump_pressure_bar"}


# Benchmark homes are numbered from here: ten-character ids, which no city of up to
# 1,000,000 homes (``H`` + six digits) has.
BENCH_FIRST_HOME = 900_000_000

# ------------------------------------------------------------------ set-up
def bench_settings(settings: Settings, database: str = BENCH_DB) -> Settings:
    return settings.replace(clickhouse_database=database)


def create_bench_database(settings: Settings, database: str = BENCH_DB):
    """``database`` with every table and view of sinks/sql except the Kafka-engine
    queues and the views reading them. Returns a client bound to it."""
    from sinks import warehouse

    bs = bench_settings(settings, database)
    admin = warehouse.connect(settings, database="default")
    admin.command(f"DROP DATABASE IF EXISTS {database} SYNC")
    for sql in warehouse.render_ddl(bs):
        if re.search(r"ENGINE\s*=\s*Kafka", sql) or re.search(r"\bFROM\s+\S+_queue\b", sql):
            continue
        admin.command(sql)
    return warehouse.connect(bs)


def drop_bench_database(settings: Settings, database: str = BENCH_DB) -> None:
    from sinks import warehouse

    # Not SYNC: the embedded warehouse was seen to hang for good on a synchronous drop
    # after a heavy load (its Kafka-engine tables' consumers); the data goes in the
    # background instead.
    warehouse.connect(settings, database="default").command(f"DROP DATABASE IF EXISTS {database}")


def arrow_batch(columns: list[dict], offset: int = 0):
    """A pyarrow table of the TelemetryReading fields (+ kafka_partition/offset) from
    ``tick_columns`` dicts; readings the simulator dropped are left out."""
    import numpy as np
    import pyarrow as pa

    def cat(name):
        return np.concatenate([c[name] for c in columns])

    keep = cat("emitted")
    arrays, names = [], []
    for name in READING_FIELDS:
        col = cat(name)[keep]
        if name == "ts":
            arr = pa.array(col.astype("int64"), pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
        elif name in ("home_id", "region"):
            arr = pa.array(col.tolist(), pa.string())
        elif name in NULLABLE:
            arr = pa.array(col, pa.float64(), from_pandas=True)  # NaN -> null
        else:
            arr = pa.array(col)
        arrays.append(arr)
        names.append(name)
    n = len(arrays[0])
    arrays += [pa.array(np.zeros(n, dtype="uint32")), pa.array(np.arange(offset, offset + n, dtype="uint64"))]
    names += ["kafka_partition", "kafka_offset"]
    return pa.Table.from_arrays(arrays, names=names)


def bulk_insert(client, table: str, homes: int, ticks: int, regions, seed: int, start_ms: int, step_ms: int,
                ticks_per_insert: int | None = None) -> dict:
    """Insert ``homes x ticks`` simulated readings with insert_arrow, ~100k rows per
    insert. Returns rows, seconds spent inserting, and seconds in total."""
    from producers.simulator import CitySimulator

    sim = CitySimulator(homes, regions, seed, start_ms, step_ms=step_ms)
    per = ticks_per_insert or max(1, 100_000 // homes)
    rows = inserting = 0.0
    t0 = time.perf_counter()
    done = 0
    while done < ticks:
        n = min(per, ticks - done)
        table_ = arrow_batch([sim.tick_columns() for _ in range(n)], offset=int(rows))
        t1 = time.perf_counter()
        client.insert_arrow(table, table_)
        inserting += time.perf_counter() - t1
        rows += table_.num_rows
        done += n
    return {"rows": int(rows), "insert_s": inserting, "total_s": time.perf_counter() - t0}


def _count(client, table: str) -> int:
    return int(client.command(f"SELECT count() FROM {table}"))


# ----------------------------------------------------------------- ingest
def _spawn_sink(settings: Settings, log_path, *args: str) -> processes.Proc:
    return processes.start_cli(settings, "sink", ["sink", "--topic", "telemetry", *args], log_path)


def _wait_assigned(proc: processes.Proc, log_path, timeout: float = 60.0) -> float:
    try:
        return proc.wait_healthy(lambda: " assigned " in open(log_path, errors="replace").read(), timeout, 0.1)
    except CommandError:
        raise RuntimeError(f"the sink did not get its partitions (see {log_path})") from None


def _watch_many(client, targets: dict[str, str], expected: int, t_origin: float, t_produced, timeout: float) -> dict:
    """Poll ``SELECT count() …`` of several targets every 0.1 s until each holds
    ``expected`` rows. Per target: when its first rows and all rows were stored
    (seconds after ``t_origin``), ``rows_per_s`` = expected / that time, and how long
    after the producer finished it was complete."""
    first: dict[str, float] = {}
    out: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(out) < len(targets) and time.monotonic() < deadline:
        for name, sql in targets.items():
            if name in out:
                continue
            n = int(client.command(sql))
            now = time.monotonic()
            if n and name not in first:
                first[name] = now
            if n >= expected:
                done = t_produced() if callable(t_produced) else t_produced
                out[name] = {"rows": n, "first_rows_s": first[name] - t_origin, "all_rows_s": now - t_origin,
                             "rows_per_s": n / (now - t_origin),
                             "after_producer_s": (now - done) if done else float("nan")}
        time.sleep(0.1)
    missing = set(targets) - set(out)
    if missing:
        raise RuntimeError(f"{', '.join(sorted(missing))}: fewer than {expected:,} rows after {timeout:.0f}s")
    return out


def _start_where_the_engine_is(settings: Settings, group: str) -> dict[int, int]:
    """Commit, for ``group``, the offsets the stack's telemetry path (the Kafka engine's
    group, or the telemetry sink's, by ECO_TELEMETRY_INGEST) has committed on the
    telemetry topic, so the sink starts exactly where that path is. (Not
    ``auto.offset.reset=latest``: Tansu's high watermarks are wrong, and "latest"
    lands at the start of the last producer batch, up to 100k+ messages back.)"""
    from confluent_kafka import Consumer, TopicPartition

    from sinks.warehouse import ddl_params
    from sinks.wiring import group_for

    topic = settings.topic_telemetry
    engine_group = (f"{ddl_params(settings)['consumer_group_prefix']}-telemetry"
                    if settings.telemetry_ingest == "kafka_engine" else group_for("telemetry", "warehouse"))
    tps = [TopicPartition(topic, p) for p in range(settings.telemetry_partitions)]
    base = {**settings.kafka_client_config(), "enable.auto.commit": False}
    c = Consumer({**base, "group.id": engine_group})
    try:
        committed = [tp for tp in c.committed(tps, timeout=10) if tp.offset >= 0]
    finally:
        c.close()
    c = Consumer({**base, "group.id": group})
    try:
        if committed:
            c.commit(offsets=committed, asynchronous=False)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in committed}


def _delete_homes(client, database: str, where: str) -> None:
    """Remove the benchmark's homes (``where``) from every MergeTree table of
    ``database`` that has a home_id column (raw tables, sink tables, per-home roll-ups;
    the per-region roll-ups keep their share)."""
    tables = [r[0] for r in client.query(
        "SELECT t.name FROM system.tables AS t INNER JOIN system.columns AS c "
        "ON c.database = t.database AND c.table = t.name "
        "WHERE t.database = {db:String} AND c.name = 'home_id' AND t.engine LIKE '%MergeTree'",
        parameters={"db": database}).result_rows]
    for t in tables:
        # asynchronous: a mutation waited for (mutations_sync) once hung the embedded warehouse
        client.command(f"ALTER TABLE {database}.{t} DELETE WHERE {where}")


def bench_ingest(settings: Settings, readings: int = 300_000, homes: int = 1000, database: str = BENCH_DB,
                 keep: bool = False) -> dict:
    """Rows/s through the Kafka engine, the batching sink and a bulk insert, one run.

    1. live: a sink (a group of its own, starting at the offsets the stack's telemetry
       path has committed) joins the real telemetry topic; then ``readings`` readings of
       a benchmark region are produced to it as fast as the producer goes. The stack's
       path into ``telemetry`` (ECO_TELEMETRY_INGEST: the Kafka engine, or the stack's
       telemetry sink, with the roll-up views either way) and the bench's sink into
       ``telemetry_sink`` (no views) consume them side by side; each figure is
       readings / (time from the first produce call to the last row stored). A path
       that completes within a second or two of the producer kept up: its figure is
       then set by the producer, a lower bound of what it can do.
    2. backlog: the same readings on a topic of their own, already produced, drained by
       a fresh sink into ``<database>.telemetry`` (its roll-up views and the (home_id,
       seq) filter included, as in ECO_TELEMETRY_INGEST=sink): the sink's own ceiling.
    3. bulk: the same readings with insert_arrow, 100k rows per insert.

    The readings are of homes no city has (``BENCH_FIRST_HOME`` on), in the city's first
    region (the warehouse stores known regions only), and are deleted from the
    pipeline's tables afterwards. They stay in the telemetry topic (Kafka cannot delete
    them): a group that later starts from the earliest offset (a new sink group, a
    rebuilt warehouse) stores them again, under those home ids.
    """
    import tempfile

    from producers.producer import TelemetryProducer, run_backfill
    from producers.simulator import CitySimulator, home_id
    from sinks.warehouse import connect

    ticks = max(1, readings // homes)
    expected = homes * ticks
    start_ms = int(time.time() * 1000) - ticks * 1000
    region = settings.regions[0]
    db = settings.clickhouse_database
    client = connect(settings)
    logs = settings.data_dir / "logs"
    log_dir = logs if logs.is_dir() else Path(tempfile.mkdtemp(prefix="eco-bench-"))
    out: dict[str, object] = {"readings": expected, "homes": homes, "region": region}
    first = BENCH_FIRST_HOME + int(uuid.uuid4().int % 1000) * 100_000  # a run's own homes
    if homes > 100_000:
        raise CommandError("bench ingest: at most 100,000 homes")
    ours = f"home_id >= '{home_id(first)}' AND home_id <= '{home_id(first + homes - 1)}' AND length(home_id) = 10"
    group = f"eco-bench-sink-{uuid.uuid4().hex[:6]}"
    try:
        # 1. live, side by side
        log1 = log_dir / f"bench-{group}.log"
        _start_where_the_engine_is(settings, group)
        sink = _spawn_sink(settings, log1, "--group", group, "--table", "telemetry_sink")
        try:
            out["sink_join_s"] = _wait_assigned(sink, log1)
            time.sleep(1)
            producer = TelemetryProducer(settings)
            sim = CitySimulator(homes, [region], settings.seed, start_ms, first_home=first)
            t_start = time.monotonic()
            finished: dict[str, float] = {}
            import threading

            def produce():
                with producer:
                    run_backfill(sim, producer, start_ms, ticks, progress=False)
                finished["t"] = time.monotonic()

            thread = threading.Thread(target=produce, daemon=True)
            thread.start()
            where = f"WHERE region = '{region}' AND {ours}"
            out["telemetry_path"] = settings.telemetry_ingest
            live = _watch_many(client, {
                "telemetry": f"SELECT count() FROM {db}.telemetry {where}",
                "sink": f"SELECT count() FROM {db}.telemetry_sink {where}",
            }, expected, t_start, lambda: finished.get("t"), 300)
            thread.join()
            if producer.stats.failed:
                raise RuntimeError(f"{producer.stats.failed} readings were not acknowledged")
            out["produce_readings_per_s"] = producer.stats.acked / (finished["t"] - t_start)
            out["live"] = live
            out["live_stored"] = {
                "telemetry": client.query(f"SELECT count(), uniqExact(home_id, ts) FROM {db}.telemetry {where}").result_rows[0],
                "sink": client.query(f"SELECT count(), uniqExact(home_id, ts) FROM {db}.telemetry_sink {where}").result_rows[0],
            }
        finally:
            sink.stop(timeout=60)

        # 2. the sink alone, from a backlog
        topic = f"eco.bench.ingest.{uuid.uuid4().hex[:6]}"
        ensure_topics(settings, {topic: settings.telemetry_partitions})
        bclient = create_bench_database(settings, database)
        bs = bench_settings(settings, database).replace(topic_telemetry=topic)
        with TelemetryProducer(bs) as producer:
            run_backfill(CitySimulator(homes, [region], settings.seed, start_ms, first_home=first), producer, start_ms, ticks,
                         progress=False)
        log2 = log_dir / f"bench-{group}-backlog.log"
        t_spawn = time.monotonic()
        sink = _spawn_sink(bs, log2, "--group", group + "-backlog", "--exit-when-idle", "2", "--table", "telemetry")
        try:
            _wait_assigned(sink, log2)
            t_start = time.monotonic()  # timed from the assignment: start-up and join apart
            out["backlog"] = _watch_many(bclient, {"sink": f"SELECT count() FROM {database}.telemetry"},
                                         expected, t_start, t_start, 300)["sink"]
            out["backlog"]["start_and_join_s"] = t_start - t_spawn
        finally:
            sink.stop(timeout=60)

        # 3. bulk insert of the same readings (same simulator, same seed)
        bclient.command(f"CREATE TABLE {database}.ingest_bulk AS {database}.telemetry_sink")
        r = bulk_insert(bclient, f"{database}.ingest_bulk", homes, ticks, [region], settings.seed, start_ms, 1000)
        out["bulk"] = {"rows": r["rows"], "rows_per_s": r["rows"] / r["insert_s"],
                       "rows_per_s_incl_generation": r["rows"] / r["total_s"]}
    finally:
        if not keep:
            _delete_homes(client, db, ours)
            client.command(f"ALTER TABLE {db}.sink_batches DELETE WHERE sink LIKE '{group}%'")
            drop_bench_database(settings, database)
    return out


# ---------------------------------------------------------------- queries
BASELINE_QUERIES = {
    "select_1 (round trip)": "SELECT 1",
    "full_scan_power_w": "SELECT sum(power_w) FROM {t}",
}


def _time_call(call, runs: int) -> dict:
    """p50 and p99 of ``runs`` calls after one warm-up (caches, marks); ``rows`` is what
    the last call returned."""
    call()
    times = []
    rows = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - t0)
        rows = len(result)
    p50, p99 = np.percentile(times, [50, 99])
    return {"p50_s": float(p50), "p99_s": float(p99), "runs": runs, "rows": rows}


def _time_query(client, sql: str, params: dict | None = None, runs: int = 3) -> dict:
    return _time_call(lambda: client.query(sql, parameters=params or None).result_rows, runs)


def dashboard_calls(settings: Settings, client, table: str, end_ms: int) -> dict:
    """The twin service's own warehouse reads (twin/warehouse_history.py), as its pages
    make them: a home's hourly chart and the city's regions over a day, a home's last
    hour by minute, and the what-if calibration's week of 5-minute means."""
    from twin.warehouse_history import WarehouseHistory

    home = "H000042"
    region = client.command(f"SELECT any(region) FROM {table} WHERE home_id = {{h:String}}", parameters={"h": home})
    history = WarehouseHistory(settings, lambda _home: region)
    day = 86_400_000
    return {
        "home page: hourly chart, 24 h": lambda: history.telemetry(home, end_ms - day, end_ms, "hour"),
        "city page: energy per region and hour, 24 h": lambda: history.regions(end_ms - day, end_ms),
        "home page: every metric by minute, 1 h": lambda: history.recent(home, end_ms - 3_600_000, end_ms)["t"],
        "what-if: calibration, 7 days of 5-min means": lambda: history.observations(home, end_ms).ts_ms,
    }


def named_queries(settings: Settings, until: str) -> dict[str, tuple[str, dict]]:
    """Every sinks/queries/*.sql with its declared defaults, ``until`` (if declared)
    set to the end of the benchmark data."""
    from sinks.named_queries import QUERIES_DIR, load_named

    out = {}
    for path in sorted(QUERIES_DIR.glob("*.sql")):
        name = path.stem
        try:
            q = load_named(name)
            params = q.bind({"until": until} if any(p.name == "until" for p in q.params) else {})
            out[name] = (q.sql(settings), params)
        except Exception as exc:  # a query being written right now may not parse yet
            out[name] = (None, {"error": str(exc)})
    return out


def bench_queries(settings: Settings, rows: int = 10_000_000, homes: int = 2000, database: str = BENCH_DB,
                  keep: bool = False, runs: int = 20) -> dict:
    """Latency (p50, p99 of ``runs``) of the named queries and of the dashboard's own
    warehouse reads over ``rows`` readings of the last day."""
    import datetime as dt

    ticks = max(1, rows // homes)
    step_ms = max(1, 86_400_000 // ticks)  # one day of data
    end_ms = (int(time.time() * 1000) // 3_600_000) * 3_600_000  # the last full hour
    start_ms = end_ms - ticks * step_ms
    client = create_bench_database(settings, database)
    bs = bench_settings(settings, database)
    table = f"{database}.telemetry"
    out: dict[str, object] = {"homes": homes}
    try:
        fill = bulk_insert(client, table, homes, ticks, settings.regions, settings.seed, start_ms, step_ms)
        out["rows"] = _count(client, table)
        out["fill_rows_per_s"] = fill["rows"] / fill["insert_s"]
        out["fill_s"] = fill["total_s"]
        client.command(f"OPTIMIZE TABLE {table} FINAL")  # as a table looks after background merges
        fmt = lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        until = fmt(end_ms)
        subs = {"t": table}
        results: dict[str, dict] = {}
        for name, sql in BASELINE_QUERIES.items():
            results[f"baseline:{name}"] = _time_query(client, sql.format(**subs), runs=runs)
        for name, call in dashboard_calls(bs, client, table, end_ms).items():
            results[f"dashboard:{name}"] = _time_call(call, runs)
        for name, (sql, params) in named_queries(bs, until).items():
            if sql is None:
                results[f"named:{name}"] = {"error": params["error"]}
                continue
            try:
                results[f"named:{name}"] = _time_query(client, sql, params, runs=runs)
            except Exception as exc:
                from sinks.warehouse import error_line

                results[f"named:{name}"] = {"error": error_line(exc)[:200]}
        out["queries"] = results
        out["data_from"], out["data_until"] = fmt(start_ms), until
    finally:
        if not keep:
            drop_bench_database(settings, database)
    return out


# ---------------------------------------------------------------- report
def bench_lake(settings: Settings, readings: int = 5_000_000, homes: int | None = None, ceiling_rows: int = 2_000_000,
               stack=None) -> dict:
    """The lake path at scale beside the bulk ceiling, one run.

    1. lake: ``ecoretrofit demo --readings`` 's own load (ecoretrofit/demo_bulk.py:
       simulator -> Parquet objects in the landing prefix -> the stack's lake ingester
       -> telemetry, plausibility views and roll-ups), with the warehouse service's RSS
       sampled every 0.5 s (its peak is reported).
    2. ceiling: ``ceiling_rows`` of the same simulator inserted with insert_arrow into a
       table of telemetry's layout (without the plausibility and roll-up views the lake
       path also runs), 100k rows per insert, as ``bench_ingest``'s ceiling.
    """
    import threading

    from ecoretrofit import demo_bulk

    homes = homes or settings.homes
    pid = stack.pid_of("warehouse") if stack is not None else None
    peak = {"rss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["rss"] = max(peak["rss"], _rss_bytes(pid))
            done.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    if pid:
        sampler.start()
    try:
        lake = demo_bulk.load(settings, readings, homes, out=lambda line: print(line, file=sys.stderr))
    finally:
        done.set()
    from sinks.warehouse import connect

    client = connect(settings)
    db = settings.clickhouse_database
    table = f"{db}.bench_ceiling_{uuid.uuid4().hex[:8]}"
    # telemetry's layout without its views; dropped without SYNC (a DROP … SYNC right
    # after a heavy load once hung the embedded warehouse)
    client.command(f"CREATE TABLE {table} AS {db}.telemetry")
    try:
        ticks = max(1, ceiling_rows // homes)
        start_ms = int(time.time() * 1000) - ticks * 1000
        bulk = bulk_insert(client, table, homes, ticks, settings.regions, settings.seed, start_ms, 1000)
    finally:
        client.command(f"DROP TABLE IF EXISTS {table}")
    lake_rate = lake.stored / lake.seconds
    ceiling = bulk["rows"] / bulk["insert_s"]
    return {"readings": readings, "homes": homes, "produced": lake.produced, "stored": lake.stored,
            "distinct": lake.distinct, "dead_letters": lake.dead_letters, "objects": lake.objects,
            "exact": lake.exact, "seconds": lake.seconds, "rows_per_s": lake_rate,
            "ceiling_rows": bulk["rows"], "ceiling_rows_per_s": ceiling, "ratio": lake_rate / ceiling,
            "warehouse_peak_rss_bytes": peak["rss"] or None}


def _rss_bytes(pid: int | None) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def print_lake(r: dict) -> None:
    rss = r["warehouse_peak_rss_bytes"]
    print(f"lake      {r['readings']:,} readings ({r['homes']:,} homes) through S3 objects and the lake ingester")
    print(f"          stored {r['stored']:,}, distinct (home, ts) {r['distinct']:,}, produced {r['produced']:,}, "
          f"dead letters {r['dead_letters']:,}: {'exactly once' if r['exact'] else 'MISMATCH'}")
    print(f"          lake path                 {r['rows_per_s']:>10,.0f} rows/s  ({r['seconds']:.0f}s, "
          f"{r['objects']:,} objects)")
    print(f"          bulk insert_arrow         {r['ceiling_rows_per_s']:>10,.0f} rows/s  (ceiling, "
          f"{r['ceiling_rows']:,} rows, telemetry's layout without views)")
    print(f"          ratio                     {r['ratio']:>10.0%}")
    print(f"          warehouse peak RSS        " + (f"{rss / 2**20:>10,.0f} MiB" if rss else "   unknown (not the local stack)"))


def print_ingest(r: dict) -> None:
    k, s, b, bl = r["live"]["telemetry"], r["live"]["sink"], r["bulk"], r["backlog"]
    print(f"ingest    {r['readings']:,} readings ({r['homes']:,} homes) stored three ways; producer "
          f"{r['produce_readings_per_s']:,.0f} readings/s")
    path = {"kafka_engine": "Kafka engine -> MV", "sink": "stack's sink      "}[r["telemetry_path"]]
    for label, x in ((f"{path} (live)", k), ("sink, no views    (live)", s)):
        print(f"          {label}  {x['rows_per_s']:>10,.0f} rows/s  all stored {x['after_producer_s']:.1f}s "
              f"after the producer finished")
    print(f"          sink + views   (backlog)  {bl['rows_per_s']:>10,.0f} rows/s  (from its assignment; "
          f"start-up and join {bl['start_and_join_s']:.1f}s)")
    print(f"          bulk insert_arrow         {b['rows_per_s']:>10,.0f} rows/s  (ceiling; "
          f"{b['rows_per_s_incl_generation']:,.0f}/s incl. simulating them)")
    print(f"          stored (rows, distinct)   {r['live_stored']}")


def print_queries(r: dict) -> None:
    print(f"queries   {r['rows']:,} rows ({r['homes']:,} homes, {r['data_from']} .. {r['data_until']} UTC), "
          f"filled by bulk insert at {r['fill_rows_per_s']:,.0f} rows/s incl. roll-up views")
    for name, q in r["queries"].items():
        if "error" in q:
            print(f"          {name:<44} ERROR {q['error']}")
        else:
            print(f"          {name:<58} p50 {q['p50_s'] * 1000:>8.1f} ms  p99 {q['p99_s'] * 1000:>8.1f} ms  "
                  f"({q['runs']} runs, {q['rows']:,} rows)")
