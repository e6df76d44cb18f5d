"""The warehouse service: embedded ClickHouse (chdb) behind ClickHouse's own HTTP interface.

chdb lets one process own a data directory. This process is that owner; every other
process reaches the data over HTTP with the official ``clickhouse_connect`` client,
exactly as it would reach a real ClickHouse server (which is what docker-compose runs).
So there is one client code path for both run modes; only ``ECO_CLICKHOUSE_URL`` differs.

What of ClickHouse's HTTP interface is spoken here (enough for clickhouse-connect,
curl and the ``query`` command):

* ``GET /ping`` and ``GET /`` answer ``Ok.`` without credentials; ``GET /metrics`` is
  the Prometheus endpoint.
* ``POST /`` (and read-only ``GET /?query=``): the query comes from the ``query`` URL
  parameter, the body, or both (URL part first, as ClickHouse does), or from the
  ``query`` field of a multipart form. ``param_NAME`` parameters bind ``{NAME:Type}``;
  every other parameter that is not part of the transport (``database``,
  ``default_format``, ``session_id``, ``query_id``, ``wait_end_of_query``…) is a
  ClickHouse setting for this one query.
* ``INSERT … FORMAT X`` followed by data in the body: the data is written to a temp
  file and inserted with ``INSERT … FROM INFILE``, so ClickHouse parses the format
  (Native from clickhouse-connect, CSV or JSONEachRow from curl…).
* Request bodies compressed with ``Content-Encoding`` lz4 / zstd / gzip / deflate (br
  if installed); responses compressed when ``enable_http_compression`` is on and the
  client sends ``Accept-Encoding``.
* Sessions (``session_id``): ``SET`` and ``USE`` persist for that session only.
* Credentials: HTTP basic auth, ``X-ClickHouse-User``/``X-ClickHouse-Key`` headers or
  ``user``/``password`` parameters; a mismatch is ClickHouse's 516 AUTHENTICATION_FAILED.
* Errors: HTTP 500 (403 for authentication) with ClickHouse's own text
  ``Code: N. DB::Exception: … (NAME)`` and the ``X-ClickHouse-Exception-Code`` header.
* Response headers clickhouse-connect reads: ``X-ClickHouse-Query-Id``,
  ``-Format``, ``-Timezone``, ``-Summary``.

Not supported (a clear NOT_IMPLEMENTED error instead): ClickHouse's native-framed
``compress``/``decompress`` parameters and external data (file parts of a multipart
request). Results are built in memory before they are sent, so a result never streams
and progress headers are never sent.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import gzip
import hmac
import json
import logging
import os
import re
import signal
import socket
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import parse_qsl, urlsplit

from ecoretrofit import metrics
from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError

try:  # the same optional codecs clickhouse-connect offers
    import lz4.frame as lz4_frame
except ImportError:  # pragma: no cover - lz4 is a dependency of clickhouse-connect[lz4]
    lz4_frame = None
try:
    from compression import zstd  # Python 3.14+
except ImportError:
    try:
        from backports import zstd
    except ImportError:  # pragma: no cover
        zstd = None
try:
    import brotli
except ImportError:
    brotli = None

log = logging.getLogger("eco.warehouse")

# Kafka settings measured on this project's broker (shared/notes/local-stack.md): with
# them the Kafka tables deliver their first rows in ~8 s instead of ~25 s. The server
# timezone is pinned to UTC so results never depend on the host's zone.
CONFIG_XML = """<clickhouse>
    <timezone>UTC</timezone>
    <background_message_broker_schedule_pool_size>16</background_message_broker_schedule_pool_size>
    <kafka>
        <!-- A block must be written within it (010_telemetry.sql), or the consumer
             drops out of its group and the block is read again. (Restarts that stalled
             at 60 s were blamed on it, wrongly: docs/delivery.md.) -->
        <max_poll_interval_ms>10000</max_poll_interval_ms>
        <session_timeout_ms>6000</session_timeout_ms>
        <heartbeat_interval_ms>1000</heartbeat_interval_ms>
        <!-- Tansu holds a fetch for much of the max wait even when data is there:
             keep it short, or every row waits ~0.4-1.5 s before it is stored. -->
        <fetch_wait_max_ms>100</fetch_wait_max_ms>
    </kafka>
</clickhouse>
"""

# A Kafka consumer that leaves its group while the group is still forming (it joined
# but holds no partition yet) leaves Tansu 0.6's group waiting for a departed leader,
# and the next warehouse's consumers then never get their partitions (docs/delivery.md).
# So a stop first waits, this long at most, until every consumer holds its partitions.
# (The local stack SIGKILLs the service 20 s after its SIGTERM: a kill sends no
# LeaveGroup, and a member that times out is dropped cleanly.)
KAFKA_SETTLE_TIMEOUT_S = 12.0
# A consumer holds its partitions ~3 s after it joins here; one that has held none for
# this long is waiting on its group, and the service says so in its log.
KAFKA_UNASSIGNED_WARN_S = 60.0

# URL parameters ClickHouse's HTTP handler consumes itself: never query settings.
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "user", "password", "quota_key",
    "session_id", "session_timeout", "session_check", "close_session", "query_id",
    "buffer_size", "wait_end_of_query", "client_protocol_version", "role",
    "stacktrace", "compress", "decompress",
})

# ClickHouse error codes used by the service itself (the rest come from chdb).
BAD_ARGUMENTS = 36
NOT_IMPLEMENTED = 48
UNKNOWN_SETTING = 115
READONLY = 164
ACCESS_DENIED = 497
CANNOT_DECOMPRESS = 271
SESSION_NOT_FOUND = 372
AUTHENTICATION_FAILED = 516
_ERROR_NAMES = {
    BAD_ARGUMENTS: "BAD_ARGUMENTS", NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    UNKNOWN_SETTING: "UNKNOWN_SETTING", READONLY: "READONLY", ACCESS_DENIED: "ACCESS_DENIED",
    CANNOT_DECOMPRESS: "CANNOT_DECOMPRESS", SESSION_NOT_FOUND: "SESSION_NOT_FOUND",
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
}

_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Whitespace and comments before the first keyword.
_LEADING = re.compile(rb"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_FIRST_WORD = re.compile(rb"[(\s]*([A-Za-z]+)")
_RESULT_WORDS = {b"SELECT", b"WITH", b"SHOW", b"DESC", b"DESCRIBE", b"EXISTS", b"EXPLAIN", b"CHECK"}
# "INSERT INTO target [(columns)] [SETTINGS …] FORMAT Name" followed by the data. The
# data starts after the format name, blanks, and at most one line break.
_INSERT_WITH_DATA = re.compile(
    rb"INSERT\s+(?:INTO\s+)?"
    rb"(?P<target>(?:TABLE\s+)?"
    rb"(?:FUNCTION\s+\w+\s*\((?:[^()]|\([^()]*\))*\)|(?:`[^`]*`|\"[^\"]*\"|[\w.])+)"
    rb"(?:\s*\([^()]*\))?)"
    rb"\s*(?:SETTINGS\s+(?P<settings>.*?)\s*)?"
    rb"FORMAT\s+(?P<fmt>\w+)[ \t]*(?:\r?\n)?",
    re.I | re.S,
)
# "… FORMAT Name" at the end of a statement, possibly followed by a SETTINGS clause.
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)(?:\s+SETTINGS\b[^;]*)?\s*;?\s*$", re.I)


class ClickHouseError(Exception):
    """A failed query, carrying ClickHouse's error code and text."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text
        self.kind = "unknown"  # select | insert | command, once the statement is known

    @classmethod
    def make(cls, code: int, message: str) -> "ClickHouseError":
        """An error raised by the service itself, worded like ClickHouse's own."""
        return cls(code, f"Code: {code}. DB::Exception: {message}. ({_ERROR_NAMES.get(code, 'UNKNOWN')})")

    @classmethod
    def from_chdb(cls, exc: Exception) -> "ClickHouseError":
        text = str(exc).strip()
        m = re.search(r"Code: (\d+)\.", text)
        if m:
            return cls(int(m.group(1)), text[m.start():])
        return cls(1001, f"Code: 1001. DB::Exception: {text}. (STD_EXCEPTION)")


@dataclass
class QueryRequest:
    """One HTTP query, transport already peeled off."""

    query: bytes = b""  # the `query` URL parameter (or form field)
    body: bytes = b""  # the request body, decompressed
    database: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # {name:Type} values
    default_format: str = "TabSeparated"
    session_id: str | None = None
    session_timeout: float = 60.0
    session_check: bool = False
    readonly: int = 0  # 2 for GET, as in ClickHouse


@dataclass
class QueryResult:
    body: bytes
    kind: str  # select | insert | command
    fmt: str | None  # output format; None for statements without a result
    summary: dict[str, str]
    timezone: str
    http_compression: bool  # enable_http_compression in effect for this query


@dataclass
class _Session:
    settings: dict[str, str] = field(default_factory=dict)
    database: str | None = None
    timeout: float = 60.0
    last_used: float = field(default_factory=time.monotonic)


class Engine:
    """The one chdb connection of this process, shared by every HTTP request.

    chdb runs one query at a time per connection (its own mutex: concurrent queries
    take the time of as many in a row) and the connection carries
    state (current database, settings). Every request therefore runs under one lock:
    first the request's database and settings are applied, then its query. Settings
    are applied as differences from what the connection currently has, so the steady
    stream of identical settings clickhouse-connect sends costs nothing.
    """

    def __init__(self, conn, path: Path, connect: Callable[[], object] | None = None,
                 s3_prefixes: tuple[str, ...] = ()):
        self._conn = conn
        self.path = path
        # a new connection to the same data: read-only requests run on one of their own,
        # so ClickHouse's readonly setting can be set on it and never has to be undone
        self._connect = connect
        self._s3_prefixes = s3_prefixes  # the only s3() URLs a query may name (the lake)
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._database = "default"
        self._current: dict[str, str] = {}  # settings this connection has, where they differ from baseline
        rows = self._rows("SELECT name, value, changed FROM system.settings")
        self._baseline = {name: value for name, value, _ in rows}
        self._baseline_changed = {name for name, _, changed in rows if changed}
        self.version, self.timezone = self._rows("SELECT version(), timezone()")[0]

    @classmethod
    def open(cls, path: Path, config_file: Path, s3_prefixes: tuple[str, ...] = ()) -> "Engine":
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.chmod(0o700)  # also a directory made by an older version (mkdir's mode is not applied to it)
        _check_not_locked(path)
        import chdb  # ~0.3 s and ~250 MB: only the service pays for it

        def connect():
            return chdb.connect(f"{path}?config-file={config_file}")

        try:
            conn = connect()
        except RuntimeError as exc:
            raise CommandError(f"cannot open the ClickHouse data in {path}: {' '.join(str(exc).split())}") from None
        return cls(conn, path, connect, s3_prefixes)

    def close(self) -> None:
        with self._lock:  # waits for the running query
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ----------------------------------------------------------------- queries
    def execute(self, req: QueryRequest) -> QueryResult:
        kind, sql, insert = _classify(req.query, req.body)
        try:
            return self._execute(req, kind, sql, insert)
        except ClickHouseError as exc:
            exc.kind = "command" if kind in ("set", "use") else kind
            raise

    def _execute(self, req: QueryRequest, kind: str, sql: str, insert: tuple | None) -> QueryResult:
        # readonly=2 (GET) still lets a query change settings; readonly=1 does not. (A
        # clear early answer only: ClickHouse's own readonly setting enforces it below.)
        if req.readonly and not (kind == "select" or (kind == "set" and req.readonly == 2)):
            message = "Cannot execute query in readonly mode."
            if req.readonly == 2:
                message += (" For queries over HTTP, method GET implies readonly."
                            " You should use method POST for modifying queries")
            raise ClickHouseError.make(READONLY, message)
        fmt = req.default_format or "TabSeparated"
        if fmt.lower() in ("dataframe", "arrowtable", "debug"):  # chdb's Python-only pseudo formats
            raise ClickHouseError.make(BAD_ARGUMENTS, f"Unknown output format {fmt}")
        # INSERT data goes to a temp file before the lock: other queries need not wait for it
        with _spooled(insert) as insert_sql, self._lock:
            if self._conn is None:
                raise ClickHouseError.make(BAD_ARGUMENTS, "The warehouse is shutting down")
            session = self._session(req)
            statement = sql if insert is None else f"INSERT INTO {insert[0]} FORMAT {insert[2]}"
            self._check_statement(statement, kind)
            database = req.database or (session.database if session else None) or "default"
            wanted = dict(session.settings) if session else {}
            wanted.update(req.settings)
            if req.readonly:
                return self._execute_readonly(req, kind, sql, fmt, database, wanted)
            self._use_database(database)
            self._apply_settings(wanted)
            timezone = self._current.get("session_timezone") or self.timezone
            compression = self._current.get("enable_http_compression", self._baseline.get("enable_http_compression"))
            if insert_sql is not None:
                res = self._query(insert_sql, "TabSeparated", req.params)
            elif kind == "set":
                try:
                    res = self._query(sql, fmt, req.params)
                finally:
                    self._after_set(session)
            else:
                res = self._query(sql, fmt, req.params)
                if kind == "use":
                    self._database = self._rows("SELECT currentDatabase()")[0][0]
                    if session:
                        session.database = self._database
        body = res.bytes()
        summary = {"elapsed_ns": str(int(res.elapsed() * 1e9))}
        if kind == "insert":
            # chdb counts the rows it parsed (INSERT with data); for INSERT … SELECT it
            # only knows the rows read, so written_rows is left out rather than wrong.
            summary.update(read_rows=str(res.storage_rows_read()), read_bytes=str(res.storage_bytes_read()))
            if res.rows_read():
                summary.update(written_rows=str(res.rows_read()), written_bytes=str(res.bytes_read()))
        else:
            summary.update(
                read_rows=str(res.storage_rows_read()), read_bytes=str(res.storage_bytes_read()),
                result_rows=str(res.rows_read()), result_bytes=str(len(body)),
            )
        out_fmt = None
        if kind == "select":
            m = _TRAILING_FORMAT.search(sql)
            out_fmt = m.group(1) if m else fmt
        kind = "command" if kind in ("set", "use") else kind
        return QueryResult(body, kind, out_fmt, summary, timezone, compression not in (None, "0", "false"))

    def rows(self, sql: str) -> list[list]:
        """Run an internal query (no session, no request settings) and return its rows."""
        with self._lock:
            if self._conn is None:
                return []
            return self._rows(sql)

    # --------------------------------------------------------- lock held below
    def _check_statement(self, sql: str, kind: str) -> None:
        """Refuse what the service must never run, judged on ClickHouse's own parse of
        the request: more than one statement (chdb would run them all, and a check of
        the first one says nothing about the others), host files (file(), File
        engines and dictionaries, INTO OUTFILE, FROM INFILE), other hosts and services
        (url(), remote(), s3() outside the lake...), backups, and SET readonly on the
        shared connection (it can never be unset there)."""
        try:
            formatted = self._conn.query("SELECT formatQuerySingleLine({q:String})", "TabSeparatedRaw",
                                         params={"q": _escaped(sql)}).bytes().decode()
        except RuntimeError as exc:
            raise ClickHouseError.from_chdb(exc) from None
        reason = denied_access(formatted, self._s3_prefixes)
        if reason is None and kind == "set" and re.search(r"\breadonly\b", _code_only(formatted), re.I):
            reason = "SET readonly: pass readonly as a request parameter (it applies to that request only)"
        if reason is not None:
            raise ClickHouseError.make(ACCESS_DENIED, f"Not allowed by the warehouse service: {reason}")

    def _execute_readonly(self, req: QueryRequest, kind: str, sql: str, fmt: str, database: str,
                          wanted: dict[str, str]) -> QueryResult:
        """A read-only request, on a connection of its own: the request's settings, then
        ClickHouse's ``readonly`` (which nothing after it can lower), then the query. So
        ClickHouse itself refuses any write, DDL or table function the query contains."""
        conn = self._connect()
        try:
            def run(text: str, fmt: str = "TabSeparated"):
                try:
                    return conn.query(text, fmt, params=req.params or {})
                except RuntimeError as exc:
                    raise ClickHouseError.from_chdb(exc) from None

            run(f"USE {_identifier(database)}")
            assignments = [f"{n} = {_literal(v)}" for n, v in wanted.items() if _SETTING_NAME.fullmatch(n)]
            if len(assignments) != len(wanted):
                raise ClickHouseError.make(UNKNOWN_SETTING, "Unknown setting")
            assignments.append(f"readonly = {int(req.readonly)}")
            run("SET " + ", ".join(assignments))
            res = run(sql, fmt)
            body = res.bytes()
            timezone = wanted.get("session_timezone") or self.timezone
            summary = {"elapsed_ns": str(int(res.elapsed() * 1e9)), "read_rows": str(res.storage_rows_read()),
                       "read_bytes": str(res.storage_bytes_read()), "result_rows": str(res.rows_read()),
                       "result_bytes": str(len(body))}
        finally:
            conn.close()
        out_fmt = None
        if kind == "select":
            m = _TRAILING_FORMAT.search(sql)
            out_fmt = m.group(1) if m else fmt
        compression = wanted.get("enable_http_compression", self._baseline.get("enable_http_compression"))
        return QueryResult(body, "command" if kind in ("set", "use") else kind, out_fmt, summary, timezone,
                           compression not in (None, "0", "false"))

    def _query(self, sql: str, fmt: str = "TabSeparated", params: dict[str, str] | None = None):
        try:
            return self._conn.query(sql, fmt, params=params or {})
        except RuntimeError as exc:
            raise ClickHouseError.from_chdb(exc) from None

    def _rows(self, sql: str) -> list[list]:
        text = self._query(sql, "JSONCompactEachRow").bytes().decode()
        return [json.loads(line) for line in text.splitlines() if line]

    def _session(self, req: QueryRequest) -> _Session | None:
        now = time.monotonic()
        for sid in [s for s, v in self._sessions.items() if now - v.last_used > v.timeout]:
            del self._sessions[sid]
        if not req.session_id:
            return None
        session = self._sessions.get(req.session_id)
        if session is None:
            if req.session_check:
                raise ClickHouseError.make(SESSION_NOT_FOUND, f"Session {req.session_id} not found")
            session = self._sessions[req.session_id] = _Session()
        session.last_used = now
        session.timeout = req.session_timeout
        return session

    def _use_database(self, database: str) -> None:
        if database != self._database:
            self._query(f"USE {_identifier(database)}")
            self._database = database

    def _apply_settings(self, wanted: dict[str, str]) -> None:
        changes: dict[str, str | None] = {}  # None: back to the baseline
        for name, value in wanted.items():
            if self._current.get(name, self._baseline.get(name)) != value:
                changes[name] = value
        for name in self._current:
            if name not in wanted:
                changes[name] = None
        if not changes:
            return
        for name in changes:
            if not _SETTING_NAME.fullmatch(name):
                raise ClickHouseError.make(UNKNOWN_SETTING, f"Unknown setting '{name}'")
        assignments = ", ".join(
            f"{name} = {_literal(value)}" if value is not None else self._baseline_assignment(name)
            for name, value in changes.items()
        )
        try:
            self._query(f"SET {assignments}")
        except ClickHouseError:
            self._current = self._read_changed()  # part of the SET may have been applied
            raise
        for name, value in changes.items():
            if value is None or value == self._baseline.get(name):
                self._current.pop(name, None)
            else:
                self._current[name] = value

    def _baseline_assignment(self, name: str) -> str:
        if name in self._baseline and name in self._baseline_changed:
            return f"{name} = {_literal(self._baseline[name])}"  # chdb's own non-default value
        return f"{name} = DEFAULT"

    def _read_changed(self) -> dict[str, str]:
        rows = self._rows("SELECT name, value FROM system.settings WHERE changed")
        return {name: value for name, value in rows if self._baseline.get(name) != value}

    def _after_set(self, session: _Session | None) -> None:
        """A client ran SET: it lasts for its session, or only for this request."""
        before, self._current = self._current, self._read_changed()
        if session is None:
            return
        for name in set(before) | set(self._current):
            if before.get(name) != self._current.get(name):
                session.settings[name] = self._current.get(name, self._baseline.get(name, ""))


# Functions, table functions, table engines and dictionary sources (ClickHouse matches
# most of them case-insensitively) that reach host files, other hosts or programs.
# chdb runs as clickhouse-local does: user_files_path, remote_url_allow_hosts and user
# grants in its config are not enforced (measured), so the service refuses them itself.
_DENIED_CALLS = re.compile(
    r"\b(file|filecluster|filelog|filesystem|url|urlcluster|http|s3cluster|s3queue|hdfs\w*|azure\w*|gcs|oss|cosn"
    r"|executable\w*|sqlite|mysql|postgresql|odbc|jdbc|mongodb|redis|remote|remotesecure|cluster"
    r"|clusterallreplicas|clickhouse|iceberg\w*|deltalake\w*|hudi\w*|paimon\w*|arrowflight|ytsaurus"
    r"|catboostevaluate|dictionary)\s*\(",
    re.I,
)
_S3_CALL = re.compile(r"\bs3\s*\(", re.I)
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.)*'")
# ATTACH ... FROM 'path' adopts host files as a table; SYSTEM SHUTDOWN/KILL would stop the service.
_DENIED_CLAUSES = re.compile(
    r"\b(INTO\s+OUTFILE|FROM\s+INFILE)\b|^\s*(BACKUP|RESTORE|ATTACH|SYSTEM\s+(?:SHUTDOWN|KILL))\b", re.I)


def _code_only(formatted: str) -> str:
    """A formatted statement with the insides of its string literals blanked (offsets kept)."""
    return _STRING_LITERAL.sub(lambda m: "'" + " " * (len(m.group(0)) - 2) + "'", formatted)


def denied_access(formatted: str, s3_prefixes: tuple[str, ...] = ()) -> str | None:
    """Why a statement (as ``formatQuerySingleLine`` prints it) reaches outside the
    warehouse, or None. s3() is allowed only on a URL under one of ``s3_prefixes``.

    >>> denied_access("SELECT * FROM file('/etc/passwd', 'LineAsString')")
    'file()'
    >>> denied_access("SELECT 'file(' AS x FROM t") is None
    True
    >>> denied_access("SELECT 1 INTO OUTFILE '/tmp/x'")
    'INTO OUTFILE'
    >>> denied_access("SELECT * FROM s3('http://s3:9000/lake/x.parquet')", ("http://s3:9000/lake/",)) is None
    True
    >>> denied_access("SELECT * FROM s3('http://s3:9000/lake/../broker/x')", ("http://s3:9000/lake/",))
    's3() outside the lake'
    """
    code = _code_only(formatted)
    m = _DENIED_CLAUSES.search(code)
    if m:
        return " ".join((m.group(1) or m.group(2)).upper().split())
    m = _DENIED_CALLS.search(code)
    if m:
        return f"{m.group(1)}()"
    for m in _S3_CALL.finditer(code):
        # the first argument, in the original text (same offsets as in `code`)
        start = m.end() + len(code[m.end():]) - len(code[m.end():].lstrip())
        arg = _STRING_LITERAL.match(formatted, start)
        url = arg.group(0)[1:-1] if arg else ""
        if not url or ".." in url or "\\" in url or not any(url.startswith(p) for p in s3_prefixes):
            return "s3() outside the lake"
    return None


def _classify(query: bytes, body: bytes) -> tuple[str, str, tuple | None]:
    """(kind, SQL text, insert) for a request; insert is (target, settings, format, data)
    when the request carries INSERT data after a FORMAT clause."""
    if query and body:
        # clickhouse-connect puts "INSERT … FORMAT Native" in the URL and only data in
        # the body: keep the (possibly large) body as it is.
        m = _INSERT_WITH_DATA.match(query, _LEADING.match(query).end())
        if m and not query[m.end():].strip():
            return "insert", "", _insert_parts(m, memoryview(body))
        text = query + b"\n" + body
    else:
        text = query or body
    start = _LEADING.match(text).end()
    m = _INSERT_WITH_DATA.match(text, start)
    if m:
        return "insert", "", _insert_parts(m, memoryview(text)[m.end():])
    try:
        sql = text.decode()
    except UnicodeDecodeError:
        raise ClickHouseError.make(BAD_ARGUMENTS, "The query is not valid UTF-8") from None
    if not sql.strip():
        raise ClickHouseError.make(BAD_ARGUMENTS, "Empty query")
    word = _FIRST_WORD.match(text, start)
    first = word.group(1).upper() if word else b""
    if first == b"INSERT":
        kind = "insert"
    elif first in _RESULT_WORDS:
        kind = "select"
    elif first == b"SET" and not re.match(rb"SET\s+(DEFAULT\s+)?ROLE\b", text[word.start(1):], re.I):
        kind = "set"
    elif first == b"USE":
        kind = "use"
    else:
        kind = "command"
    return kind, sql, None


@contextlib.contextmanager
def _spooled(insert: tuple | None) -> Iterator[str | None]:
    """For an INSERT with data: write the data to a temp file and yield the statement
    that inserts it. chdb takes SQL as text, so binary data cannot ride along in the
    query; ``FROM INFILE`` has ClickHouse parse the file in its format, as a server
    parses a request body."""
    if insert is None:
        yield None
        return
    target, settings_clause, fmt, data = insert
    # ".bin": ClickHouse guesses compression from the extension (.gz, .lz4…); this is none
    fd, path = tempfile.mkstemp(prefix="eco-insert-", suffix=".bin")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        settings_sql = f" SETTINGS {settings_clause}" if settings_clause else ""
        yield f"INSERT INTO {target} FROM INFILE {_literal(path)}{settings_sql} FORMAT {fmt}"
    finally:
        os.unlink(path)


def _insert_parts(m: re.Match, data: memoryview) -> tuple[str, str, str, memoryview]:
    settings = m.group("settings")
    return m.group("target").decode(), settings.decode() if settings else "", m.group("fmt").decode(), data


def _escaped(value: str) -> str:
    """A query parameter value in ClickHouse's escaped (TSV) form, as servers expect."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _literal(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _check_not_locked(path: Path) -> None:
    """Fail with one clear line if another process owns this data directory.

    ClickHouse flock()s ``<path>/status`` while it runs and writes its PID there. Test
    that lock (and let go at once) before chdb tries, because chdb only reports a
    generic "Error initializing EmbeddedServer".
    """
    status = path / "status"
    if not status.exists():
        return
    with open(status, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            m = re.search(rb"PID: (\d+)", f.read())
            owner = f"pid {m.group(1).decode()}" if m else "another process"
            raise CommandError(
                f"the ClickHouse data in {path} is in use by {owner}; stop it first or use another ECO_DATA_DIR"
            ) from None
        fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------- compression
def _decompress(data: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return data
        if encoding == "gzip":
            return gzip.decompress(data)
        if encoding == "deflate":
            return zlib.decompress(data)
        if encoding == "lz4" and lz4_frame is not None:
            # clickhouse-connect compresses each block as its own frame: read them all
            out, rest = [], data
            while rest:
                d = lz4_frame.LZ4FrameDecompressor()
                out.append(d.decompress(rest))
                rest = d.unused_data
            return b"".join(out)
        if encoding == "zstd" and zstd is not None:
            return zstd.decompress(data)  # handles concatenated frames
        if encoding == "br" and brotli is not None:
            return brotli.decompress(data)
    except Exception as exc:
        raise ClickHouseError.make(CANNOT_DECOMPRESS, f"Cannot decompress the {encoding} request body: {exc}") from None
    raise ClickHouseError.make(NOT_IMPLEMENTED, f"Unsupported Content-Encoding: {encoding}")


def _compressor(accept_encoding: str) -> tuple[str, Callable[[bytes], bytes]] | None:
    """The first encoding in the client's Accept-Encoding that we can produce."""
    available: dict[str, Callable[[bytes], bytes]] = {"gzip": lambda b: gzip.compress(b, 3), "deflate": zlib.compress}
    if lz4_frame is not None:
        available["lz4"] = lz4_frame.compress
    if zstd is not None:
        available["zstd"] = zstd.compress
    for token in accept_encoding.split(","):
        name = token.split(";")[0].strip().lower()
        if name in available:
            return name, available[name]
    return None


_CONTENT_TYPES = [
    ("tabseparated", "text/tab-separated-values; charset=UTF-8"),
    ("tsv", "text/tab-separated-values; charset=UTF-8"),
    ("csv", "text/csv; charset=UTF-8"),
    ("json", "application/json; charset=UTF-8"),
    ("pretty", "text/plain; charset=UTF-8"),
    ("values", "text/plain; charset=UTF-8"),
    ("xml", "application/xml; charset=UTF-8"),
]


def _content_type(fmt: str | None) -> str:
    if fmt is None:
        return "text/plain; charset=UTF-8"
    lower = fmt.lower()
    for prefix, ctype in _CONTENT_TYPES:
        if lower.startswith(prefix):
            return ctype
    return "application/octet-stream"  # Native, RowBinary…, Arrow, Parquet


# ------------------------------------------------------------------------- HTTP
class WarehouseServer(ThreadingHTTPServer):
    daemon_threads = True  # an idle keep-alive connection must not block shutdown
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], settings: Settings):
        super().__init__(address, _Handler)
        self.settings = settings
        self.engine: Engine | None = None
        self.display_name = socket.gethostname()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clickhouse-connect pools connections
    server_version = "ecoretrofit-warehouse"
    timeout = 30  # seconds of socket silence before an idle keep-alive connection is closed
    # Headers and body leave in two writes; with Nagle's algorithm the second waits for
    # the client's delayed ACK (~40 ms per request, measured).
    disable_nagle_algorithm = True
    server: WarehouseServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        path = url.path.rstrip("/") or "/"
        if path == "/ping" or (path == "/" and method == "GET" and "query" not in params):
            self._read_body()
            return self._send(200, b"Ok.\n")
        if path == "/metrics" and method == "GET":
            self._read_body()
            from prometheus_client import CONTENT_TYPE_LATEST

            return self._send(200, self._metrics(), CONTENT_TYPE_LATEST)
        try:
            body = self._read_body()
        except ClickHouseError as exc:
            self.close_connection = True  # the rest of the body is still on the wire
            return self._send_error(exc)
        if path != "/":
            return self._send(404, f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n".encode())
        if not self._authenticated(params):
            metrics.WAREHOUSE_QUERIES.labels("auth", "error").inc()
            user = self._credentials(params)[0]
            return self._send_error(ClickHouseError.make(
                AUTHENTICATION_FAILED,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
            ), status=403)
        started = time.perf_counter()
        kind = "unknown"
        try:
            req = self._query_request(method, params, body)
            result = self.server.engine.execute(req)
            kind = result.kind
        except ClickHouseError as exc:
            metrics.WAREHOUSE_QUERIES.labels(exc.kind, "error").inc()
            return self._send_error(exc)
        metrics.WAREHOUSE_QUERIES.labels(kind, "ok").inc()
        metrics.WAREHOUSE_QUERY_SECONDS.labels(kind).observe(time.perf_counter() - started)
        self._send_result(result, params)

    # ------------------------------------------------------------- requests
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:  # clickhouse-connect streams inserts this way
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise ClickHouseError.make(BAD_ARGUMENTS, "Malformed chunked request body") from None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
            body = b"".join(chunks)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise ClickHouseError.make(BAD_ARGUMENTS, "Invalid Content-Length") from None
            body = self.rfile.read(length) if length else b""
        return _decompress(body, self.headers.get("Content-Encoding", ""))

    def _credentials(self, params: dict[str, str]) -> tuple[str, str]:
        user, password = None, None
        auth = self.headers.get("Authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        user = self.headers.get("X-ClickHouse-User", params.get("user", user))
        password = self.headers.get("X-ClickHouse-Key", params.get("password", password))
        return user or "default", password or ""

    def _authenticated(self, params: dict[str, str]) -> bool:
        user, password = self._credentials(params)
        s = self.server.settings
        # compare_digest: no timing hint about how much of the password was right
        return hmac.compare_digest(user.encode(), s.clickhouse_user.encode()) & hmac.compare_digest(
            password.encode(), s.clickhouse_password.encode()
        )

    def _query_request(self, method: str, params: dict[str, str], body: bytes) -> QueryRequest:
        if params.get("compress") == "1" or params.get("decompress") == "1":
            raise ClickHouseError.make(
                NOT_IMPLEMENTED, "ClickHouse's native compress/decompress framing is not supported here; use Content-Encoding"
            )
        params = dict(params)
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            params.update(_form_fields(ctype, body))
            body = b""
        req = QueryRequest(
            query=params.get("query", "").encode(),
            body=body,
            database=params.get("database") or None,
            default_format=params.get("default_format") or "TabSeparated",
            session_id=params.get("session_id") or None,
            session_check=params.get("session_check") == "1",
            readonly=2 if method == "GET" else 0,
        )
        try:
            req.session_timeout = float(params.get("session_timeout") or 60)
        except ValueError:
            raise ClickHouseError.make(BAD_ARGUMENTS, "Invalid session timeout") from None
        for name, value in params.items():
            if name.startswith("param_"):
                req.params[name[6:]] = value
            elif name == "readonly":
                # applied here, never to the shared connection: once readonly is set
                # there, no SET could undo it
                req.readonly = max(req.readonly, int(value) if value.isdigit() else 1)
            elif name not in TRANSPORT_PARAMS:
                req.settings[name] = value
        return req

    # ------------------------------------------------------------ responses
    def _send_result(self, result: QueryResult, params: dict[str, str]) -> None:
        headers = {
            "X-ClickHouse-Query-Id": params.get("query_id") or str(uuid.uuid4()),
            "X-ClickHouse-Timezone": result.timezone,
            "X-ClickHouse-Summary": json.dumps(result.summary),
            "Content-Type": _content_type(result.fmt),
        }
        if result.fmt is not None:
            headers["X-ClickHouse-Format"] = result.fmt
        body = result.body
        accept = self.headers.get("Accept-Encoding", "")
        if body and accept and result.http_compression:
            chosen = _compressor(accept)
            if chosen:
                headers["Content-Encoding"] = chosen[0]
                body = chosen[1](body)
        self._send(200, body, headers=headers)

    def _send_error(self, exc: ClickHouseError, status: int = 500) -> None:
        engine = self.server.engine
        text = exc.text if "(version " in exc.text or engine is None else f"{exc.text} (version {engine.version})"
        self._send(status, (text + "\n").encode(), headers={"X-ClickHouse-Exception-Code": str(exc.code)})

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=UTF-8",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", content_type)
        headers["X-ClickHouse-Server-Display-Name"] = self.server.display_name
        headers["Keep-Alive"] = f"timeout={self.timeout}"
        headers["Content-Length"] = str(len(body))
        if self.close_connection:
            headers["Connection"] = "close"
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _metrics(self) -> bytes:
        from prometheus_client import generate_latest

        engine = self.server.engine
        if engine is not None:
            db = _literal(self.server.settings.clickhouse_database)
            try:
                for table, rows in engine.rows(
                    f"SELECT name, total_rows FROM system.tables WHERE database = {db} AND total_rows IS NOT NULL"
                ):
                    metrics.WAREHOUSE_ROWS.labels(table).set(rows)
            except ClickHouseError as exc:
                log.warning("cannot count rows for /metrics: %s", exc.text)
        return generate_latest()


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The text fields of a multipart/form-data body (clickhouse-connect sends the query
    and long parameters this way)."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields = {}
    for part in message.iter_parts():
        if part.get_filename():
            raise ClickHouseError.make(
                NOT_IMPLEMENTED, "External data (file parts of a multipart request) is not supported by the warehouse service"
            )
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = payload.decode()
    return fields


class _EngineClient:
    """Just enough of a clickhouse-connect client for ``warehouse.apply_ddl`` to run
    in-process, before the HTTP interface is announced as ready."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def command(self, cmd: str, use_database: bool = True, **_):
        from clickhouse_connect.driver.exceptions import DatabaseError

        try:
            return self._engine.execute(QueryRequest(body=cmd.encode())).body.decode()
        except ClickHouseError as exc:
            raise DatabaseError(exc.text) from None


# ------------------------------------------------------------------- lifecycle
def unsettled_kafka_tables(rows) -> list[str]:
    """The Kafka tables with a consumer that holds no partition, from ``(database,
    table, partition ids)`` rows of ``system.kafka_consumers``.

    >>> unsettled_kafka_tables([("eco", "telemetry_queue", [0, 1, 2]), ("eco", "anomalies_queue", [])])
    ['eco.anomalies_queue']
    >>> unsettled_kafka_tables([])
    []
    """
    return sorted({f"{database}.{table}" for database, table, partitions in rows if not partitions})


class UnassignedKafkaTables:
    """Since when each Kafka table has had a consumer without partitions; names a table
    once per episode, when it has waited longer than ``after_s``.

    >>> watch = UnassignedKafkaTables(after_s=60)
    >>> watch.update([("eco", "telemetry_queue", [])], now=0.0)
    []
    >>> watch.update([("eco", "telemetry_queue", [])], now=61.0)
    ['eco.telemetry_queue']
    >>> watch.update([("eco", "telemetry_queue", [])], now=200.0)  # once
    []
    >>> watch.update([("eco", "telemetry_queue", [0, 1])], now=201.0)
    []
    >>> watch.update([("eco", "telemetry_queue", [])], now=202.0)  # a new episode
    []
    """

    def __init__(self, after_s: float = KAFKA_UNASSIGNED_WARN_S):
        self.after_s = after_s
        self._since: dict[str, float] = {}
        self._named: set[str] = set()

    def update(self, rows, now: float) -> list[str]:
        waiting = set(unsettled_kafka_tables(rows))
        for table in set(self._since) - waiting:
            del self._since[table]
            self._named.discard(table)
        due = sorted(t for t in waiting if now - self._since.setdefault(t, now) > self.after_s and t not in self._named)
        self._named.update(due)
        return due


def _kafka_assignments(engine: Engine) -> list[list]:
    return engine.rows("SELECT database, table, assignments.partition_id FROM system.kafka_consumers")


def let_kafka_groups_settle(engine: Engine, timeout_s: float = KAFKA_SETTLE_TIMEOUT_S) -> list[str]:
    """Wait until every Kafka consumer of ``engine`` holds its partitions (see
    KAFKA_SETTLE_TIMEOUT_S), at most ``timeout_s``; returns the tables still waiting."""
    started = time.monotonic()
    while True:
        try:
            waiting = unsettled_kafka_tables(_kafka_assignments(engine))
        except ClickHouseError as exc:
            log.warning("cannot read system.kafka_consumers before stopping: %s", exc.text)
            return []
        waited = time.monotonic() - started
        if not waiting or waited >= timeout_s:
            break
        time.sleep(0.2)
    if waiting:
        log.warning("stopping while the Kafka consumers of %s hold no partition (waited %.1f s)",
                    ", ".join(waiting), waited)
    elif waited >= 0.2:
        log.info("waited %.1f s for the Kafka consumers to hold their partitions before leaving their groups", waited)
    return waiting


def config_file(settings: Settings) -> Path:
    """Write the ClickHouse config for this data directory; returns its path."""
    path = settings.data_dir / "clickhouse-config.xml"
    # the data directory holds the credentials and every table: its owner's only
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if not path.exists() or path.read_text() != CONFIG_XML:
        path.write_text(CONFIG_XML)
    return path


def serve(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    apply_schema: bool = True,
    ddl_dir: Path | None = None,
    on_ready: Callable[[str], None] = lambda line: print(line, flush=True),
    stop: threading.Event | None = None,
) -> None:
    """Run the warehouse until SIGTERM/SIGINT (or ``stop`` is set).

    The port is bound first (a taken port fails at once), then chdb opens the data
    directory and the DDL is applied; only then are requests answered. Clients that
    connect meanwhile wait in the listen queue.
    """
    from sinks import warehouse

    host = host or settings.bind_host
    port = port or settings.port("warehouse")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        server = WarehouseServer((host, port), settings)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise CommandError(
                f"port {port} on {host} is already in use (another warehouse? see `ecoretrofit stack status`)"
            ) from None
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    engine = None
    try:
        lake = f"{settings.s3_endpoint.rstrip('/')}/{settings.s3_lake_bucket}/"
        engine = Engine.open(settings.data_dir / "clickhouse", config_file(settings), s3_prefixes=(lake,))
        statements = warehouse.apply_ddl(_EngineClient(engine), settings, ddl_dir) if apply_schema else 0
        server.engine = engine
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="warehouse-http", daemon=True)
        thread.start()
        on_ready(
            f"warehouse ready on http://{host}:{port} (ClickHouse {engine.version}, "
            f"data {engine.path}, {statements} DDL statements applied)"
        )
        unassigned, next_check = UnassignedKafkaTables(), time.monotonic()
        while not stop.wait(0.5):
            if time.monotonic() < next_check:
                continue
            next_check += 10
            try:
                stalled = unassigned.update(_kafka_assignments(engine), time.monotonic())
            except ClickHouseError as exc:
                log.warning("cannot read system.kafka_consumers: %s", exc.text)
                continue
            for table in stalled:
                log.warning(
                    "the Kafka consumers of %s have held no partition for over %.0f s: their group is not "
                    "forming. On the local broker (Tansu 0.6) that is a group waiting for a departed leader "
                    "(docs/delivery.md); restarting the broker clears it", table, unassigned.after_s)
        log.info("warehouse stopping")
        server.shutdown()
        let_kafka_groups_settle(engine)
    finally:
        server.server_close()
        if engine is not None:
            engine.close()  # stops the Kafka-engine consumers too
