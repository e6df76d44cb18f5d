"""The telemetry data lake (sinks/lake.py): Parquet files in S3 written by the batching
sink, read by ClickHouse's s3(), replayed into MergeTree by ``lake import``.

Unit tests need nothing; the integration tests use the session's local stack, a topic
of their own, a key prefix of their own and a random far-away date, so they never see
other tests' data.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import random
import re
import signal
import time
import urllib.request

import pytest

from sinks.lake import LakeWriter, S3Ledger, day_of, group_rows
from sinks.batching import Batch
from helpers import fresh_region, unique

DAY_MS = 86_400_000


# ===================================================================== unit
def reading(home, region, ts, offset):
    return (home, region, ts, 1, 20.0, 5.0, 900.0, 1.5, 230.0, 0.2, None, None, None, None, 0, offset)


def test_batch_becomes_one_file_per_date_and_region_with_deterministic_names():
    import pyarrow.parquet as pq

    midnight = 1_709_337_600_000  # 2024-03-02T00:00Z
    rows = [reading("H1", "north", midnight - 1, 10), reading("H2", "south", midnight - 1, 11),
            reading("H1", "north", midnight, 12), reading("H1", "a/b", midnight, 13)]
    batch = Batch("eco.t", 2, 10, 14, rows=rows, dead=[("eco.t", 2, 14, b"\x07x", "bad magic")])
    files = LakeWriter(None, "b", "lake/telemetry").files_for(batch)
    assert sorted(files) == [
        "lake/dead_letters/topic=eco.t/part-eco.t-2-10-14.parquet",
        "lake/telemetry/date=2024-03-01/region=north/part-eco.t-2-10-14.parquet",
        "lake/telemetry/date=2024-03-01/region=south/part-eco.t-2-10-14.parquet",
        "lake/telemetry/date=2024-03-02/region=a%2Fb/part-eco.t-2-10-14.parquet",
        "lake/telemetry/date=2024-03-02/region=north/part-eco.t-2-10-14.parquet",
    ]
    t = pq.read_table(io.BytesIO(files["lake/telemetry/date=2024-03-02/region=north/part-eco.t-2-10-14.parquet"]))
    assert t.column("kafka_offset").to_pylist() == [12]
    assert str(t.schema.field("ts").type) == "timestamp[ms, tz=UTC]"
    assert not t.schema.field("power_w").nullable and t.schema.field("water_flow_lpm").nullable
    # the same batch again gives byte-identical objects: a replay overwrites itself
    assert LakeWriter(None, "b", "lake/telemetry").files_for(batch) == files


def test_group_rows_by_utc_day():
    assert day_of(0) == "1970-01-01" and day_of(DAY_MS - 1) == "1970-01-01"
    rows = [reading("h", "n", t, 0) for t in (5, DAY_MS + 5, 7)]
    assert group_rows(rows) == {("1970-01-01", "n"): [0, 2], ("1970-01-02", "n"): [1]}


class FakeS3:
    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket, Key, Body):
        self.objects[Key] = Body

    def list_objects_v2(self, Bucket, Prefix, StartAfter="", ContinuationToken=None):
        keys = sorted(k for k in self.objects if k.startswith(Prefix) and k > StartAfter)
        return {"Contents": [{"Key": k} for k in keys], "IsTruncated": False}

    def delete_objects(self, Bucket, Delete):
        for o in Delete["Objects"]:
            self.objects.pop(o["Key"], None)


def test_s3_ledger_finds_uncommitted_ranges_and_forgets_committed_ones():
    s3 = FakeS3()
    ledger = S3Ledger(s3, "b")
    batches = [Batch("t", 0, 0, 99), Batch("t", 0, 100, 149), Batch("t", 1, 0, 9), Batch("t", 1, 10, 10)]
    ledger.record("g", batches)
    assert ledger.pending("g", "t", {0: 100, 1: None}) == {0: [(100, 149)], 1: [(0, 9), (10, 10)]}
    assert ledger.pending("other", "t", {0: None}) == {}
    ledger.forget("g", batches[:1])
    assert ledger.pending("g", "t", {0: None}) == {0: [(100, 149)]}


# ============================================================== real stack


def seaweed_has_room(settings) -> str | None:
    """Why the local SeaweedFS cannot host the lake bucket, or None if it can.

    SeaweedFS grows 7 volumes per collection (one collection per bucket) and the local
    stack starts it with -volume.max=8: the broker's bucket takes 7, the filer's own
    metadata log needs one. A lake bucket then takes the last slot and the filer's log
    can no longer be persisted: after some minutes every S3 PUT hangs, and so does the
    broker that keeps its log in S3. Measured on this machine; the fix is a larger
    -volume.max in infra/stack.py (volumes are not preallocated: it costs no disk).
    """
    url = f"http://127.0.0.1:{settings.port('weed_master')}/dir/status"
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            topo = json.load(resp)["Topology"]
    except (OSError, ValueError, KeyError):
        return None  # not the local SeaweedFS: nothing to check
    writable = {l["collection"]: bool(l.get("writables")) for l in topo.get("Layouts", [])}
    if writable.get(settings.s3_lake_bucket) or topo.get("Free", 0) >= 8:
        return None
    return (f"the local SeaweedFS has {topo.get('Free')} free volume slot(s) of {topo.get('Max')}: a lake bucket "
            f"would starve the broker's store (raise -volume.max in infra/stack.py)")


@pytest.fixture(scope="module")
def lake_run(stack_settings):
    """Readings across a UTC midnight in two regions, plus two undecodable messages,
    stored by a lake sink that is SIGKILLed between writing files and committing,
    then restarted until idle."""
    from confluent_kafka import Producer

    from conftest import spawn, stop
    from ecoretrofit.admin import ensure_topics, s3_client
    from producers.producer import TelemetryProducer, run_backfill
    from producers.simulator import CitySimulator

    reason = seaweed_has_room(stack_settings)
    if reason:
        pytest.fail(reason)
    topic, group = unique("eco.test.lake"), unique("eco-lake-test")
    prefix = f"{unique('test')}/telemetry"
    regions = [fresh_region(), fresh_region()]
    ensure_topics(stack_settings, {topic: 4})
    s = stack_settings.replace(topic_telemetry=topic)
    day = dt.date(2023, 1, 1) + dt.timedelta(days=random.randrange(3000))  # far from any other test's data
    midnight = int(dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc).timestamp() * 1000)
    homes, ticks = 200, 100
    start_ms = midnight - 40_000  # 40 ticks on `day`, 60 on the next
    with TelemetryProducer(s) as producer:
        stats = run_backfill(CitySimulator(homes, regions, seed=21, start_ms=start_ms), producer,
                             start_ms, ticks, progress=False)
    assert stats.acked == homes * ticks and stats.failed == 0
    bad = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for p in (0, 1):
        bad.produce(topic, b"\x00\x7f\xff\xff\xf0 unknown schema id", partition=p)
    assert bad.flush(10) == 0

    s3 = s3_client(s)
    args = ("sink", "--topic", "telemetry", "--to", "lake", "--group", group, "--lake-prefix", prefix,
            "--batch-seconds", "1")
    proc = spawn(s, *args, "--batch-rows", "1500", "--debug-commit-delay", "3", log_name=f"{group}-1")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not s3.list_objects_v2(
                Bucket=s.s3_lake_bucket, Prefix=prefix + "/").get("KeyCount"):
            time.sleep(0.1)
    finally:
        stop(proc, signal.SIGKILL)  # files written, offsets not committed
    proc = spawn(s, *args, "--batch-rows", "4000", "--exit-when-idle", "3", log_name=f"{group}-2")
    assert proc.popen.wait(90) == 0
    return {"settings": s, "s3": s3, "topic": topic, "prefix": prefix, "regions": regions,
            "days": (day.isoformat(), (day + dt.timedelta(days=1)).isoformat()),
            "per_day": {day.isoformat(): homes * 40, (day + dt.timedelta(days=1)).isoformat(): homes * 60},
            "produced": homes * ticks, "group": group}


def list_keys(s3, bucket, prefix):
    keys, kw = [], {"Bucket": bucket, "Prefix": prefix}
    while True:
        resp = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in resp.get("Contents", ())]
        if not resp.get("IsTruncated"):
            return keys
        kw["ContinuationToken"] = resp["NextContinuationToken"]


def test_lake_files_are_partitioned_by_date_and_region(lake_run):
    import pyarrow.parquet as pq

    r, s3 = lake_run, lake_run["s3"]
    bucket = r["settings"].s3_lake_bucket
    keys = list_keys(s3, bucket, r["prefix"] + "/")
    pattern = re.compile(rf"^{re.escape(r['prefix'])}/date=(\d{{4}}-\d\d-\d\d)/region=([^/]+)/"
                         rf"part-{re.escape(r['topic'])}-(\d+)-(\d+)-(\d+)\.parquet$")
    seen = set()
    rows = 0
    for key in keys:
        m = pattern.match(key)
        assert m, key
        date, region, _, first, last = m.groups()
        assert int(first) <= int(last)
        seen.add((date, region))
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        assert set(table.column("region").to_pylist()) == {region}
        assert {d.date().isoformat() for d in table.column("ts").to_pylist()} == {date}
        offsets = table.column("kafka_offset").to_pylist()
        assert all(int(first) <= o <= int(last) for o in offsets)
        rows += table.num_rows
    assert seen == {(d, reg) for d in r["days"] for reg in r["regions"]}
    assert rows == r["produced"], "every reading in exactly one file (the replay overwrote its own)"
    dead = list_keys(s3, bucket, r["prefix"].rsplit("/", 1)[0] + "/dead_letters/")
    assert sum(pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=k)["Body"].read())).num_rows
               for k in dead) == 2
    # the ledger keeps nothing once everything is committed
    assert list_keys(s3, bucket, f"_ledger/{r['group']}/") == []


def test_clickhouse_s3_reads_the_lake_with_hive_partitioning(lake_run):
    from sinks import lake
    from sinks.warehouse import connect

    r = lake_run
    s = r["settings"]
    client = connect(s)
    src = lake.s3_function(s, lake.lake_glob(r["prefix"]))
    total, distinct = client.query(f"SELECT count(), uniqExact(home_id, ts) FROM {src}").result_rows[0]
    assert (total, distinct) == (r["produced"], r["produced"])
    per_day = dict(client.query(
        f"SELECT toString(date), count() FROM {src} GROUP BY date SETTINGS use_hive_partitioning = 1").result_rows)
    assert per_day == r["per_day"]
    assert sorted(row[1] for row in lake.stats(s, client, prefix=r["prefix"])) == sorted(
        (reg for _ in r["days"] for reg in r["regions"]))


def test_lake_import_lands_exactly_the_date_range(lake_run, capsys):
    from sinks import lake_cli
    from sinks.warehouse import connect

    r = lake_run
    s = r["settings"]
    client = connect(s)
    parser = argparse.ArgumentParser()
    lake_cli.add_arguments(parser)
    second = r["days"][1]
    args = parser.parse_args(["import", "--from", second, "--to", second, "--prefix", r["prefix"]])

    def stored():
        return dict(client.query(
            f"SELECT toString(toDate(ts)), count() FROM {s.clickhouse_database}.telemetry_lake "
            "WHERE region IN {r:Array(String)} GROUP BY 1", parameters={"r": r["regions"]}).result_rows)

    for _ in range(2):  # re-running an import replaces the day: same rows, no duplicates
        assert lake_cli.run(args, s) == 0
        assert stored() == {second: r["per_day"][second]}
    assert f"imported {r['per_day'][second]:,} rows of 1 day(s)" in capsys.readouterr().out
    distinct = int(client.command(
        f"SELECT uniqExact(home_id, ts) FROM {s.clickhouse_database}.telemetry_lake WHERE region IN {{r:Array(String)}}",
        parameters={"r": r["regions"]}))
    assert distinct == r["per_day"][second]
