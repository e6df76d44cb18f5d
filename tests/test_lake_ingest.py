"""Continuous S3 ingestion (sinks/lake_ingest.py) against the real stack: objects that
land in the lake bucket are stored in ClickHouse once, with implausible readings and
unreadable objects dead-lettered, across an ingester SIGKILL and a warehouse restart.

Each test uses a fresh region, so it counts only its own rows; all but the first write
under a key prefix of their own, which the stack's own ingester (landing/telemetry/)
never sees.
"""

from __future__ import annotations

import signal
import time

import pytest

from conftest import spawn, stop
from helpers import fresh_region, unique, wait_for
from producers.lake_bulk import LakeChunks, parquet_bytes
from producers.simulator import CitySimulator
from sinks import lake_ingest, warehouse
from sinks.lake import LANDING_PREFIX


def _objects(region: str, prefix: str, readings: int, homes: int = 500, ticks_per_chunk: int = 400):
    sim = CitySimulator(homes, [region], 11, int(time.time() * 1000) // 1000 * 1000 - 3_600_000)
    chunks = LakeChunks(sim, unique("t"), ticks_per_chunk, readings, prefix=prefix)
    return [obj for chunk in chunks for obj in chunk], chunks


def _put(settings, s3, objs):
    for key, table in objs:
        s3.put_object(Bucket=settings.s3_lake_bucket, Key=key, Body=parquet_bytes(table))


def _counts(client, db: str, region: str) -> tuple[int, int, int]:
    """count(), distinct (home, ts) in telemetry, and the hourly roll-up's reading count."""
    n, distinct = client.query(f"SELECT count(), uniqExact(home_id, ts) FROM {db}.telemetry WHERE region = {{r:String}}",
                               parameters={"r": region}).result_rows[0]
    rolled = client.command(f"SELECT sum(readings) FROM {db}.energy_hourly_by_home WHERE region = {{r:String}}",
                            parameters={"r": region})
    return int(n), int(distinct), int(rolled or 0)


@pytest.fixture
def s3(stack_settings):
    from ecoretrofit.admin import s3_client

    return s3_client(stack_settings)


def test_the_stacks_ingester_stores_an_object_dropped_in_the_landing_prefix(stack_settings, s3):
    s, db = stack_settings, stack_settings.clickhouse_database
    region = fresh_region()
    objs, chunks = _objects(region, LANDING_PREFIX, 5_000, homes=100, ticks_per_chunk=60)
    client = warehouse.connect(s)
    t0 = time.monotonic()
    _put(s, s3, objs)
    wait_for(lambda: _counts(client, db, region)[0] >= chunks.produced, 60, 0.2, what="the object's rows stored")
    print(f"queryable {time.monotonic() - t0:.1f}s after the put")
    time.sleep(3)  # a few more listings: still once
    assert _counts(client, db, region) == (chunks.produced,) * 3


def test_object_is_stored_once_even_when_ingested_again(stack_settings, s3):
    s, db = stack_settings, stack_settings.clickhouse_database
    region, prefix = fresh_region(), unique("lake-test") + "/telemetry"
    objs, chunks = _objects(region, prefix, 30_000)
    _put(s, s3, objs)
    client = warehouse.connect(s)
    ingester = lake_ingest.LakeIngester(s, client, s3, prefix=prefix)
    ingester.prepare()
    t0 = time.monotonic()
    assert ingester.run_once() == len(objs)
    took = time.monotonic() - t0
    assert _counts(client, db, region) == (chunks.produced,) * 3, took
    # A crash between an insert and its ledger row, or a second ingester, repeats the
    # insert: nothing more is stored, in telemetry or in the roll-ups.
    for key, _ in objs:
        ingester.ingest(key)
    # a fresh ingester (a restart) reads the ledger and ingests nothing
    again = lake_ingest.LakeIngester(s, client, s3, prefix=prefix)
    again.prepare()
    assert again.pending() == [] and again.run_once() == 0
    assert _counts(client, db, region) == (chunks.produced,) * 3
    rows = client.query(f"SELECT count(), sum(rows) FROM {db}.lake_ingested FINAL WHERE startsWith(key, {{p:String}})",
                        parameters={"p": prefix}).result_rows[0]
    assert rows == (len(objs), chunks.produced)


def test_implausible_readings_and_unreadable_objects_are_dead_lettered(stack_settings, s3):
    import pyarrow as pa

    s, db = stack_settings, stack_settings.clickhouse_database
    region, prefix = fresh_region(), unique("lake-test") + "/telemetry"
    objs, chunks = _objects(region, prefix, 1_000, homes=100, ticks_per_chunk=10)
    (key, table), = objs
    power = table.column("power_w").to_numpy().copy()
    power[:3] = -5.0  # outside the contract's range
    bad = table.set_column(table.schema.get_field_index("power_w"), table.schema.field("power_w"), pa.array(power))
    _put(s, s3, [(key, bad)])
    junk = f"{prefix}/date=2026-01-01/region={region}/junk.parquet"
    s3.put_object(Bucket=s.s3_lake_bucket, Key=junk, Body=b"this is not parquet")
    client = warehouse.connect(s)
    ingester = lake_ingest.LakeIngester(s, client, s3, prefix=prefix)
    ingester.prepare()
    assert ingester.run_once() == 2
    assert _counts(client, db, region)[0] == chunks.produced - 3
    dead = client.query(f"SELECT topic, error FROM {db}.dead_letters WHERE startsWith(topic, {{t:String}}) ORDER BY error",
                        parameters={"t": "lake:" + prefix}).result_rows
    implausible = [e for t, e in dead if t == "lake:" + key]
    assert len(implausible) == 3 and all("power_w: -5" in e for e in implausible)
    assert [e for t, e in dead if t == "lake:" + junk][0].startswith("unreadable lake object")
    status = dict(client.query(f"SELECT key, status FROM {db}.lake_ingested FINAL WHERE startsWith(key, {{p:String}})",
                               parameters={"p": prefix}).result_rows)
    assert status == {key: "stored", junk: "rejected"}
    ingester.ingest(key)  # again: the dead letters are not repeated either
    assert client.command(f"SELECT count() FROM {db}.dead_letters WHERE topic = {{t:String}}",
                          parameters={"t": "lake:" + key}) == 3


def test_ingester_killed_mid_load_and_warehouse_restart_store_exactly_the_produced_rows(stack, stack_settings, s3):
    s, db = stack_settings, stack_settings.clickhouse_database
    region, prefix = fresh_region(), unique("lake-test") + "/telemetry"
    objs, chunks = _objects(region, prefix, 1_000_000, homes=1000, ticks_per_chunk=100)  # 10 objects
    _put(s, s3, objs)
    client = warehouse.connect(s)
    args = ("lake", "ingest", "--prefix", prefix, "--poll", "0.2")
    proc = spawn(s, *args, log_name=unique("lake-ingest"))
    try:
        def ledger() -> int:
            return int(client.command(f"SELECT count() FROM {db}.lake_ingested WHERE startsWith(key, {{p:String}})",
                                      parameters={"p": prefix}))

        wait_for(lambda: ledger() >= 2, 120, what="the first objects stored")
        stop(proc, signal.SIGKILL)
        assert ledger() < len(objs), "killed too late to prove anything"
        stored_at_kill = _counts(client, db, region)[0]
        stack.restart("warehouse")
        proc = spawn(s, *args, log_name=unique("lake-ingest"))
        wait_for(lambda: ledger() >= len(objs), 240, what="every object stored")
    finally:
        stop(proc)
    n, distinct, rolled = _counts(client, db, region)
    assert (n, distinct, rolled) == (chunks.produced,) * 3, f"{stored_at_kill:,} rows stored at the kill"
