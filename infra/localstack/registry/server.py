"""HTTP front of the registry: Confluent's REST API over ``RegistryState`` and a log.

Only the endpoints confluent-kafka's ``SchemaRegistryClient``, its Avro serdes and
ClickHouse's ``AvroConfluent`` format use, plus /metrics and /health.

Usage from Python::

    from infra.localstack.registry.server import RegistryServer
    from infra.localstack.registry.store import MemoryLog

    with RegistryServer(MemoryLog(), credentials=("eco", "secret"), port=0).start() as server:
        print(server.url)          # http://127.0.0.1:<free port>

Access: reads are open, as in Confluent's default; every write (register, delete a
subject or version, soft or hard, set or delete compatibility) needs HTTP basic auth
with ``credentials``, which Confluent's clients send from ``basic.auth.user.info``.
Credentials that are sent and wrong are refused on reads too, so a misconfigured
client learns it at its first request.

Every write goes: validate against the state (``plan_*``) -> append the record to the
log (durable) -> apply it to the state -> answer. One lock serialises every request, so
two concurrent registrations cannot be handed the same id and no read sees a half-applied
change. Registry traffic is a few requests per producer start (clients cache what they
fetch), so a single lock costs nothing that matters.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ecoretrofit import metrics
from infra.localstack.registry.core import STORE_ERROR, RegistryError, RegistryState
from infra.localstack.registry.store import SchemaLog, StoreError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass
class Response:
    status: int
    body: Any  # JSON-able, or bytes sent as they are
    content_type: str = CONTENT_TYPE
    headers: tuple[tuple[str, str], ...] = ()


UNAUTHORIZED = Response(
    401, {"error_code": 401, "message": "Unauthorized: registry writes need HTTP basic auth credentials"},
    headers=(("WWW-Authenticate", 'Basic realm="schema-registry"'),),
)


def basic_auth_matches(header: str | None, credentials: tuple[str, str]) -> bool:
    """Does an ``Authorization`` header carry exactly these basic-auth credentials?

    >>> token = base64.b64encode(b"eco:s3cret").decode()
    >>> basic_auth_matches("Basic " + token, ("eco", "s3cret")), basic_auth_matches("Basic " + token, ("eco", "other"))
    (True, False)
    >>> basic_auth_matches(None, ("eco", "s3cret")), basic_auth_matches("Basic !!", ("eco", "s3cret"))
    (False, False)
    """
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Compare both parts in constant time, and both always: no early exit on the user.
    same_user = hmac.compare_digest(user.encode(), credentials[0].encode())
    same_password = hmac.compare_digest(password.encode(), credentials[1].encode())
    return bool(sep) and same_user and same_password


class Request:
    """What a route handler sees: path parameters, query flags and the JSON body."""

    def __init__(self, params: list[str], query: dict[str, list[str]], body: bytes):
        self.params = params
        self.query = query
        self._body = body

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        # The Python client sends Python booleans in query strings: "True"/"False".
        return (self.arg(name, "false") or "").strip().lower() == "true"

    def int_arg(self, name: str, default: int) -> int:
        try:
            return int(self.arg(name, str(default)))
        except ValueError:
            return default

    def json(self) -> dict:
        try:
            body = json.loads(self._body or b"{}")
        except ValueError as exc:
            raise RegistryError(400, 400, f"The request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RegistryError(400, 400, "The request body must be a JSON object")
        return body

    def schema_fields(self) -> tuple[str, str | None, list | None]:
        """(schema text, schemaType, references) of a schema request body."""
        body = self.json()
        text = body.get("schema")
        if not isinstance(text, str):
            raise RegistryError(422, 42201, "Invalid schema: the request has no 'schema' string")
        schema_type = body.get("schemaType")
        return text, schema_type.upper() if isinstance(schema_type, str) else schema_type, body.get("references")


def _paginate(items: list, request: Request) -> list:
    offset = max(0, request.int_arg("offset", 0))
    limit = request.int_arg("limit", -1)
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _parse_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RegistryError(404, 40403, f"Schema {text} not found") from None


class RegistryService:
    """The registry without HTTP: the state, the log, and the lock between them."""

    def __init__(self, schema_log: SchemaLog, credentials: tuple[str, str]):
        if not all(credentials):
            raise ValueError("the registry needs a user and a password for writes")
        self.log = schema_log
        self.credentials = credentials
        self.state = RegistryState()
        # Every request runs under this lock (see dispatch): a write's plan -> append ->
        # apply is atomic, and a read never sees the state halfway through an apply.
        self.lock = threading.Lock()
        # Restart = replay: the state is the fold of everything in the log.
        for problem in self.state.apply_all(schema_log.replay()):
            log.warning("skipped a log record: %s", problem)
        metrics.REGISTRY_SCHEMAS.set(self.state.schema_count())

    def commit(self, record: dict) -> None:
        """Make a planned change durable, then visible (``self.lock`` is held)."""
        try:
            self.log.append(record)
        except StoreError as exc:
            raise RegistryError(500, STORE_ERROR, f"Error while storing the change: {exc}") from None
        self.state.apply(record)
        metrics.REGISTRY_SCHEMAS.set(self.state.schema_count())

    # ------------------------------------------------------------------ schemas
    def root(self, req: Request) -> Response:
        return Response(200, {})

    def health(self, req: Request) -> Response:
        return Response(200, {"status": "UP", "schemas": self.state.schema_count()})

    def prometheus(self, req: Request) -> Response:
        return Response(200, generate_latest(), CONTENT_TYPE_LATEST)

    def schema_types(self, req: Request) -> Response:
        return Response(200, ["AVRO"])

    def schema_by_id(self, req: Request) -> Response:
        # ClickHouse's AvroConfluent calls only this. ?subject= only matters for
        # Confluent's schema contexts, which we do not have: same answer.
        schema = self.state.schema(_parse_id(req.params[0]))
        return Response(200, {"schema": schema.canonical})

    def schema_text_by_id(self, req: Request) -> Response:
        return Response(200, self.state.schema(_parse_id(req.params[0])).as_json)

    def schema_versions_by_id(self, req: Request) -> Response:
        entries = self.state.usages(_parse_id(req.params[0]), deleted=req.flag("deleted"))
        subject = req.arg("subject")
        items = [{"subject": e.subject, "version": e.version} for e in entries if subject in (None, e.subject)]
        return Response(200, _paginate(items, req))

    def schema_subjects_by_id(self, req: Request) -> Response:
        entries = self.state.usages(_parse_id(req.params[0]), deleted=req.flag("deleted"))
        subject = req.arg("subject")
        subjects = sorted({e.subject for e in entries if subject in (None, e.subject)})
        return Response(200, _paginate(subjects, req))

    # ----------------------------------------------------------------- subjects
    def list_subjects(self, req: Request) -> Response:
        subjects = self.state.subjects(
            deleted=req.flag("deleted"), deleted_only=req.flag("deleted_only"), prefix=req.arg("subjectPrefix", "")
        )
        return Response(200, _paginate(subjects, req))

    def list_versions(self, req: Request) -> Response:
        versions = self.state.versions(req.params[0], deleted=req.flag("deleted"), deleted_only=req.flag("deleted_only"))
        return Response(200, _paginate(versions, req))

    def _version_body(self, subject: str, spec: str, deleted: bool) -> dict:
        entry = self.state.get_version(subject, spec, deleted=deleted)
        schema = self.state.schema_of(entry)
        return {"subject": entry.subject, "version": entry.version, "id": entry.schema_id, "schema": schema.canonical}

    def get_version(self, req: Request) -> Response:
        return Response(200, self._version_body(req.params[0], req.params[1], req.flag("deleted")))

    def get_version_schema(self, req: Request) -> Response:
        body = self._version_body(req.params[0], req.params[1], req.flag("deleted"))
        return Response(200, json.loads(body["schema"]))

    def register(self, req: Request) -> Response:
        # ?normalize= is accepted and needs no work: every schema is canonicalised.
        text, schema_type, references = req.schema_fields()
        schema_id, record = self.state.plan_register(req.params[0], text, schema_type, references)
        if record is not None:
            self.commit(record)
            log.info("registered %s version %d as id %d", record["subject"], record["version"], schema_id)
        return Response(200, {"id": schema_id})

    def lookup(self, req: Request) -> Response:
        text, schema_type, references = req.schema_fields()
        subject = req.params[0]
        entry = self.state.lookup(subject, text, req.flag("deleted"), schema_type, references)
        return Response(200, self._version_body(subject, str(entry.version), deleted=True))

    def delete_subject(self, req: Request) -> Response:
        versions, record = self.state.plan_delete_subject(req.params[0], permanent=req.flag("permanent"))
        self.commit(record)
        return Response(200, versions)

    def delete_version(self, req: Request) -> Response:
        version, record = self.state.plan_delete_version(
            req.params[0], req.params[1], permanent=req.flag("permanent")
        )
        self.commit(record)
        return Response(200, version)

    # ------------------------------------------------------------ compatibility
    def _compatibility(self, req: Request, spec: str | None) -> Response:
        text, schema_type, references = req.schema_fields()
        problems = self.state.test_compatibility(req.params[0], text, spec, schema_type, references)
        body: dict[str, Any] = {"is_compatible": not problems}
        if req.flag("verbose"):
            body["messages"] = problems
        return Response(200, body)

    def compatibility_version(self, req: Request) -> Response:
        return self._compatibility(req, req.params[1])

    def compatibility_all(self, req: Request) -> Response:
        return self._compatibility(req, None)

    # ------------------------------------------------------------------- config
    def get_global_config(self, req: Request) -> Response:
        return Response(200, {"compatibilityLevel": self.state.global_compatibility()})

    def put_config(self, req: Request) -> Response:
        subject = req.params[0] if req.params else None
        body = req.json()
        # set_compatibility() sends "compatibility"; set_config(ServerConfig) may send
        # "compatibilityLevel" instead.
        wanted = body.get("compatibility", body.get("compatibilityLevel"))
        level, record = self.state.plan_set_compatibility(subject, wanted)
        self.commit(record)
        return Response(200, {"compatibility": level})

    def delete_config(self, req: Request) -> Response:
        subject = req.params[0] if req.params else None
        old, record = self.state.plan_delete_compatibility(subject)
        self.commit(record)
        return Response(200, {"compatibilityLevel": old})

    def get_subject_config(self, req: Request) -> Response:
        subject = req.params[0]
        level = self.state.subject_compatibility(subject)
        if level is None:
            if not req.flag("defaultToGlobal"):
                raise RegistryError(
                    404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
                )
            level = self.state.global_compatibility()
        return Response(200, {"compatibilityLevel": level})

    def get_mode(self, req: Request) -> Response:
        return Response(200, {"mode": "READWRITE"})


# (method, path pattern, handler). A segment pattern [^/]+ is one URL-encoded path
# segment; handlers receive the decoded segments in order.
SEG = r"([^/]+)"
ROUTES: list[tuple[str, str, Callable[[RegistryService, Request], Response]]] = [
    ("GET", r"", RegistryService.root),
    ("GET", r"/health", RegistryService.health),
    ("GET", r"/metrics", RegistryService.prometheus),
    ("GET", r"/schemas/types", RegistryService.schema_types),
    ("GET", rf"/schemas/ids/{SEG}", RegistryService.schema_by_id),
    ("GET", rf"/schemas/ids/{SEG}/schema", RegistryService.schema_text_by_id),
    ("GET", rf"/schemas/ids/{SEG}/versions", RegistryService.schema_versions_by_id),
    ("GET", rf"/schemas/ids/{SEG}/subjects", RegistryService.schema_subjects_by_id),
    ("GET", r"/subjects", RegistryService.list_subjects),
    ("POST", rf"/subjects/{SEG}", RegistryService.lookup),
    ("DELETE", rf"/subjects/{SEG}", RegistryService.delete_subject),
    ("GET", rf"/subjects/{SEG}/versions", RegistryService.list_versions),
    ("POST", rf"/subjects/{SEG}/versions", RegistryService.register),
    ("GET", rf"/subjects/{SEG}/versions/{SEG}", RegistryService.get_version),
    ("DELETE", rf"/subjects/{SEG}/versions/{SEG}", RegistryService.delete_version),
    ("GET", rf"/subjects/{SEG}/versions/{SEG}/schema", RegistryService.get_version_schema),
    ("POST", rf"/compatibility/subjects/{SEG}/versions", RegistryService.compatibility_all),
    ("POST", rf"/compatibility/subjects/{SEG}/versions/{SEG}", RegistryService.compatibility_version),
    ("GET", r"/config", RegistryService.get_global_config),
    ("PUT", r"/config", RegistryService.put_config),
    ("DELETE", r"/config", RegistryService.delete_config),
    ("GET", rf"/config/{SEG}", RegistryService.get_subject_config),
    ("PUT", rf"/config/{SEG}", RegistryService.put_config),
    ("DELETE", rf"/config/{SEG}", RegistryService.delete_config),
    ("GET", r"/mode", RegistryService.get_mode),
    ("GET", rf"/mode/{SEG}", RegistryService.get_mode),
]
_COMPILED = [(method, re.compile(pattern + "/?"), handler) for method, pattern, handler in ROUTES]

# What changes the registry: these need credentials. Lookups and compatibility tests
# are POSTs too, but read only.
WRITES = frozenset({
    RegistryService.register,
    RegistryService.delete_subject,
    RegistryService.delete_version,
    RegistryService.put_config,
    RegistryService.delete_config,
})


def dispatch(
    service: RegistryService, method: str, raw_path: str, body: bytes, authorization: str | None = None
) -> Response:
    """Route one request and turn every failure into Confluent's error JSON.

    ``authorization`` is the request's Authorization header: required for WRITES,
    checked whenever it is sent."""
    url = urlsplit(raw_path)
    query = parse_qs(url.query, keep_blank_values=True)
    path = url.path.rstrip("/") if url.path != "/" else ""
    try:
        allowed = False
        for route_method, pattern, handler in _COMPILED:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method:
                allowed = True
                continue
            if (handler in WRITES or authorization is not None) and not basic_auth_matches(
                authorization, service.credentials
            ):
                log.warning("refused %s %s: missing or wrong credentials", method, url.path)
                return UNAUTHORIZED
            # Decode segments only after matching, so an encoded '/' in a subject
            # name (%2F) cannot change the route.
            params = [unquote(p) for p in match.groups()]
            with service.lock:
                return handler(service, Request(params, query, body))
        if allowed:
            raise RegistryError(405, 405, f"HTTP {method} is not supported on {url.path}")
        raise RegistryError(404, 404, f"HTTP 404 Not Found: {url.path}")
    except RegistryError as exc:
        return Response(exc.http_status, {"error_code": exc.error_code, "message": exc.message})
    except Exception:
        log.exception("unexpected error on %s %s", method, raw_path)
        return Response(500, {"error_code": 500, "message": "Internal server error (see the registry's log)"})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client reuses its connection
    server_version = "EcoRetrofitRegistry/1"
    timeout = 60  # an idle keep-alive connection frees its thread after this

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        response = dispatch(
            self.server.service, self.command, self.path, body, self.headers.get("Authorization")  # type: ignore[attr-defined]
        )
        if isinstance(response.body, bytes):
            payload = response.body
        else:
            payload = json.dumps(response.body).encode()
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        metrics.REGISTRY_REQUESTS.labels(self.command, str(response.status)).inc()

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # open keep-alive connections must not delay shutdown
    request_queue_size = 64  # many producers register at once when a stack starts
    allow_reuse_address = True


class RegistryServer:
    """The registry on a host and port. Binds at construction (port 0 = any free port),
    then replays the log; ``start()`` serves in a thread, ``serve_forever()`` in this one.

    ``credentials`` (user, password) are what every write must present.
    Raises OSError if the address is taken and StoreError if the log cannot be replayed.
    """

    def __init__(
        self, schema_log: SchemaLog, *, credentials: tuple[str, str], host: str = "127.0.0.1", port: int = 0
    ):
        self._httpd = _HTTPServer((host, port), _Handler)
        try:
            self.service = RegistryService(schema_log, credentials)
        except BaseException:
            self._httpd.server_close()
            raise
        self._httpd.service = self.service  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self._serving = False  # shutdown() would wait forever for a loop never started
        self._stopped = False

    @property
    def host(self) -> str:
        return self._httpd.server_address[0]

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "RegistryServer":
        self._serving = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="registry-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._serving = True
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving (from another thread than serve_forever) and close the log."""
        if self._stopped:
            return
        self._stopped = True
        if self._serving:
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.service.log.close()

    def __enter__(self) -> "RegistryServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
