"""The data lake: raw telemetry as Parquet files in S3, written by the batching sink.

``ecoretrofit sink --topic telemetry --to lake`` runs the same consume -> batch ->
ledger -> write -> commit loop as the warehouse sink (sinks/sink.py), with a
:class:`LakeWriter` instead of ClickHouse inserts. Layout in ``$ECO_S3_LAKE_BUCKET``::

    telemetry/date=YYYY-MM-DD/region=R/part-<topic>-<partition>-<first>-<last>.parquet
    dead_letters/topic=<topic>/part-<topic>-<partition>-<first>-<last>.parquet
    _ledger/<group>/<topic>/<partition:05d>/<first:020d>-<last:020d>

One batch (one Kafka partition's offsets ``first..last``) becomes one file per (UTC
date, region) it touches. The name is a function of the batch's offset range, so a
batch replayed after a crash overwrites its own files instead of adding copies; the
ledger (one small object per batch, written before the files and deleted after the
offset commit) makes the replay cut exactly the same range (see sinks/sink.py).

Files carry every reading field plus ``kafka_partition``/``kafka_offset`` (lineage;
an import into ``telemetry`` fills the same columns), zstd-compressed, non-null
columns declared non-nullable so ClickHouse infers the same types as the warehouse
tables. ``region`` is both in the file and in the path: readers that do not know hive
partitioning still get it.

ClickHouse reads the lake with the ``s3()`` table function; ``use_hive_partitioning=1``
(ClickHouse 26.1) adds ``date`` (Date) from the path (``region`` comes from the file)::

    SELECT date, region, count() FROM s3('http://…/eco-lake/telemetry/**/*.parquet',
        'KEY', 'SECRET', 'Parquet') GROUP BY ALL SETTINGS use_hive_partitioning = 1

:func:`import_range` replays whole days of the lake into a MergeTree table
(``telemetry_lake`` by default): per day it drops the table's partitions of that day
and inserts the day's files, so an import can be re-run and always ends with exactly
the lake's rows for those days.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from typing import Iterable
from urllib.parse import quote

from sinks.batching import Batch
from sinks.sink import TransientError

log = logging.getLogger("eco.lake")

DEFAULT_BATCH_ROWS = 250_000
DEFAULT_BATCH_SECONDS = 60.0
DEFAULT_PREFIX = "telemetry"
# Where objects land that only the lake ingester (sinks/lake_ingest.py) brings into the
# warehouse; DEFAULT_PREFIX holds what the lake sink archives from Kafka, already stored.
LANDING_PREFIX = "landing/telemetry"
LEDGER_PREFIX = "_ledger"
DAY_MS = 86_400_000

def _reading_fields() -> list[dict]:
    import schemas

    return schemas.schema_dict(schemas.TELEMETRY_READING)["fields"]


# The reading fields (in schema order) plus lineage: the file columns.
TELEMETRY_COLUMNS = tuple(f["name"] for f in _reading_fields()) + ("kafka_partition", "kafka_offset")


def arrow_schema():
    """The Parquet schema, derived from the TelemetryReading contract: strings,
    longs, doubles, timestamp-millis as timestamp[ms, UTC]; union-with-null fields
    nullable, every other field declared non-null."""
    import pyarrow as pa

    def arrow_type(avro) -> tuple[object, bool]:
        if isinstance(avro, list):
            inner = [t for t in avro if t != "null"]
            return arrow_type(inner[0])[0], True
        if isinstance(avro, dict):
            if avro.get("logicalType") == "timestamp-millis":
                return pa.timestamp("ms", tz="UTC"), False
            return arrow_type(avro["type"])
        return {"string": pa.string(), "long": pa.int64(), "int": pa.int32(), "double": pa.float64(),
                "float": pa.float32(), "boolean": pa.bool_()}[avro], False

    fields = []
    for f in _reading_fields():
        typ, nullable = arrow_type(f["type"])
        fields.append(pa.field(f["name"], typ, nullable=nullable))
    fields += [pa.field("kafka_partition", pa.uint32(), False), pa.field("kafka_offset", pa.uint64(), False)]
    return pa.schema(fields)


def dead_letter_schema():
    import pyarrow as pa

    return pa.schema([pa.field("topic", pa.string(), False), pa.field("partition", pa.uint32(), False),
                      pa.field("offset", pa.uint64(), False), pa.field("raw", pa.binary(), False),
                      pa.field("error", pa.string(), False)])


# ------------------------------------------------------------------ layout
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def path_value(value: str) -> str:
    """A partition value made safe for a key segment (``/``, ``=``, ``%``… escaped).

    >>> path_value("north"), path_value("a/b=c")
    ('north', 'a%2Fb%3Dc')
    """
    return value if not _UNSAFE.search(value) else quote(value, safe="")


def day_of(ts_ms: int) -> str:
    """UTC date of an epoch-millisecond timestamp.

    >>> day_of(1_709_337_599_999), day_of(1_709_337_600_000)
    ('2024-03-01', '2024-03-02')
    """
    return (dt.date(1970, 1, 1) + dt.timedelta(days=ts_ms // DAY_MS)).isoformat()


def part_name(batch: Batch) -> str:
    return f"part-{batch.topic}-{batch.partition}-{batch.first_offset}-{batch.last_offset}.parquet"


def file_key(prefix: str, day: str, region: str, batch: Batch) -> str:
    """The object key of a batch's rows of one (date, region).

    >>> file_key("telemetry", "2024-03-01", "north", Batch("eco.t", 3, 100, 199))
    'telemetry/date=2024-03-01/region=north/part-eco.t-3-100-199.parquet'
    """
    return f"{prefix}/date={day}/region={path_value(region)}/{part_name(batch)}"


def group_rows(rows: list[tuple], ts_index: int | None = None, region_index: int | None = None
               ) -> dict[tuple[str, str], list[int]]:
    """Row indices per (UTC date, region), in row order (columns as TELEMETRY_COLUMNS).

    >>> group_rows([("h", "n", 0), ("h", "s", 0), ("h", "n", DAY_MS)], ts_index=2, region_index=1)
    {('1970-01-01', 'n'): [0], ('1970-01-01', 's'): [1], ('1970-01-02', 'n'): [2]}
    """
    ts_index = TELEMETRY_COLUMNS.index("ts") if ts_index is None else ts_index
    region_index = TELEMETRY_COLUMNS.index("region") if region_index is None else region_index
    days: dict[int, str] = {}
    out: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        d = row[ts_index] // DAY_MS
        day = days.get(d)
        if day is None:
            day = days[d] = day_of(d * DAY_MS)
        out.setdefault((day, row[region_index]), []).append(i)
    return out


# ---------------------------------------------------------------- writing
def _s3_errors():
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, OSError)


class LakeWriter:
    """Writes a batch as Parquet files, one per (date, region), with deterministic keys."""

    def __init__(self, s3, bucket: str, prefix: str = DEFAULT_PREFIX, label: str = "lake_telemetry"):
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        parent = self.prefix.rsplit("/", 1)[0] + "/" if "/" in self.prefix else ""
        self.dead_prefix = f"{parent}dead_letters"
        self.label = label
        self.schema = arrow_schema()
        self.files_written = 0

    def files_for(self, batch: Batch) -> dict[str, bytes]:
        """The objects a batch becomes: key -> Parquet bytes (pure; no I/O)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        out: dict[str, bytes] = {}
        if batch.rows:
            columns = list(zip(*batch.rows))
            table = pa.Table.from_arrays(
                [pa.array(col, type=f.type) for col, f in zip(columns, self.schema)], schema=self.schema)
            for (day, region), idx in sorted(group_rows(batch.rows).items()):
                part = table if len(idx) == len(batch.rows) else table.take(pa.array(idx, pa.int64()))
                buf = io.BytesIO()
                pq.write_table(part, buf, compression="zstd")
                out[file_key(self.prefix, day, region, batch)] = buf.getvalue()
        if batch.dead:
            schema = dead_letter_schema()
            cols = list(zip(*batch.dead))
            table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(cols, schema)], schema=schema)
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            out[f"{self.dead_prefix}/topic={path_value(batch.topic)}/{part_name(batch)}"] = buf.getvalue()
        return out

    def write(self, batch: Batch) -> None:
        try:
            for key, body in self.files_for(batch).items():
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
                self.files_written += 1
        except _s3_errors() as exc:
            raise TransientError(f"S3: {exc}") from None


class S3Ledger:
    """The sink ledger as one empty-ish object per batch, keyed so that the ranges at
    or after a committed offset are one ``ListObjectsV2 StartAfter`` away."""

    def __init__(self, s3, bucket: str):
        self.s3 = s3
        self.bucket = bucket

    @staticmethod
    def _dir(group: str, topic: str, partition: int) -> str:
        return f"{LEDGER_PREFIX}/{path_value(group)}/{path_value(topic)}/{partition:05d}/"

    def key(self, group: str, batch: Batch) -> str:
        return f"{self._dir(group, batch.topic, batch.partition)}{batch.first_offset:020d}-{batch.last_offset:020d}"

    def pending(self, group, topic, committed):
        out: dict[int, list[tuple[int, int]]] = {}
        try:
            for p, c in committed.items():
                prefix = self._dir(group, topic, p)
                kw = {"Bucket": self.bucket, "Prefix": prefix}
                if c:
                    kw["StartAfter"] = f"{prefix}{c:020d}"
                while True:
                    resp = self.s3.list_objects_v2(**kw)
                    for obj in resp.get("Contents", ()):
                        first, _, last = obj["Key"][len(prefix):].partition("-")
                        if first.isdigit() and last.isdigit() and int(last) >= (c or 0):
                            out.setdefault(p, []).append((int(first), int(last)))
                    if not resp.get("IsTruncated"):
                        break
                    kw["ContinuationToken"] = resp["NextContinuationToken"]
        except _s3_errors() as exc:
            raise TransientError(f"S3 ledger: {exc}") from None
        return out

    def record(self, group, batches):
        try:
            for b in batches:
                body = f'{{"rows": {len(b.rows)}, "dead_letters": {len(b.dead)}}}'.encode()
                self.s3.put_object(Bucket=self.bucket, Key=self.key(group, b), Body=body)
        except _s3_errors() as exc:
            raise TransientError(f"S3 ledger: {exc}") from None

    def forget(self, group, batches):
        keys = [{"Key": self.key(group, b)} for b in batches]
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})


def lake_writer(settings, spec, prefix: str | None = None) -> tuple[LakeWriter, S3Ledger]:
    from ecoretrofit.admin import s3_client

    if tuple(spec.columns) != TELEMETRY_COLUMNS:
        raise ValueError(f"the lake stores telemetry readings; {spec.topic} has columns {spec.columns}")
    s3 = s3_client(settings)
    try:
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if settings.s3_lake_bucket not in existing:
            s3.create_bucket(Bucket=settings.s3_lake_bucket)
    except _s3_errors() as exc:
        from ecoretrofit.errors import CommandError

        raise CommandError(f"cannot use the lake bucket {settings.s3_lake_bucket} at {settings.s3_endpoint}: {exc}") from None
    return LakeWriter(s3, settings.s3_lake_bucket, prefix or DEFAULT_PREFIX), S3Ledger(s3, settings.s3_lake_bucket)


# ---------------------------------------------------------------- reading
def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def s3_function(settings, glob: str, s3_url: str | None = None) -> str:
    """``s3('<url>/<bucket>/<glob>', key, secret, 'Parquet')`` for ClickHouse.

    ``s3_url`` is the object store as ClickHouse reaches it (a service name in
    docker-compose); default ``settings.s3_endpoint``.
    """
    base = (s3_url or settings.s3_endpoint).rstrip("/")
    url = f"{base}/{settings.s3_lake_bucket}/{glob.lstrip('/')}"
    return f"s3({_literal(url)}, {_literal(settings.s3_access_key)}, {_literal(settings.s3_secret_key)}, 'Parquet')"


def lake_glob(prefix: str = DEFAULT_PREFIX, day: str | None = None) -> str:
    """The glob of every telemetry file, or of one day's.

    >>> lake_glob(), lake_glob("x/telemetry", "2024-03-01")
    ('telemetry/**/*.parquet', 'x/telemetry/date=2024-03-01/*/*.parquet')
    """
    prefix = prefix.strip("/")
    return f"{prefix}/date={day}/*/*.parquet" if day else f"{prefix}/**/*.parquet"


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def list_files(s3, bucket: str, prefix: str) -> list[dict]:
    out, kw = [], {"Bucket": bucket, "Prefix": prefix}
    while True:
        resp = s3.list_objects_v2(**kw)
        out += [o for o in resp.get("Contents", ()) if o["Key"].endswith(".parquet")]
        if not resp.get("IsTruncated"):
            return out
        kw["ContinuationToken"] = resp["NextContinuationToken"]


def import_range(settings, client, start: dt.date, end: dt.date, table: str = "telemetry_lake",
                 prefix: str = DEFAULT_PREFIX, s3_url: str | None = None, s3=None,
                 progress=lambda line: None) -> list[dict]:
    """Replace the days ``start..end`` of ``table`` with the lake's rows for them.

    Per day: the table's partitions of that day are dropped, then the day's files are
    inserted with one ``INSERT … SELECT … FROM s3()``. Returns one dict per day:
    ``{"date", "files", "rows"}`` (rows counted in the table afterwards).
    """
    from ecoretrofit.admin import s3_client

    s3 = s3 or s3_client(settings)
    db = settings.clickhouse_database
    prefix = prefix.strip("/")
    columns = ", ".join(TELEMETRY_COLUMNS)
    out = []
    for day in days(start, end):
        d = day.isoformat()
        files = list_files(s3, settings.s3_lake_bucket, f"{prefix}/date={d}/")
        parts = [r[0] for r in client.query(
            f"SELECT DISTINCT _partition_id FROM {db}.{table} WHERE toDate(ts) = {{d:Date}}",
            parameters={"d": d}).result_rows]
        for pid in parts:
            client.command(f"ALTER TABLE {db}.{table} DROP PARTITION ID {_literal(pid)}")
        if files:
            client.command(
                f"INSERT INTO {db}.{table} ({columns}) SELECT {columns} "
                f"FROM {s3_function(settings, lake_glob(prefix, d), s3_url)}")
        rows = int(client.command(f"SELECT count() FROM {db}.{table} WHERE toDate(ts) = {{d:Date}}",
                                  parameters={"d": d}))
        out.append({"date": d, "files": len(files), "rows": rows, "replaced_partitions": len(parts)})
        progress(f"{d}: {len(files)} files, {rows:,} rows")
    return out


def stats(settings, client, prefix: str = DEFAULT_PREFIX, s3_url: str | None = None,
          start: dt.date | None = None, end: dt.date | None = None) -> list[tuple]:
    """(date, region, files, rows) over the lake, read by ClickHouse through s3()."""
    where = []
    params = {}
    if start:
        where.append("date >= {start:Date}")
        params["start"] = start.isoformat()
    if end:
        where.append("date <= {end:Date}")
        params["end"] = end.isoformat()
    sql = (f"SELECT date, region, uniqExact(_path) AS files, count() AS rows "
           f"FROM {s3_function(settings, lake_glob(prefix), s3_url)} "
           f"{'WHERE ' + ' AND '.join(where) if where else ''} "
           f"GROUP BY date, region ORDER BY date, region SETTINGS use_hive_partitioning = 1")
    return client.query(sql, parameters=params or None).result_rows


def iter_days(text_from: str, text_to: str) -> Iterable[dt.date]:
    return days(dt.date.fromisoformat(text_from), dt.date.fromisoformat(text_to))
