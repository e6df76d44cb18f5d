"""The warehouse DDL rendered for a cluster of shards (ECO_CLICKHOUSE_CLUSTER), run by a
real ClickHouse: the embedded one (chdb), as shard 1 of a two-shard cluster.

What chdb can and cannot do here (measured, chdb 4.1.8 / ClickHouse 26.1):
- It runs Distributed tables: a shard whose replica is this server (localhost and the
  config's tcp_port) is served in-process, so reads and inserts reach shard 1's local
  tables without a network; rows for another shard are queued on disk for it
  (system.distribution_queue), exactly as on a server whose peer is down.
- It refuses ON CLUSTER ("Replicated DDL queries are disabled", also with a
  <zookeeper> and <distributed_ddl> in its config): it has no DDL worker. So each
  statement runs here as a shard's DDL worker runs it from the queue: without its
  ON CLUSTER clause. The clause itself is checked with ClickHouse's parser.
- It cannot be shard 2 (it serves no TCP): shard 2 is an address nothing listens on.

chdb allows one data directory per process, so each test runs it in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ecoretrofit.config import Settings
from sinks import lake_ingest, named_queries, warehouse

pytest.importorskip("chdb")

CLUSTER = "eco"
ON_CLUSTER = f" ON CLUSTER '{CLUSTER}'"
HOMES = 60
MINUTES = 600  # one reading per home and minute: 36,000 readings over 10 hours

# shard 1 is this server (localhost:9000, its own tcp_port); shard 2 an address nothing
# listens on. tcp_port only tells ClickHouse which replica is itself: chdb opens no port.
CONFIG = f"""<clickhouse>
    <timezone>UTC</timezone>
    <tcp_port>9000</tcp_port>
    <remote_servers>
        <{CLUSTER}>
            <shard><replica><host>localhost</host><port>9000</port></replica></shard>
            <shard><replica><host>127.0.0.1</host><port>1</port></replica></shard>
        </{CLUSTER}>
    </remote_servers>
</clickhouse>
"""

# Runs JSON {"path", "config", "steps": [sql, ...]} on chdb; prints one JSON line per step:
# {"rows": [...]} or {"error": "..."}. os._exit: never wait on the Kafka tables' threads.
RUNNER = textwrap.dedent("""
    import json, os, sys
    import chdb
    job = json.load(sys.stdin)
    conn = chdb.connect(f"{job['path']}?config-file={job['config']}")
    cur = conn.cursor()
    for sql in job["steps"]:
        try:
            cur.execute(sql)
            out = {"rows": [list(r) for r in cur.fetchall()]}
        except Exception as exc:
            out = {"error": " ".join(str(exc).split())[:500]}
        print(json.dumps(out, default=str), flush=True)
    os._exit(0)
""")


def run_chdb(tmp_path: Path, steps: list[str]) -> list[dict]:
    config = tmp_path / "config.xml"
    config.write_text(CONFIG)
    job = {"path": str(tmp_path / "chdb"), "config": str(config), "steps": steps}
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(job), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(steps), proc.stderr[-2000:]
    return results


def settings_for(cluster: str, tmp_path: Path) -> Settings:
    return Settings.from_env({
        "ECO_DATA_DIR": str(tmp_path / "data"), "ECO_CLICKHOUSE_PASSWORD": "x", "ECO_S3_ACCESS_KEY": "x",
        "ECO_S3_SECRET_KEY": "x", "ECO_SCHEMA_REGISTRY_PASSWORD": "x",
        # the Kafka tables are created but must never reach a broker of a running stack
        "ECO_CLICKHOUSE_KAFKA_BOOTSTRAP": "127.0.0.1:1", "ECO_CLICKHOUSE_CLUSTER": cluster,
    })


def sql_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ------------------------------------------------------------------ rendering
def test_one_server_renders_no_cluster_at_all(tmp_path):
    for sql in warehouse.render_ddl(settings_for("", tmp_path)):
        assert "ON CLUSTER" not in sql and "Distributed(" not in sql and "_local" not in sql, sql[:120]


def test_cluster_ddl_differs_from_one_server_only_by_the_cluster(tmp_path):
    """Same files, same code: the cluster's statements are one server's statements with
    ON CLUSTER, the shard tables' _local suffix, and the Distributed tables added."""
    one = warehouse.render_ddl(settings_for("", tmp_path))
    sharded = warehouse.render_ddl(settings_for(CLUSTER, tmp_path))
    distributed = [s for s in sharded if "ENGINE = Distributed(" in s]
    rest = [s.replace(ON_CLUSTER, "").replace("_local", "") for s in sharded if s not in distributed]
    assert rest == one
    assert all(ON_CLUSTER in s for s in sharded)
    names = {s.split()[5].split(".")[1] for s in distributed}
    # every table the pipeline stores rows in is sharded; the batching sink's tables are not
    assert names == {"dead_letters", "telemetry", "anomalies", "work_orders", "maintenance_predictions",
                     "energy_hourly_by_home", "energy_hourly_by_region", "energy_daily_by_home",
                     "energy_daily_by_region"}
    home_sharded = [s for s in distributed if s.rstrip().endswith("cityHash64(home_id))")]
    assert {s.split()[5].split(".")[1] for s in home_sharded} == {
        "telemetry", "anomalies", "energy_hourly_by_home", "energy_daily_by_home"}


def test_cluster_only_statements_and_statements_that_cannot_run_on_a_cluster(tmp_path):
    from ecoretrofit.errors import CommandError

    (tmp_path / "a.sql").write_text("CREATE TABLE IF NOT EXISTS {database}.t{local} (a UInt8) ENGINE = Memory;\n"
                                    "{cluster_only} CREATE TABLE IF NOT EXISTS {database}.t AS {database}.t{local}\n"
                                    "ENGINE = Distributed('{cluster}', '{database}', 't{local}', rand());\n")
    assert warehouse.render_ddl(settings_for("", tmp_path), tmp_path) == [
        "CREATE TABLE IF NOT EXISTS eco.t (a UInt8) ENGINE = Memory"]
    assert warehouse.render_ddl(settings_for(CLUSTER, tmp_path), tmp_path) == [
        "CREATE TABLE IF NOT EXISTS eco.t_local ON CLUSTER 'eco' (a UInt8) ENGINE = Memory",
        "CREATE TABLE IF NOT EXISTS eco.t ON CLUSTER 'eco' AS eco.t_local\n"
        "ENGINE = Distributed('eco', 'eco', 't_local', rand())"]
    # a statement with no object to put ON CLUSTER after is named, not sent half-done
    (tmp_path / "b.sql").write_text("INSERT INTO {database}.t VALUES (1);\n")
    assert warehouse.render_ddl(settings_for("", tmp_path), tmp_path)[-1] == "INSERT INTO eco.t VALUES (1)"
    with pytest.raises(CommandError, match=r"b.sql#1: cannot run it ON CLUSTER"):
        warehouse.render_ddl(settings_for(CLUSTER, tmp_path), tmp_path)
    (tmp_path / "b.sql").write_text("CREATE VIEW {database}.v AS SELECT 1 {cluster_only};\n")
    with pytest.raises(CommandError, match=r"b.sql#1: \{cluster_only\} / .* must begin its statement"):
        warehouse.render_ddl(settings_for("", tmp_path), tmp_path)


def test_a_bad_cluster_name_is_refused(tmp_path):
    from ecoretrofit.config import ConfigError

    with pytest.raises(ConfigError, match="ECO_CLICKHOUSE_CLUSTER"):
        warehouse.render_ddl(settings_for("eco' SETTINGS x=1 --", tmp_path))


def test_clickhouse_parses_every_cluster_statement_with_its_on_cluster(tmp_path):
    statements = warehouse.render_ddl(settings_for(CLUSTER, tmp_path))
    results = run_chdb(tmp_path, [f"SELECT formatQuery({sql_literal(s)})" for s in statements])
    for sql, result in zip(statements, results):
        assert "error" not in result, f"{result.get('error')}\n{sql[:300]}"
        formatted = result["rows"][0][0]
        assert f"ON CLUSTER {CLUSTER}" in formatted.split("\n")[0] + formatted, formatted[:200]


# ------------------------------------------------------------ running on shard 1
READINGS = f"""
    SELECT
        concat('H', leftPad(toString(number % {HOMES}), 6, '0')) AS home_id,
        ['north', 'south', 'east', 'west', 'central'][number % {HOMES} % 5 + 1] AS region,
        toDateTime64(toStartOfHour(now('UTC')) - INTERVAL 12 HOUR, 3, 'UTC') + toIntervalMinute(intDiv(number, {HOMES})) AS ts,
        toInt64(intDiv(number, {HOMES})) AS seq,
        20.5 AS indoor_temp_c, 5.0 AS outdoor_temp_c, toFloat64(100 + number % 97) AS power_w,
        intDiv(number, {HOMES}) * 0.01 AS energy_kwh, 230.0 AS voltage_v, 0.1 AS vibration_mm_s,
        toUInt32(number % 8) AS kafka_partition, toUInt64(number) AS kafka_offset
    FROM numbers({HOMES * MINUTES})
"""
COLUMNS = ("home_id, region, ts, seq, indoor_temp_c, outdoor_temp_c, power_w, energy_kwh, voltage_v, "
           "vibration_mm_s, kafka_partition, kafka_offset")
SHARD_1 = "cityHash64(home_id) % 2 = 0"  # two shards of weight 1: slot 0 is shard 1


def test_cluster_ddl_runs_on_a_shard_and_keeps_each_home_on_its_shard(tmp_path):
    settings = settings_for(CLUSTER, tmp_path)
    ddl = [s.replace(ON_CLUSTER, "") for s in warehouse.render_ddl(settings)]  # as each shard's DDL worker runs it
    db = settings.clickhouse_database
    read = "SETTINGS skip_unavailable_shards = 1"  # shard 2 is not there
    checks = {
        "clusters": "SELECT count() FROM system.clusters WHERE cluster = 'eco' AND is_local",
        "engines": f"SELECT name, engine FROM system.tables WHERE database = '{db}' "
                   "AND name IN ('telemetry', 'telemetry_local', 'energy_hourly_by_home') ORDER BY name",
        # what telemetry_mv does with a block from the Kafka table: insert into `telemetry`
        "insert": f"INSERT INTO {db}.telemetry ({COLUMNS}) {READINGS}",
        "expected": f"SELECT count(), uniqExact(home_id) FROM ({READINGS}) WHERE {SHARD_1}",
        "local": f"SELECT count(), uniqExact(home_id), countIf(NOT ({SHARD_1})) FROM {db}.telemetry_local",
        "queued": f"SELECT sum(data_files) FROM system.distribution_queue WHERE database = '{db}' AND table = 'telemetry'",
        "hourly_home": f"SELECT sum(readings), uniqExact(home_id), countIf(NOT ({SHARD_1})) "
                       f"FROM {db}.energy_hourly_by_home_local",
        "hourly_region": f"SELECT sum(readings) FROM {db}.energy_hourly_by_region_local",
        "daily_home": f"SELECT sum(readings) FROM {db}.energy_daily_by_home_local",
        "daily_region": f"SELECT sum(readings) FROM {db}.energy_daily_by_region_local",
        # readers go through the Distributed tables
        "distributed": f"SELECT count() FROM {db}.telemetry {read}",
        "region_v": f"SELECT sum(readings), max(homes) FROM {db}.energy_hourly_by_region_v {read}",
        "daily_v": f"SELECT sum(readings) FROM {db}.energy_daily_by_home_v {read}",
        "homes": f"SELECT (SELECT min(home_id) FROM {db}.telemetry_local), "
                 f"(SELECT min(home_id) FROM ({READINGS}) WHERE NOT ({SHARD_1}))",
        "comments": f"SELECT countIf(comment != '') FROM system.columns WHERE database = '{db}' AND table = 'telemetry'",
        # anomalies: by home too
        "anomaly_insert": f"INSERT INTO {db}.anomalies (event_id, home_id, region, metric, ts, detected_at, value, "
                          "score, detector, window_mean, window_std, window_count, zscore, severity) "
                          "SELECT toString(number), concat('H', leftPad(toString(number % 60), 6, '0')), 'north', "
                          "'power_w', now64(3), now64(3), 1, 5, 'ewzscore', 0, 1, 30, 5, 'critical' FROM numbers(600)",
        "anomalies_local": f"SELECT count(), countIf(NOT ({SHARD_1})) FROM {db}.anomalies_local",
        # the lake ingester's deduplication windows reach the shards' tables
        "lake_tables": lake_ingest.TABLES_SQL.replace("{db:String}", sql_literal(db)),
    }
    named = {}
    for path in sorted(named_queries.QUERIES_DIR.glob("*.sql")):
        q = named_queries.load_named(path.stem)
        sets = [f"SET param_{k} = {sql_literal(v)}" for k, v in q.bind({}).items()]
        named[q.name] = (sets, q.sql(settings))
    steps = ddl + list(checks.values()) + ["SET skip_unavailable_shards = 1"]
    for sets, sql in named.values():
        steps += sets + [sql]
    results = run_chdb(tmp_path, steps)
    failed = [(sql[:200], r["error"]) for sql, r in zip(ddl, results) if "error" in r]
    assert not failed, failed
    got = dict(zip(checks, results[len(ddl):len(ddl) + len(checks)]))
    errors = {k: v["error"] for k, v in got.items() if "error" in v}
    assert not errors, errors
    rows = {k: v["rows"] for k, v in got.items()}

    assert rows["clusters"] == [[1]]
    assert rows["engines"] == [["energy_hourly_by_home", "Distributed"], ["telemetry", "Distributed"],
                               ["telemetry_local", "MergeTree"]]
    (expected_rows, expected_homes), = rows["expected"]
    assert 0 < expected_homes < HOMES and expected_rows == expected_homes * MINUTES
    # shard 1 holds exactly its homes' readings, every one of them; the rest waits for shard 2
    assert rows["local"] == [[expected_rows, expected_homes, 0]]
    assert rows["queued"][0][0] >= 1
    # each shard rolls up what it stores, and a home's roll-ups are complete on its shard
    assert rows["hourly_home"] == [[expected_rows, expected_homes, 0]]
    assert rows["hourly_region"] == rows["daily_home"] == rows["daily_region"] == [[expected_rows]]
    assert rows["distributed"] == [[expected_rows]]
    assert rows["region_v"][0][0] == expected_rows
    assert rows["daily_v"] == [[expected_rows]]
    # the sharding key says where a home is: a query for one home reaches its shard only
    (home_1, home_2), = rows["homes"]
    prune = "SETTINGS optimize_skip_unused_shards = 1"
    one_home = [f"SELECT count() FROM {db}.telemetry WHERE home_id = '{home_1}' {prune}",
                f"SELECT count() FROM {db}.telemetry WHERE home_id = '{home_1}'",
                f"SELECT count() FROM {db}.telemetry WHERE home_id = '{home_2}' {prune}"]
    on_shard_1, unpruned, on_shard_2 = run_chdb(tmp_path, one_home)
    assert on_shard_1 == {"rows": [[MINUTES]]}  # shard 2, unreachable, was never asked
    assert "NETWORK_ERROR" in unpruned.get("error", "") or "ALL_CONNECTION_TRIES_FAILED" in unpruned.get("error", "")
    assert "error" in on_shard_2, "a home of shard 2 is read from shard 2"
    assert rows["comments"][0][0] >= 10, "the column comments (090) are on the table readers read"
    (anomalies, misplaced), = rows["anomalies_local"]
    assert misplaced == 0 and 0 < anomalies < 600
    # (run_chdb's JSON gives arrays as their text)
    tables = [(n, e, json.loads(d.replace("'", '"')) if isinstance(d, str) else d, c, f)
              for n, e, d, c, f in rows["lake_tables"]]
    engines = {name: engine for name, engine, *_ in tables}
    windowed = {t for t in lake_ingest.downstream_tables(lake_ingest.edges(tables),
                                                         lake_ingest.INCOMING_TABLE)
                if engines[t].endswith("MergeTree")}
    assert {"telemetry_local", "dead_letters_local", "energy_hourly_by_home_local",
            "energy_daily_by_region_local"} <= windowed, windowed

    # every named query runs through the Distributed tables
    offset = len(ddl) + len(checks) + 1
    for name, (sets, _) in named.items():
        result = results[offset + len(sets)]
        assert "error" not in result, f"{name}: {result['error']}"
        offset += len(sets) + 1
