"""Client-side helpers for the warehouse, used by every process.

Every process reaches ClickHouse the same way: ``clickhouse_connect`` over HTTP to
``Settings.clickhouse_url``. Locally that URL points at ``ecoretrofit warehouse serve``
(embedded ClickHouse behind ClickHouse's own HTTP interface, see
``infra/localstack/warehouse_service.py``); in docker-compose it points at a real server. No code
here knows which one it talks to.

The schema lives in ``sinks/sql/*.sql``: applied in filename order, with
``{placeholders}`` filled from :func:`ddl_params`.

One server or a cluster of shards: the same files and the same code render both; only
``ECO_CLICKHOUSE_CLUSTER`` differs (see :func:`render_ddl` and docs/cluster.md).
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import schemas
from schemas import plausibility
from ecoretrofit.config import ConfigError, Settings
from ecoretrofit.errors import CommandError

SQL_DIR = Path(__file__).resolve().parent / "sql"

# A placeholder is a bare word in braces. ClickHouse's own query parameters
# ({name:Type}) and map literals ({'k': v}) never match, so they pass through.
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Statements end with a semicolon at the end of a line.
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
# A materialized view writing into a table: IF NOT EXISTS leaves an existing one as it
# is, so each is followed by an ALTER ... MODIFY QUERY giving it today's query (a view
# made by an older DDL, or for other regions, is brought up to date; a no-op otherwise).
_MATERIALIZED_VIEW = re.compile(
    r"CREATE MATERIALIZED VIEW IF NOT EXISTS (?P<name>\S+)\s+TO\s+\S+\s+AS\s+(?P<query>.*)", re.S)
# In a cluster every statement runs ON CLUSTER, a clause that goes right after the name
# of the object the statement creates, alters or drops (ClickHouse's grammar).
_STATEMENT_HEAD = re.compile(
    r"(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:DATABASE|TABLE|VIEW|MATERIALIZED\s+VIEW|DICTIONARY)\s+"
    r"(?:IF\s+NOT\s+EXISTS\s+)?|ALTER\s+TABLE\s+|DROP\s+(?:DATABASE|TABLE|VIEW|DICTIONARY)\s+(?:IF\s+EXISTS\s+)?)"
    r"[\w.`]+", re.I)
_CLUSTER_NAME = re.compile(r"[A-Za-z_][\w-]*")
# A statement that starts with {cluster_only} exists only in a cluster (the Distributed
# tables): on one server it renders to nothing.
_ABSENT = "\0absent"


def connect(settings: Settings, **kw):
    """A clickhouse-connect client for ``settings.clickhouse_url``.

    Keyword arguments go to ``clickhouse_connect.get_client`` and override the
    defaults (e.g. ``database="default"`` before the database exists, or
    ``compress=False``).
    """
    import clickhouse_connect  # imported here: it is not free, and not every command needs it

    url = urlsplit(settings.clickhouse_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"ECO_CLICKHOUSE_URL={settings.clickhouse_url!r}: expected http://host:port")
    options = {
        "host": url.hostname,
        "port": url.port or (8443 if url.scheme == "https" else 8123),
        "secure": url.scheme == "https",
        "username": settings.clickhouse_user,
        "password": settings.clickhouse_password,
        "database": settings.clickhouse_database,
    }
    options.update(kw)
    return clickhouse_connect.get_client(**options)


def wait_ready(settings: Settings, timeout: float = 60.0) -> None:
    """Block until the warehouse answers ``GET /ping``; CommandError after ``timeout``."""
    deadline = time.monotonic() + timeout
    url = settings.clickhouse_url.rstrip("/") + "/ping"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise CommandError(
                f"the warehouse at {settings.clickhouse_url} did not answer within {timeout:.0f}s "
                "(is `ecoretrofit warehouse serve` running?)"
            )
        time.sleep(0.2)


def error_line(exc: BaseException) -> str:
    """One readable line from a clickhouse-connect error.

    clickhouse-connect wraps the server's text ("Code: 60. DB::Exception: … (UNKNOWN_TABLE)
    (version …)") in its own prefix and appends the URL; keep only ClickHouse's part.
    """
    text = str(exc)
    start = text.find("Code: ")
    if start >= 0:
        text = text[start:]
    text = re.sub(r"\s*\(for url [^)]*\)\s*$", "", text)
    text = re.sub(r"\s*\(version [^()]*(?:\([^()]*\))?\)\s*$", "", text)
    return " ".join(text.split())


# ----------------------------------------------------------------------- DDL
def ddl_params(settings: Settings) -> dict[str, str]:
    """Values for the ``{placeholders}`` in ``sinks/sql/*.sql``."""
    from sinks.plausibility_sql import (
        dead_letter_cut_error_sql, dead_letter_error_sql, dead_letter_raw_sql, reasons_sql, work_order_reasons_sql,
    )

    reasons = reasons_sql(settings.known_regions)
    order_reasons = work_order_reasons_sql(settings.known_regions)
    cluster = settings.clickhouse_cluster
    if cluster and not _CLUSTER_NAME.fullmatch(cluster):
        raise ConfigError(f"ECO_CLICKHOUSE_CLUSTER={cluster!r}: expected a cluster name of <remote_servers>")
    return {
        "database": settings.clickhouse_database,
        # a cluster's name ("" on one server) and the suffix of the tables holding each
        # shard's rows: in a cluster `telemetry` is the Distributed table over every
        # shard's `telemetry_local`; on one server `telemetry` holds the rows itself
        "cluster": cluster,
        "local": "_local" if cluster else "",
        # how ClickHouse itself reaches Kafka and the registry (service names in docker-compose)
        "kafka_broker": settings.clickhouse_kafka_bootstrap,
        "registry_url": settings.clickhouse_schema_registry_url,
        "topic_telemetry": settings.topic_telemetry,
        "topic_anomalies": settings.topic_anomalies,
        "topic_alerts": settings.topic_alerts,
        "topic_workorders": settings.topic_workorders,
        "topic_predictions": settings.topic_predictions,
        "consumer_group_prefix": "eco-warehouse",
        # the plausibility contract of a reading (schemas/plausibility.py) as SQL
        "telemetry_reasons": reasons,
        "telemetry_dead_letter_error": dead_letter_error_sql(reasons),
        # a parsed reading as one JSON line (the dead letter's `raw`): the contract's fields
        "telemetry_row_json": _row_json_sql(schemas.TELEMETRY_READING),
        # the same for a work order (its own rules)
        "work_order_reasons": order_reasons,
        "work_order_dead_letter_error": dead_letter_error_sql(order_reasons),
        "work_order_row_json": _row_json_sql(schemas.WORK_ORDER),
        # what a dead letter keeps of an unparsable message (at most 64 kB, and says so)
        "dead_letter_raw": dead_letter_raw_sql("_raw_message"),
        "dead_letter_error": dead_letter_cut_error_sql("_raw_message", "_error"),
        "dead_letter_max_bytes": str(plausibility.DEAD_LETTER_MAX_BYTES),
        # what each column means, for people and assistants reading system.columns
        "telemetry_column_comments": column_comments_sql(schemas.TELEMETRY_READING, TELEMETRY_EXTRA_COMMENTS),
    }


def _row_json_sql(schema_name: str) -> str:
    """SQL of the current row as one JSON line of the schema's fields (a dead letter's ``raw``)."""
    fields = ", ".join(f["name"] for f in schemas.schema_dict(schema_name)["fields"])
    return f"formatRowNoNewline('JSONEachRow', {fields})"


#: Telemetry columns the warehouse adds to the Avro fields.
TELEMETRY_EXTRA_COMMENTS = {
    "kafka_partition": "Kafka partition the reading was consumed from.",
    "kafka_offset": "Kafka offset of the reading in its partition.",
    "ingested_at": "When the warehouse stored the reading (UTC).",
}


def column_comments_sql(schema_name: str, extra: dict[str, str] | None = None) -> str:
    """``COMMENT COLUMN`` clauses of an ``ALTER TABLE`` from an Avro schema's field docs
    (declared once, in the schema) plus ``extra``.

    >>> print(column_comments_sql("telemetry_reading", {"x": "it's"}).split(", ")[-1])
    COMMENT COLUMN x 'it\\'s'
    """
    docs = {f["name"]: f["doc"] for f in schemas.schema_dict(schema_name)["fields"] if f.get("doc")}
    docs.update(extra or {})

    def literal(text: str) -> str:
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return ", ".join(f"COMMENT COLUMN {name} {literal(doc)}" for name, doc in docs.items())


def render_ddl(settings: Settings, directory: Path | str | None = None) -> list[str]:
    """Every statement of ``directory/*.sql`` (default ``sinks/sql``) in filename order,
    placeholders filled, comments removed.

    With ``settings.clickhouse_cluster`` set, every statement gets ``ON CLUSTER``,
    ``{local}`` names each shard's own tables and the ``{cluster_only}`` statements (the
    Distributed tables) are kept; on one server they are dropped and ``{local}`` is empty.

    >>> one = Settings.from_env({"ECO_CLICKHOUSE_PASSWORD": "x", "ECO_S3_ACCESS_KEY": "x", "ECO_S3_SECRET_KEY": "x",
    ...                          "ECO_SCHEMA_REGISTRY_PASSWORD": "x"})
    >>> def telemetry(settings):
    ...     return [s.split("\\n")[0] for s in render_ddl(settings)
    ...             if re.match(r"CREATE TABLE IF NOT EXISTS eco\\.telemetry(_local)?\\s", s)]
    >>> telemetry(one)
    ['CREATE TABLE IF NOT EXISTS eco.telemetry']
    >>> for head in telemetry(one.replace(clickhouse_cluster="eco")):
    ...     print(head)
    CREATE TABLE IF NOT EXISTS eco.telemetry_local ON CLUSTER 'eco'
    CREATE TABLE IF NOT EXISTS eco.telemetry ON CLUSTER 'eco' AS eco.telemetry_local
    """
    return [sql for _, sql in _labelled_statements(settings, directory)]


def apply_ddl(client, settings: Settings, directory: Path | str | None = None) -> int:
    """Run :func:`render_ddl` on ``client``; returns the number of statements.

    Statements are expected to be idempotent (``IF NOT EXISTS``): this runs at every
    start of the warehouse. A failing statement raises CommandError naming its file.
    """
    from clickhouse_connect.driver.exceptions import ClickHouseError

    statements = _labelled_statements(settings, directory)
    for label, sql in statements:
        try:
            # use_database=False: the first statement usually creates the database
            client.command(sql, use_database=False)
        except ClickHouseError as exc:
            raise CommandError(f"DDL {label} failed: {error_line(exc)}") from None
    return len(statements)


def _labelled_statements(settings: Settings, directory: Path | str | None) -> list[tuple[str, str]]:
    folder = Path(directory) if directory is not None else SQL_DIR
    params = ddl_params(settings)
    params["cluster_only"] = "" if params["cluster"] else _ABSENT
    out = []
    for path in sorted(folder.glob("*.sql")):
        text = _strip_comments(path.read_text())

        def fill(m: re.Match, path=path) -> str:
            if m.group(1) not in params:
                raise CommandError(f"{path.name}: unknown placeholder {m.group(0)} (known: {', '.join(params)})")
            return params[m.group(1)]

        text = _PLACEHOLDER.sub(fill, text)
        statements = [s.strip() for s in _STATEMENT_END.split(text) if s.strip()]
        for n, sql in enumerate(statements, start=1):
            label = f"{path.name}#{n}"
            if sql.startswith(_ABSENT):
                continue
            if _ABSENT in sql:
                raise CommandError(f"DDL {label}: {{cluster_only}} must begin its statement")
            out.append((label, _on_cluster(sql, params["cluster"], label)))
            view = _MATERIALIZED_VIEW.fullmatch(sql)
            if view:
                label += " (modify query)"
                out.append((label, _on_cluster(f"ALTER TABLE {view['name']} MODIFY QUERY {view['query']}",
                                               params["cluster"], label)))
    return out


def _on_cluster(sql: str, cluster: str, label: str) -> str:
    """``sql`` with ``ON CLUSTER 'cluster'`` after the name of its object ("": as it is)."""
    if not cluster:
        return sql
    head = _STATEMENT_HEAD.match(sql)
    if head is None:
        raise CommandError(f"DDL {label}: cannot run it ON CLUSTER (not a CREATE, ALTER TABLE or DROP): {sql[:60]!r}")
    return f"{sql[:head.end()]} ON CLUSTER '{cluster}'{sql[head.end():]}"


def _strip_comments(text: str) -> str:
    """Drop ``--`` comments, except inside quoted strings and identifiers."""
    out, quote, i = [], "", 0
    while i < len(text):
        c = text[i]
        if quote:
            out.append(c)
            if c == "\\" and i + 1 < len(text):  # ClickHouse escapes with backslashes
                out.append(text[i + 1])
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'`\"":
            quote = c
            out.append(c)
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)
