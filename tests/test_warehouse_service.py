"""The warehouse service, driven the way every process uses it: clickhouse-connect over
HTTP (plus a few raw HTTP requests for what curl users would do).

Each service runs in a subprocess (``ecoretrofit warehouse serve``) on ports 22000-22999
with a temp data directory, and is stopped with SIGTERM (SIGKILL after a timeout).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ecoretrofit import processes
from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError
from sinks import named_queries, warehouse

REPO = Path(__file__).resolve().parent.parent
# warehouse on PORT_BASE + 123; 22000 unless ECO_TEST_PORT_BASE moves it
PORT_BASE = int(os.environ.get("ECO_TEST_PORT_BASE", "21300")) + 700
DDL = {
    "001_database.sql": "-- the database; a comment with a semicolon; and {braces}\nCREATE DATABASE IF NOT EXISTS {database};\n",
    "010_probe.sql": (
        "CREATE TABLE IF NOT EXISTS {database}.ddl_probe\n"
        "(\n    k String DEFAULT '--not a comment;',  -- trailing comment\n    v Float64\n)\n"
        "ENGINE = MergeTree ORDER BY k;\n\n"
        "INSERT INTO {database}.ddl_probe (k, v) VALUES ('broker', 1);\n"
    ),
}


# --------------------------------------------------------------------- helpers
def make_settings(data_dir: Path, port_base: int = PORT_BASE) -> Settings:
    return Settings.from_env({"ECO_DATA_DIR": str(data_dir), "ECO_PORT_BASE": str(port_base)})


def child_env(settings: Settings) -> dict[str, str]:
    # Only our ECO_* variables: an ECO_CLICKHOUSE_URL of the calling shell must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECO_")}
    env.update(ECO_DATA_DIR=str(settings.data_dir), ECO_PORT_BASE=str(settings.port_base))
    return env


def run_cli(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ecoretrofit.cli", *args], env=child_env(settings), cwd=REPO,
        capture_output=True, text=True, timeout=timeout,
    )


def start_service(settings: Settings, *extra: str) -> processes.Proc:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    proc = processes.start("warehouse", processes.cli_argv("warehouse", "serve", *extra),
                           settings.data_dir / "warehouse.log", env=child_env(settings), cwd=REPO, stop_timeout=15.0)
    try:
        proc.wait_healthy(lambda: http_get(settings, "/ping")[0] == 200, 60, 0.1)
    except CommandError as exc:
        pytest.fail(f"{exc}: {service_log(settings)}")
    return proc


def stop_service(proc: processes.Proc) -> int:
    return proc.stop()


def service_log(settings: Settings) -> str:
    path = settings.data_dir / "warehouse.log"
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def http_get(settings: Settings, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(settings.clickhouse_url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def http_post(settings: Settings, body: bytes, query: str = "", password: str | None = None):
    token = base64.b64encode(f"default:{settings.clickhouse_password if password is None else password}".encode())
    url = settings.clickhouse_url + "/" + (f"?{query}" if query else "")
    req = urllib.request.Request(url, data=body, headers={"Authorization": "Basic " + token.decode()})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data = tmp_path_factory.mktemp("warehouse")
    ddl_dir = data / "sql"
    ddl_dir.mkdir()
    for name, text in DDL.items():
        (ddl_dir / name).write_text(text)
    settings = make_settings(data / "eco")
    proc = start_service(settings, "--ddl-dir", str(ddl_dir))
    yield settings
    assert stop_service(proc) == 0, service_log(settings)


@pytest.fixture(scope="module")
def client(service):
    return warehouse.connect(service)


def sample_rows(n: int) -> list[tuple]:
    t0 = dt.datetime(2024, 3, 1, 12, 0, 0)
    return [
        (
            f"home-{i:05d}",
            i * 0.25 - 100.0,
            t0 + dt.timedelta(milliseconds=1234 * i),
            None if i % 7 == 0 else i / 3,
            ("north", "south", "east", "west", "central")[i % 5],
        )
        for i in range(n)
    ]


COLUMNS = ["home_id", "power_w", "ts", "water_flow_lpm", "region"]
TABLE_DDL = (
    "CREATE TABLE {name} (home_id String, power_w Float64, ts DateTime64(3), "
    "water_flow_lpm Nullable(Float64), region LowCardinality(String)) ENGINE = MergeTree ORDER BY (home_id, ts)"
)


# ----------------------------------------------------------------------- tests
def test_ping_and_metrics_need_no_credentials(service, client):
    status, _, body = http_get(service, "/ping")
    assert (status, body) == (200, b"Ok.\n")
    client.command("SELECT 1")
    status, headers, body = http_get(service, "/metrics")
    assert status == 200
    text = body.decode()
    assert 'eco_warehouse_queries_total{kind="select",status="ok"}' in text
    assert 'eco_warehouse_query_seconds_bucket{kind="select"' in text
    # rows per table of the warehouse database, counted at scrape time
    assert 'eco_warehouse_rows{table="ddl_probe"} 1.0' in text


def test_ddl_applied_before_ready(client):
    # comments (even with ';' and braces) are gone, '--' inside a string literal is kept
    assert client.query("SELECT k, v FROM ddl_probe").result_rows == [("broker", 1.0)]
    default = client.query("SELECT default_expression FROM system.columns WHERE table = 'ddl_probe' AND name = 'k'")
    assert default.result_rows == [("'--not a comment;'",)]


@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "plain"])
def test_insert_and_read_back_every_way(client, service, compress):
    c = warehouse.connect(service, compress=compress)
    name = f"roundtrip_{'c' if compress else 'p'}"
    c.command(f"DROP TABLE IF EXISTS {name}")
    c.command(TABLE_DDL.format(name=name))
    rows = sample_rows(3000)
    summary = c.insert(name, rows, column_names=COLUMNS)
    assert summary.written_rows == 3000

    back = c.query(f"SELECT {', '.join(COLUMNS)} FROM {name} ORDER BY home_id")
    assert back.column_names == tuple(COLUMNS)
    assert back.result_rows == rows

    table = c.query_arrow(f"SELECT {', '.join(COLUMNS)} FROM {name} ORDER BY home_id")
    assert table.num_rows == 3000
    assert table.column("home_id").to_pylist() == [r[0] for r in rows]
    assert table.column("water_flow_lpm").to_pylist() == [r[3] for r in rows]
    assert [t.replace(tzinfo=None) for t in table.column("ts").to_pylist()] == [r[2] for r in rows]

    df = c.query_df(f"SELECT {', '.join(COLUMNS)} FROM {name} ORDER BY home_id")
    assert list(df.columns) == COLUMNS
    assert df["power_w"].tolist() == [r[1] for r in rows]
    assert int(df["water_flow_lpm"].isna().sum()) == sum(1 for r in rows if r[3] is None)
    assert df["region"].tolist() == [r[4] for r in rows]

    # and a DataFrame goes back in the same way
    c.insert_df(name, df.head(100))
    assert c.command(f"SELECT count() FROM {name}") == 3100


def test_failing_query_raises_database_error_with_clickhouse_message(client):
    from clickhouse_connect.driver.exceptions import DatabaseError

    with pytest.raises(DatabaseError) as info:
        client.query("SELECT * FROM no_such_table")
    assert "Code: 60. DB::Exception:" in str(info.value)
    assert "UNKNOWN_TABLE" in str(info.value)
    assert info.value.code == 60
    with pytest.raises(DatabaseError, match="Syntax error"):
        client.command("SELEKT 1")
    # the connection is still fine afterwards
    assert client.command("SELECT 41 + 1") == 42


def test_wrong_password_is_refused(service):
    from clickhouse_connect.driver.exceptions import DatabaseError

    with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
        warehouse.connect(service.replace(clickhouse_password="not-the-password"))
    status, headers, body = http_post(service, b"SELECT 1", password="nope")
    assert status == 403
    assert headers["X-ClickHouse-Exception-Code"] == "516"
    assert body.startswith(b"Code: 516. DB::Exception: default: Authentication failed")
    # X-ClickHouse-User/Key work as well as basic auth
    req = urllib.request.Request(
        service.clickhouse_url + "/", data=b"SELECT 7",
        headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": service.clickhouse_password},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.read() == b"7\n"


def test_settings_apply_per_query_and_sessions_do_not_leak(service, client):
    assert client.command("SELECT getSetting('max_execution_time')", settings={"max_execution_time": 7}) == 7
    assert client.command("SELECT getSetting('max_execution_time')") == 0
    other = warehouse.connect(service)
    client.command("SET max_threads = 1")  # lasts for this client's session only
    assert client.command("SELECT getSetting('max_threads')") == 1
    assert other.command("SELECT getSetting('max_threads')") != 1
    client.command("SET max_threads = DEFAULT")
    with pytest.raises(Exception, match="UNKNOWN_SETTING"):
        client.command("SELECT 1", settings={"no_such_setting": 1})


def test_query_parameters_short_and_long(client):
    tricky = "tab\there, back\\slash, quote ' done"
    assert client.query("SELECT {s:String}, {n:UInt32}", parameters={"s": tricky, "n": 5}).result_rows == [(tricky, 5)]
    long_value = "x" * 20000  # sent as a multipart form by clickhouse-connect
    assert client.command("SELECT length({v:String})", parameters={"v": long_value}) == 20000


def test_plain_http_insert_formats_and_readonly_get(service, client):
    client.command("CREATE TABLE IF NOT EXISTS plain_http (a UInt32, b String) ENGINE = MergeTree ORDER BY a")
    db = service.clickhouse_database
    status, headers, _ = http_post(service, b"INSERT INTO plain_http FORMAT CSV\n1,one\n2,\"t,wo\"\n", f"database={db}")
    assert status == 200 and json.loads(headers["X-ClickHouse-Summary"])["written_rows"] == "2"
    query = f"database={db}&query=INSERT+INTO+plain_http+FORMAT+JSONEachRow"  # statement in the URL, data in the body
    status, _, _ = http_post(service, b'{"a": 3, "b": "three"}\n', query)
    assert status == 200
    status, headers, body = http_post(service, b"SELECT a, b FROM plain_http ORDER BY a FORMAT JSONCompact", f"database={db}")
    assert headers["X-ClickHouse-Format"] == "JSONCompact"
    assert json.loads(body)["data"] == [[1, "one"], [2, "t,wo"], [3, "three"]]
    # GET is read-only, as in ClickHouse
    token = base64.b64encode(f"default:{service.clickhouse_password}".encode()).decode()
    status, headers, body = http_get(service, "/?query=DROP+TABLE+eco.plain_http", {"Authorization": "Basic " + token})
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "164"
    assert client.command("EXISTS TABLE plain_http") == 1


def test_exactly_one_statement_per_request(service, client):
    """chdb runs every statement of a text; ClickHouse's HTTP interface refuses more than
    one. `SELECT 1; DROP TABLE …` sent read-only once dropped the table."""
    db = service.clickhouse_database
    client.command("CREATE TABLE IF NOT EXISTS victim (a UInt8) ENGINE = MergeTree ORDER BY a")
    for params in (f"database={db}&readonly=1", f"database={db}"):
        status, headers, body = http_post(service, b"SELECT 1; DROP TABLE victim", params)
        assert status == 500 and b"Multi-statements are not allowed" in body, body
        assert headers["X-ClickHouse-Exception-Code"] == "62"
    status, _, body = http_post(service, b"SELECT 1 /* ; */ ; -- trailing\n", f"database={db}")
    assert (status, body) == (200, b"1\n")
    assert client.command("EXISTS TABLE victim") == 1


def test_read_only_requests_run_under_clickhouse_readonly(service, client):
    db = service.clickhouse_database
    client.command("CREATE TABLE IF NOT EXISTS victim (a UInt8) ENGINE = MergeTree ORDER BY a")
    # ClickHouse itself, not a check of the first word, refuses what readonly=1 forbids
    status, headers, body = http_post(service, b"SELECT 1 SETTINGS max_threads = 1", f"database={db}&readonly=1")
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "164", body
    assert b"Cannot modify 'max_threads' setting in readonly mode" in body
    status, _, body = http_post(service, b"SELECT count() FROM victim", f"database={db}&readonly=1")
    assert (status, body) == (200, b"0\n")
    # readonly can only be asked for per request: a SET would poison the shared connection
    status, headers, body = http_post(service, b"SET readonly = 1", f"database={db}")
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "497", body
    client.command("INSERT INTO victim VALUES (1)")  # writers are unaffected
    assert client.command("SELECT count() FROM victim") == 1


def test_no_host_files_and_no_other_services(service, client, tmp_path):
    """With the warehouse password, these once read /etc/passwd and credentials.env,
    wrote host files and reached the other local services."""
    from clickhouse_connect.driver.exceptions import DatabaseError

    db = service.clickhouse_database
    out = tmp_path / "out"
    out.mkdir()
    attempts = [
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        f"SELECT * FROM file('{service.credentials_file}', 'LineAsString')",
        "SELECT file('/etc/passwd')",
        "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
        f"SELECT 1 INTO OUTFILE '{out}/a.txt'",
        f"INSERT INTO FUNCTION file('{out}/b.tsv', 'TSV', 'a UInt8') VALUES (1)",
        f"INSERT INTO FUNCTION file('{out}/c.tsv', 'TSV', 'a UInt8') SELECT 1",
        "INSERT INTO victim FROM INFILE '/etc/passwd' FORMAT LineAsString",
        "CREATE TABLE leak (l String) ENGINE = File(LineAsString, '/etc/passwd')",
        f"SELECT * FROM url('{service.clickhouse_url}/ping', 'LineAsString')",
        f"SELECT * FROM s3('{service.s3_endpoint}/{service.s3_broker_bucket}/x', 'LineAsString')",
        f"SELECT * FROM s3('{service.s3_endpoint}/{service.s3_lake_bucket}/../{service.s3_broker_bucket}/x', 'CSV')",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        f"ATTACH TABLE adopted FROM '{out}' (a UInt8) ENGINE = MergeTree ORDER BY a",
        "SYSTEM SHUTDOWN",
    ]
    for sql in attempts:
        for readonly in (None, "1"):
            settings = {"readonly": readonly} if readonly else {}
            with pytest.raises(DatabaseError, match="Not allowed by the warehouse service|READONLY"):
                client.command(sql, settings=settings)
    # the same with data in the request body (curl's way)
    status, headers, body = http_post(
        service, f"INSERT INTO FUNCTION file('{out}/d.tsv', 'TSV', 'a UInt8') FORMAT TSV\n1\n".encode(), f"database={db}")
    assert status == 500 and headers["X-ClickHouse-Exception-Code"] == "497", body
    assert list(out.iterdir()) == []
    # a string that merely mentions them is fine
    assert client.command("SELECT 'file(/etc/passwd) INTO OUTFILE'") == "file(/etc/passwd) INTO OUTFILE"


def test_data_directory_is_private(service):
    for path in (service.data_dir, service.data_dir / "clickhouse"):
        assert path.stat().st_mode & 0o077 == 0, oct(path.stat().st_mode)


def test_query_cli_formats_and_named_queries(service, client, monkeypatch, capsys, tmp_path):
    from ecoretrofit import cli

    for k in [k for k in os.environ if k.startswith("ECO_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("ECO_DATA_DIR", str(service.data_dir))
    monkeypatch.setenv("ECO_PORT_BASE", str(service.port_base))
    client.command("CREATE TABLE IF NOT EXISTS cli_t (region String, n UInt32, x Nullable(Float64)) "
                   "ENGINE = MergeTree ORDER BY region")
    client.command("TRUNCATE TABLE cli_t")
    client.insert("cli_t", [("north", 5, 1.5), ("south-east", 12345, None)], column_names=["region", "n", "x"])
    sql = "SELECT region, n, x FROM eco.cli_t ORDER BY region"

    assert cli.main(["query", sql]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["region", "n", "x"]
    assert lines[2] == "north           5   1.5"
    assert lines[3] == "south-east  12345  NULL"
    assert lines[4] == "(2 rows)"

    assert cli.main(["query", sql, "--format", "csv"]) == 0
    assert capsys.readouterr().out == "region,n,x\nnorth,5,1.5\nsouth-east,12345,\n"

    assert cli.main(["query", sql, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"region": "north", "n": 5, "x": 1.5}, {"region": "south-east", "n": 12345, "x": None}]

    # a named query: sinks/queries/NAME.sql with {k:Type} parameters
    (tmp_path / "by_region.sql").write_text("SELECT n FROM {database}.cli_t WHERE region = {region:String};\n")
    monkeypatch.setattr(named_queries, "QUERIES_DIR", tmp_path)
    assert cli.main(["query", "by_region", "--param", "region=south-east", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "n\n12345\n"

    # statements without a result set run as commands
    assert cli.main(["query", "INSERT INTO eco.cli_t VALUES ('west', 1, NULL)"]) == 0
    assert capsys.readouterr().out == "OK, 1 rows written\n"
    assert cli.main(["query", "OPTIMIZE TABLE eco.cli_t FINAL"]) == 0
    assert capsys.readouterr().out == "OK\n"

    # errors are one line, exit code 1
    assert cli.main(["query", "SELECT * FROM eco.nope"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("ecoretrofit query: Code: 60.") and "UNKNOWN_TABLE" in err
    assert cli.main(["query", "no_such_name"]) == 1
    assert "no named query 'no_such_name'" in capsys.readouterr().err


def test_port_taken_and_locked_data_dir_are_one_line_errors(service, tmp_path):
    # another data dir, same port
    result = run_cli(make_settings(tmp_path / "other"), "warehouse", "serve", "--no-ddl")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert f"port {service.port('warehouse')}" in result.stderr and "already in use" in result.stderr
    # same data dir, another port: the running service owns it
    result = run_cli(make_settings(service.data_dir, PORT_BASE + 100), "warehouse", "serve", "--no-ddl")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "is in use by pid" in result.stderr


def test_data_survives_restart(tmp_path):
    settings = make_settings(tmp_path / "eco", PORT_BASE + 200)
    proc = start_service(settings, "--no-ddl")
    try:
        c = warehouse.connect(settings, database="default")
        c.command("CREATE DATABASE IF NOT EXISTS eco")
        c.command(TABLE_DDL.format(name="eco.kept"))
        c.insert("eco.kept", sample_rows(500), column_names=COLUMNS)
    finally:
        assert stop_service(proc) == 0, service_log(settings)
    proc = start_service(settings, "--no-ddl")
    try:
        c = warehouse.connect(settings)
        assert c.query(f"SELECT {', '.join(COLUMNS)} FROM kept ORDER BY home_id").result_rows == sample_rows(500)
    finally:
        assert stop_service(proc) == 0, service_log(settings)


# ---------------------------------------------------------- DDL rendering (no service)
def test_render_ddl_fills_placeholders_splits_and_orders(tmp_path):
    (tmp_path / "b.sql").write_text(
        "CREATE TABLE {database}.x (a String DEFAULT 'x;') ENGINE = Kafka\n"
        "SETTINGS kafka_broker_list = '{kafka_broker}', kafka_group_name = '{consumer_group_prefix}-x';\n"
    )
    (tmp_path / "a.sql").write_text("-- first; really\nCREATE DATABASE IF NOT EXISTS {database};\n"
                                    "SELECT {p:String}, map('k', 1) -- query parameters pass through\n;\n")
    settings = Settings.from_env({"ECO_PORT_BASE": str(PORT_BASE), "ECO_DATA_DIR": str(tmp_path / "d")})
    statements = warehouse.render_ddl(settings, tmp_path)
    assert statements == [
        "CREATE DATABASE IF NOT EXISTS eco",
        "SELECT {p:String}, map('k', 1)",
        "CREATE TABLE eco.x (a String DEFAULT 'x;') ENGINE = Kafka\n"
        f"SETTINGS kafka_broker_list = '{settings.clickhouse_kafka_bootstrap}', kafka_group_name = 'eco-warehouse-x'",
    ]
    assert set(warehouse.ddl_params(settings)) >= {
        "database", "kafka_broker", "registry_url", "topic_telemetry", "topic_anomalies", "topic_alerts", "consumer_group_prefix"}
    (tmp_path / "c.sql").write_text("SELECT {nope};\n")
    with pytest.raises(CommandError, match=r"c.sql: unknown placeholder \{nope\}"):
        warehouse.render_ddl(settings, tmp_path)


def test_project_ddl_renders(tmp_path):
    settings = Settings.from_env({"ECO_PORT_BASE": str(PORT_BASE), "ECO_DATA_DIR": str(tmp_path)})
    statements = warehouse.render_ddl(settings)
    assert statements, "sinks/sql has no statements"
    for sql in statements:
        assert not re.search(r"\{\w+\}", sql), sql  # every placeholder filled
        assert not sql.endswith(";") and "--" not in sql


def test_apply_ddl_names_the_failing_statement(tmp_path):
    from clickhouse_connect.driver.exceptions import DatabaseError

    (tmp_path / "001.sql").write_text("CREATE DATABASE {database};\nCREATE TABLE broken;\n")

    class FakeClient:
        def __init__(self):
            self.seen = []

        def command(self, sql, use_database=True):
            self.seen.append(sql)
            if "broken" in sql:
                raise DatabaseError("Received ClickHouse exception, code: 62, server response: "
                                    "Code: 62. DB::Exception: Syntax error. (SYNTAX_ERROR) (version 26.1.2.1) (for url x)")

    fake = FakeClient()
    settings = Settings.from_env({"ECO_PORT_BASE": str(PORT_BASE), "ECO_DATA_DIR": str(tmp_path / "d")})
    with pytest.raises(CommandError) as info:
        warehouse.apply_ddl(fake, settings, tmp_path)
    assert str(info.value) == "DDL 001.sql#2 failed: Code: 62. DB::Exception: Syntax error. (SYNTAX_ERROR)"
    assert fake.seen == ["CREATE DATABASE eco", "CREATE TABLE broken"]


def test_request_bodies_of_several_compressed_blocks():
    """clickhouse-connect compresses each insert block separately (lz4: one frame per
    block); the service must read every frame, not just the first."""
    from clickhouse_connect.driver.compression import get_compressor

    from infra.localstack.warehouse_service import _decompress

    blocks = [b"a" * 1000, b"b" * 2000, b"c" * 10]
    for encoding in ("lz4", "zstd", "gzip"):
        compressor = get_compressor(encoding)
        body = b"".join(compressor.compress_block(b) for b in blocks) + (compressor.flush() or b"")
        assert _decompress(body, encoding) == b"".join(blocks), encoding
