"""``ecoretrofit demo --readings N``: the warehouse at scale, through the lake.

The simulator writes N readings as Parquet objects to the lake bucket's landing prefix
(producers/lake_bulk.py: one object per (date, region) per chunk of ticks); the lake
ingester of the stack (``ecoretrofit lake ingest``, sinks/lake_ingest.py) stores each
object once as it lands. A progress bar follows the ingester's ledger (rows stored of
N, rate, ETA); the summary counts the run's rows in ClickHouse: count(), distinct
(home, ts), dead letters, against what was produced.

The readings are backdated to end just before the oldest reading the warehouse holds
(or now), so the run's time window holds only its own readings and the counts are
exact without a marker column.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError

STEP_MS = 1000
ROWS_PER_CHUNK = 1_000_000


@dataclass
class BulkResult:
    readings: int
    produced: int
    stored: int
    distinct: int
    dead_letters: int
    objects: int
    seconds: float
    start_ms: int
    end_ms: int

    @property
    def exact(self) -> bool:
        return self.produced == self.readings == self.stored + self.dead_letters and self.distinct == self.stored


def time_window(now_ms: int, oldest_ms: int | None, readings: int, homes: int, step_ms: int = STEP_MS
                ) -> tuple[int, int]:
    """(start, end) in ms for ``readings`` backdated readings of ``homes`` homes,
    ending before ``oldest_ms`` (the oldest reading stored) or at ``now_ms`` (pure).
    10% more ticks than needed: meter dropouts skip readings.

    >>> time_window(10_000_000, None, 2_000, 100)
    (9968000, 10000000)
    >>> time_window(10_000_000, 5_000_500, 2_000, 100)
    (4968000, 5000000)
    """
    end = now_ms if oldest_ms is None else min(now_ms, oldest_ms)
    end = end // step_ms * step_ms
    ticks = math.ceil(readings / homes * 1.1) + 10
    return end - ticks * step_ms, end


def run_bulk(settings: Settings, readings: int, homes: int, keep_running: bool = False, out=print) -> BulkResult:
    from infra.localstack.stack import LocalStack

    if readings < 1:
        raise CommandError("--readings must be at least 1")
    stack = LocalStack(settings)
    out(f"EcoRetrofit Streams bulk demo: {readings:,} readings of {homes:,} homes through the lake\n")
    out("1/4 local stack (with the lake ingester)")
    started = stack.up()
    try:
        result = load(settings, readings, homes, out)
        print_summary(settings, result, out)
        showcase(settings, result, out)
        return result
    finally:
        if not keep_running and started:
            stack.down(only=started)
        elif started:
            out("\nthe stack keeps running: `ecoretrofit stack down` stops it")


def load(settings: Settings, readings: int, homes: int, out=print) -> BulkResult:
    """Write ``readings`` readings to the landing prefix and follow the running
    ingester until every one is stored; count them (the stack must be up)."""
    from tqdm import tqdm

    from ecoretrofit.admin import s3_client
    from producers.lake_bulk import LakeChunks, parquet_bytes
    from producers.simulator import CitySimulator
    from schemas import plausibility
    from sinks import lake_ingest, warehouse

    client = warehouse.connect(settings)
    db = settings.clickhouse_database
    s3 = s3_client(settings)
    now_ms = int(time.time() * 1000)
    n_stored, oldest = client.query(f"SELECT count(), toUnixTimestamp64Milli(min(ts)) FROM {db}.telemetry").result_rows[0]
    start_ms, end_ms = time_window(now_ms, int(oldest) if n_stored else None, readings, homes)
    if start_ms < now_ms - plausibility.MAX_PAST_MS + 86_400_000:
        raise CommandError("the warehouse holds readings too far back for a backdated run to fit before them; "
                           "use a fresh ECO_DATA_DIR")
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)
    sim = CitySimulator(homes, settings.regions, settings.seed, start_ms, step_ms=STEP_MS)
    chunks = LakeChunks(sim, run_id, max(1, ROWS_PER_CHUNK // homes), readings)
    like = f"%/bulk-{run_id}-%"
    state = {"objects": 0, "error": None, "done": False}

    def produce() -> None:
        # Parquet encoding here, uploads on two threads (both release the GIL); at most
        # a few chunks in flight keeps memory bounded.
        slots = threading.Semaphore(8)
        try:
            with ThreadPoolExecutor(2) as pool:
                futures = []
                for chunk in chunks:
                    for key, table in chunk:
                        body = parquet_bytes(table)
                        slots.acquire()
                        fut = pool.submit(s3.put_object, Bucket=settings.s3_lake_bucket, Key=key, Body=body)
                        fut.add_done_callback(lambda _f: slots.release())
                        futures.append(fut)
                        state["objects"] += 1
                for f in futures:
                    f.result()
        except BaseException as exc:  # reported by the main thread
            state["error"] = exc
        finally:
            state["done"] = True

    out(f"2/4 simulating {readings:,} readings ({start_ms} .. {end_ms} ms) into "
        f"s3://{settings.s3_lake_bucket}/{chunks.prefix}/ ; the ingester stores each object as it lands")
    t0 = time.monotonic()
    producer = threading.Thread(target=produce, name="bulk-producer", daemon=True)
    producer.start()
    stored = 0
    last_progress = time.monotonic()
    with tqdm(total=readings, unit="rows", unit_scale=True, dynamic_ncols=True, desc="stored") as bar:
        while True:
            time.sleep(1.0)
            now = int(client.command(
                f"SELECT sum(rows) FROM {db}.{lake_ingest.LEDGER_TABLE} FINAL WHERE key LIKE {{like:String}}",
                parameters={"like": like}) or 0)
            if now > stored:
                bar.update(now - stored)
                stored = now
                last_progress = time.monotonic()
            bar.set_postfix(produced=f"{chunks.produced:,}", objects=state["objects"])
            if state["error"] is not None:
                raise CommandError(f"writing the lake failed: {state['error']}")
            if state["done"] and stored >= chunks.produced:
                break
            if time.monotonic() - last_progress > 300:
                raise CommandError("no object stored for 300 s: is the lake ingester running? "
                                   "(see logs/lake-ingest.log in the data directory)")
    seconds = time.monotonic() - t0
    out("3/4 counting the run's rows in ClickHouse")
    window = ("ts >= fromUnixTimestamp64Milli({a:Int64}) AND ts <= fromUnixTimestamp64Milli({b:Int64})")
    params = {"a": chunks.first_ts or start_ms, "b": chunks.last_ts or start_ms}
    count, distinct = client.query(
        f"SELECT count(), uniqExact(home_id, ts) FROM {db}.telemetry WHERE {window}", parameters=params
    ).result_rows[0]
    dead = int(client.command(f"SELECT count() FROM {db}.dead_letters WHERE topic LIKE {{like:String}}",
                              parameters={"like": "lake:" + like}))
    return BulkResult(readings, chunks.produced, int(count), int(distinct), dead, state["objects"], seconds,
                      params["a"], params["b"])


def print_summary(settings: Settings, r: BulkResult, out=print) -> None:
    db = settings.clickhouse_database
    ok = "OK, exactly once" if r.exact else "MISMATCH"
    out("\n================ summary ================")
    out(f"readings asked for        {r.readings:>14,}")
    out(f"produced (lake objects)   {r.produced:>14,}   in {r.objects:,} objects")
    out(f"stored: count()           {r.stored:>14,}")
    out(f"stored: distinct (home,ts){r.distinct:>14,}   {ok}")
    out(f"dead letters              {r.dead_letters:>14,}")
    out(f"time                      {r.seconds:>13,.1f}s   {r.stored / max(r.seconds, 1e-9):,.0f} rows/s stored")
    out("\nwhere to look next:")
    out(f'  ecoretrofit query "SELECT region, count() FROM {db}.telemetry GROUP BY region"')
    out("  ecoretrofit lake stats --prefix landing/telemetry      # the lake through s3(), before import")
    out(f'  ecoretrofit query "SELECT status, count(), sum(rows) FROM {db}.lake_ingested GROUP BY status"')


def _hour(ms: int) -> str:
    """The named queries' time format, to the hour: ``_hour(0) == '1970-01-01 00:00:00'``."""
    import datetime as dt

    return dt.datetime.fromtimestamp(ms // 3_600_000 * 3600, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def showcase(settings: Settings, r: BulkResult, out=print) -> None:
    """What the warehouse answers at this size, each with its time: the roll-ups, the
    SQL anomaly queries (the named queries ``ecoretrofit query --named`` runs), the
    lake read in place through s3(), and the dashboard."""
    from sinks import lake, warehouse
    from sinks.named_queries import load_named
    from twin.auth import dashboard_url

    client = warehouse.connect(settings)
    since, until = _hour(r.start_ms), _hour(r.end_ms + 3_600_000)
    out(f"\n4/4 the warehouse at {r.stored:,} readings ({since} .. {until} UTC)")

    def timed(title: str, run):
        t0 = time.perf_counter()
        try:
            rows = run()
        except Exception as exc:  # a showcase query failing must not hide the summary
            out(f"  {title}: failed: {warehouse.error_line(exc)[:200]}")
            return None
        out(f"  {title}: {len(rows):,} rows in {(time.perf_counter() - t0) * 1000:,.0f} ms")
        return rows

    def named(name: str, **given) -> list[dict]:
        q = load_named(name)
        return list(client.query(q.sql(settings),
                                 parameters=q.bind({k: str(v) for k, v in given.items()})).named_results())

    def show(rows, n: int = 3) -> None:
        for row in (rows or [])[:n]:
            out("      " + ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in row.items()))

    rows = timed("roll-up: energy per region and hour (hourly_energy by=region)",
                 lambda: named("hourly_energy", by="region", since=since, until=until))
    show(rows)
    rows = timed("roll-up: daily peaks (daily_peaks)",
                 lambda: named("daily_peaks", since=since[:10], until=_hour(r.end_ms + 86_400_000)[:10]))
    rows = timed("anomalies in SQL: homes above their region's p99 in an hour (quantile_outliers)",
                 lambda: named("quantile_outliers", since=since, until=until))
    show(rows)
    home = client.command(f"SELECT any(home_id) FROM {settings.clickhouse_database}.telemetry "
                          "WHERE ts >= fromUnixTimestamp64Milli({a:Int64}) AND ts <= fromUnixTimestamp64Milli({b:Int64})",
                          parameters={"a": r.start_ms, "b": r.end_ms})
    timed(f"anomalies in SQL: rolling z-score of {home}'s power (zscore)",
          lambda: named("zscore", home=home, since=since, until=until))
    rows = timed("the lake read in place: s3() over the landing objects, by date and region",
                 lambda: lake.stats(settings, client, prefix="landing/telemetry"))
    if rows:
        out(f"      {sum(x[2] for x in rows):,} objects, {sum(x[3] for x in rows):,} rows in the lake "
            f"(the ingester stored {r.stored:,} of them)")
    out(f"  the dashboard (while the stack runs; --keep-running keeps it): {dashboard_url(settings)}")
