"""The schema registry's logic, free of I/O: schemas, subjects, versions, compatibility.

Event sourcing
--------------
Every change (a registration, a delete, a config change) is a *record*: a small JSON-able
dict. The registry appends the record to a log (``infra.localstack.registry.store``) and only then folds
it into :class:`RegistryState` with :meth:`RegistryState.apply`. The state is therefore
nothing but the fold of the log, and restarting is replaying the log from the start.

Writers never build records by hand: the ``plan_*`` methods validate a request against
the current state and return the record to append (or raise :class:`RegistryError`).
A record carries every decision already taken (the schema id, the version number), so
replaying it later gives exactly the same state whatever else changed in the code.

Record types (the ``"type"`` key)::

    SCHEMA          {"subject", "version", "id", "schema"}   one new subject version
    DELETE_VERSION  {"subject", "version", "permanent"}      soft (flag) or hard (forget)
    DELETE_SUBJECT  {"subject", "permanent"}                 every version of the subject
    CONFIG          {"subject", "compatibility"}             subject None = global;
                                                             compatibility None = unset
    NOOP            anything else                            ignored (store markers)

Applying a record twice is harmless, so an at-least-once log is good enough.

Schemas
-------
A schema is parsed with fastavro (which validates it and qualifies every name) and
rewritten as a *canonical* compact JSON text: fixed key order, no whitespace, primitive
types written as plain strings. Two texts that differ only in layout therefore share one
canonical text, and schema ids are keyed by that text: the same schema registered under
several subjects gets one id, as in Confluent's registry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

import fastavro

# ----------------------------------------------------------------------------- errors


class RegistryError(Exception):
    """A request the registry refuses, with Confluent's HTTP status and error code."""

    def __init__(self, http_status: int, error_code: int, message: str):
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code
        self.message = message


# Confluent's error codes, so clients that branch on them keep working.
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
SUBJECT_SOFT_DELETED = 40404
SUBJECT_NOT_SOFT_DELETED = 40405
VERSION_SOFT_DELETED = 40406
VERSION_NOT_SOFT_DELETED = 40407
SUBJECT_LEVEL_COMPATIBILITY_NOT_CONFIGURED = 40408
INCOMPATIBLE_SCHEMA = 409
INVALID_SCHEMA = 42201
INVALID_VERSION = 42202
INVALID_COMPATIBILITY_LEVEL = 42203
STORE_ERROR = 50001


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: object) -> RegistryError:
    return RegistryError(404, VERSION_NOT_FOUND, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, SCHEMA_NOT_FOUND, detail)


def invalid_schema(detail: str) -> RegistryError:
    return RegistryError(422, INVALID_SCHEMA, f"Invalid schema: {detail}")


# ----------------------------------------------------------------------- compatibility

NONE = "NONE"
BACKWARD = "BACKWARD"
BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
FORWARD = "FORWARD"
FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
FULL = "FULL"
FULL_TRANSITIVE = "FULL_TRANSITIVE"
COMPATIBILITY_LEVELS = (NONE, BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE)
DEFAULT_COMPATIBILITY = BACKWARD

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})

# Writer type -> reader types that can read it (Avro spec, "Schema Resolution").
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


# ---------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class AvroSchema:
    """One parsed schema.

    ``canonical`` is what the registry stores, returns and keys ids by. ``tree`` is
    fastavro's parsed form (every name fully qualified, references left as name
    strings) and ``names`` maps each full name to its definition; the compatibility
    checker walks those two.
    """

    canonical: str
    tree: Any
    names: dict[str, Any]

    @property
    def as_json(self) -> Any:
        return json.loads(self.canonical)


def parse_avro(text: str) -> AvroSchema:
    """Validate an Avro schema text and canonicalise it; RegistryError 42201 if invalid."""
    if not isinstance(text, str) or not text.strip():
        raise invalid_schema("the schema is empty")
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise invalid_schema(f"not valid JSON ({exc})") from None
    try:
        parsed = fastavro.parse_schema(raw)
    except Exception as exc:  # fastavro raises several unrelated types for bad schemas
        raise invalid_schema(f"{type(exc).__name__}: {exc}") from None
    names = dict(parsed.get("__named_schemas", {})) if isinstance(parsed, dict) else {}
    tree = _strip_fastavro_keys(parsed)
    names = {name: _strip_fastavro_keys(node) for name, node in names.items()}
    canonical = json.dumps(_canonical(tree, enclosing_ns=""), separators=(",", ":"))
    return AvroSchema(canonical=canonical, tree=tree, names=names)


def _strip_fastavro_keys(node: Any) -> Any:
    """fastavro marks parsed dicts with private keys; drop them (recursively)."""
    if isinstance(node, dict):
        return {k: _strip_fastavro_keys(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_strip_fastavro_keys(v) for v in node]
    return node


def _split_name(fullname: str) -> tuple[str, str]:
    """'a.b.C' -> ('a.b', 'C'); 'C' -> ('', 'C')."""
    ns, _, short = fullname.rpartition(".")
    return ns, short


def _canonical(node: Any, enclosing_ns: str) -> Any:
    """Rewrite a fastavro-parsed schema into the JSON we store.

    Layout follows Avro Java's ``Schema.toString()``: named types get a short ``name``
    plus a ``namespace`` only when it differs from the enclosing one, and references
    to a type of the enclosing namespace use its short name. Keys come in a fixed
    order so that equal schemas give equal texts.
    """
    if isinstance(node, list):
        return [_canonical(branch, enclosing_ns) for branch in node]
    if isinstance(node, str):
        if node in PRIMITIVES:
            return node
        ns, short = _split_name(node)
        return short if ns == enclosing_ns and ns else node
    if not isinstance(node, dict):
        raise invalid_schema(f"unexpected element {node!r}")

    kind = node.get("type")
    known = _KNOWN_KEYS.get(kind, ("type",)) if isinstance(kind, str) else ("type",)
    extra = {k: v for k, v in node.items() if k not in known and k != "namespace"}

    if kind in PRIMITIVES:
        # {"type": "string"} is just "string"; attributes such as logicalType keep the dict.
        return {"type": kind, **_sorted(extra)} if extra else kind
    if kind in NAMED_TYPES:
        ns, short = _split_name(node["name"])
        out: dict[str, Any] = {"type": kind, "name": short}
        if ns != enclosing_ns:
            out["namespace"] = ns
        for key in ("doc", "aliases"):
            if key in node:
                out[key] = node[key]
        if kind in ("record", "error"):
            out["fields"] = _canonical_fields(node.get("fields", []), ns, node["name"])
        elif kind == "enum":
            out["symbols"] = node["symbols"]
            if "default" in node:
                out["default"] = node["default"]
        else:
            out["size"] = node["size"]
        return {**out, **_sorted(extra)}
    if kind == "array":
        return {"type": "array", "items": _canonical(node["items"], enclosing_ns), **_sorted(extra)}
    if kind == "map":
        return {"type": "map", "values": _canonical(node["values"], enclosing_ns), **_sorted(extra)}
    # {"type": <union, reference or nested schema>} wraps another schema.
    if extra:
        raise invalid_schema(f"unsupported attributes {sorted(extra)} around type {kind!r}")
    return _canonical(kind, enclosing_ns)


_KNOWN_KEYS = {
    "record": ("type", "name", "doc", "aliases", "fields"),
    "error": ("type", "name", "doc", "aliases", "fields"),
    "enum": ("type", "name", "doc", "aliases", "symbols", "default"),
    "fixed": ("type", "name", "doc", "aliases", "size"),
    "array": ("type", "items"),
    "map": ("type", "values"),
}
_FIELD_KEYS = ("name", "type", "doc", "default", "order", "aliases")


def _canonical_fields(fields: list[dict], ns: str, record: str) -> list[dict]:
    seen: set[str] = set()
    out = []
    for f in fields:
        name = f["name"]
        if name in seen:  # fastavro accepts duplicates; Avro does not
            raise invalid_schema(f"record {record} has two fields named '{name}'")
        seen.add(name)
        item: dict[str, Any] = {"name": name, "type": _canonical(f["type"], ns)}
        for key in _FIELD_KEYS[2:]:
            if key in f:
                item[key] = f[key]
        item.update(_sorted({k: v for k, v in f.items() if k not in _FIELD_KEYS}))
        out.append(item)
    return out


def _sorted(d: dict) -> dict:
    return dict(sorted(d.items()))


# ---------------------------------------------------------------- compatibility checker


def check_compatibility(reader: AvroSchema, writer: AvroSchema) -> list[str]:
    """Why ``reader`` cannot read data written with ``writer``; empty list = it can.

    Implements the Avro specification's schema-resolution rules. Logical types are
    ignored, as Avro's own checker does: only the underlying types have to resolve.
    """
    checker = _Checker(reader.names, writer.names)
    checker.check(reader.tree, writer.tree, _root_path(reader.tree))
    return checker.problems


def _root_path(tree: Any) -> str:
    if isinstance(tree, dict) and tree.get("type") in NAMED_TYPES:
        return "/" + _split_name(tree["name"])[1]
    return "/"


def _describe(node: Any) -> str:
    """A short human name of a (resolved) schema node, for messages."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union[" + ", ".join(_describe(b) for b in node) + "]"
    kind = node["type"]
    if kind in NAMED_TYPES:
        return f"{kind} {node['name']}"
    if kind == "array":
        return f"array<{_describe(node['items'])}>"
    if kind == "map":
        return f"map<{_describe(node['values'])}>"
    return str(kind)


class _Checker:
    def __init__(self, reader_names: dict[str, Any], writer_names: dict[str, Any]):
        self.reader_names = reader_names
        self.writer_names = writer_names
        self.problems: list[str] = []
        # Pairs of named types being compared right now: a recursive type (a linked
        # list, a tree) meets itself again further down; assume compatible there.
        self._in_progress: set[tuple[str, str]] = set()

    def _resolve(self, node: Any, names: dict[str, Any]) -> Any:
        """Follow name references and drop attributes that do not affect resolution."""
        while True:
            if isinstance(node, str):
                if node in PRIMITIVES:
                    return node
                node = names[node]
                continue
            if isinstance(node, dict):
                kind = node["type"]
                if kind in PRIMITIVES:
                    return kind  # logicalType and other attributes do not change the encoding
                if not isinstance(kind, str) or kind not in NAMED_TYPES | {"array", "map"}:
                    node = kind  # {"type": <schema>} wrapper
                    continue
            return node

    def compatible(self, reader: Any, writer: Any) -> bool:
        """Like check(), but only answers; used to try union branches."""
        probe = _Checker(self.reader_names, self.writer_names)
        probe._in_progress = set(self._in_progress)
        probe.check(reader, writer, "")
        return not probe.problems

    def check(self, reader: Any, writer: Any, path: str) -> None:
        r = self._resolve(reader, self.reader_names)
        w = self._resolve(writer, self.writer_names)

        # Writer union: every branch the writer may have used must be readable.
        if isinstance(w, list):
            for branch in w:
                if isinstance(r, list):
                    if not any(self.compatible(rb, branch) for rb in r):
                        wb = self._resolve(branch, self.writer_names)
                        self.problems.append(
                            f"{path}: the writer's union branch '{_describe(wb)}' matches no branch "
                            f"of the reader's {_describe(self._resolved_union(r))}"
                        )
                else:
                    self.check(r, branch, path)
            return
        # Reader union, writer not: some reader branch must read the writer's type.
        if isinstance(r, list):
            if not any(self.compatible(rb, w) for rb in r):
                self.problems.append(
                    f"{path}: the writer's type '{_describe(w)}' matches no branch of the "
                    f"reader's {_describe(self._resolved_union(r))}"
                )
            return

        r_kind = r if isinstance(r, str) else r["type"]
        w_kind = w if isinstance(w, str) else w["type"]
        if r_kind in ("error",):
            r_kind = "record"
        if w_kind in ("error",):
            w_kind = "record"
        if r_kind != w_kind:
            if r_kind in PROMOTIONS.get(w_kind, ()):
                return
            self.problems.append(
                f"{path}: type mismatch, the writer's '{_describe(w)}' cannot be read as the reader's '{_describe(r)}'"
            )
            return
        if r_kind in PRIMITIVES:
            return
        if r_kind == "array":
            self.check(r["items"], w["items"], path + "/items")
        elif r_kind == "map":
            self.check(r["values"], w["values"], path + "/values")
        elif self._names_match(r, w, path):
            key = (r["name"], w["name"])
            if key in self._in_progress:
                return
            self._in_progress.add(key)
            try:
                if r_kind == "record":
                    self._check_record(r, w, path)
                elif r_kind == "enum":
                    self._check_enum(r, w, path)
                elif r_kind == "fixed" and r["size"] != w["size"]:
                    self.problems.append(
                        f"{path}: fixed {r['name']} has size {r['size']} in the reader "
                        f"but {w['size']} in the writer"
                    )
            finally:
                self._in_progress.discard(key)

    def _resolved_union(self, union: list) -> list:
        return [self._resolve(b, self.reader_names) for b in union]

    def _names_match(self, r: dict, w: dict, path: str) -> bool:
        # Like Avro Java: unqualified names compare equal, or the reader lists the
        # writer's name among its aliases.
        r_ns, r_short = _split_name(r["name"])
        w_short = _split_name(w["name"])[1]
        aliases = {a if "." in a or not r_ns else f"{r_ns}.{a}" for a in r.get("aliases", [])}
        if r_short == w_short or w["name"] in aliases or w_short in r.get("aliases", []):
            return True
        self.problems.append(
            f"{path}: name mismatch, the reader's {r['type']} is named '{r['name']}' "
            f"but the writer's is '{w['name']}'"
        )
        return False

    def _check_record(self, r: dict, w: dict, path: str) -> None:
        writer_fields = {f["name"]: f for f in w.get("fields", [])}
        for field in r.get("fields", []):
            name = field["name"]
            candidates = [name, *field.get("aliases", [])]
            match = next((writer_fields[c] for c in candidates if c in writer_fields), None)
            if match is None:
                if "default" not in field:
                    self.problems.append(
                        f"{path}/{name}: the reader's field '{name}' has no default value "
                        f"and is missing from the writer's schema"
                    )
                continue
            self.check(field["type"], match["type"], f"{path}/{name}")
        # Fields only the writer has are skipped by the reader: always fine.

    def _check_enum(self, r: dict, w: dict, path: str) -> None:
        if "default" in r:  # unknown writer symbols resolve to the reader's default
            return
        missing = [s for s in w["symbols"] if s not in set(r["symbols"])]
        if missing:
            self.problems.append(
                f"{path}: the writer's enum {w['name']} has symbols {missing} that the reader's "
                f"enum lacks (and the reader has no default symbol)"
            )


def compatibility_problems(
    level: str, new: AvroSchema, existing: list[tuple[int, AvroSchema]]
) -> list[str]:
    """Why ``new`` may not follow ``existing`` (oldest first) under ``level``.

    BACKWARD: the new schema can read data written with the previous one (consumers
    upgrade first). FORWARD: the previous schema can read data written with the new
    one (producers upgrade first). FULL: both. ``*_TRANSITIVE`` checks every earlier
    version instead of the latest only.
    """
    if level == NONE or not existing:
        return []
    targets = existing if level.endswith("_TRANSITIVE") else existing[-1:]
    backward = level.startswith(("BACKWARD", "FULL"))
    forward = level.startswith(("FORWARD", "FULL"))
    problems = []
    for version, old in reversed(targets):
        if backward:
            for p in check_compatibility(reader=new, writer=old):
                problems.append(f"{level}: the new schema cannot read data written with version {version}: {p}")
        if forward:
            for p in check_compatibility(reader=old, writer=new):
                problems.append(f"{level}: version {version} cannot read data written with the new schema: {p}")
    return problems


# ------------------------------------------------------------------------------ state


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


@dataclass
class SubjectVersion:
    subject: str
    version: int
    schema_id: int
    deleted: bool = False


def parse_version(spec: object) -> int | None:
    """'latest' / -1 -> None (meaning the latest); a positive int -> itself; else 42202."""
    text = str(spec).strip()
    if text == "latest" or text == "-1":
        return None
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1 or number > 2**31 - 1:
        raise RegistryError(
            422,
            INVALID_VERSION,
            f"The specified version '{spec}' is not a valid version id. Allowed values are "
            "between [1, 2^31-1] and the string \"latest\"",
        )
    return number


class RegistryState:
    """Everything the registry knows: the fold of every record applied so far."""

    def __init__(self) -> None:
        self._schemas: dict[int, AvroSchema] = {}  # id -> schema; ids are never reused
        self._ids: dict[str, int] = {}  # canonical text -> id
        self._subjects: dict[str, dict[int, SubjectVersion]] = {}  # subject -> version -> entry
        self._global_level = DEFAULT_COMPATIBILITY
        self._subject_levels: dict[str, str] = {}

    # ------------------------------------------------------------------ folding
    def apply(self, record: dict) -> None:
        """Fold one log record into the state (unknown record types are ignored).

        Raises ValueError for a malformed record, leaving the state unchanged.
        """
        try:
            self._apply(record)
        except (KeyError, TypeError, ValueError, RegistryError) as exc:
            raise ValueError(f"malformed {record.get('type')} record {record!r}: {exc!r}") from None

    def _apply(self, record: dict) -> None:
        kind = record.get("type")
        if kind == "SCHEMA":
            # Read and check every field before changing anything.
            subject, version, schema_id = _text(record["subject"]), int(record["version"]), int(record["id"])
            schema = self._schemas.get(schema_id) or parse_avro(record["schema"])
            self._schemas[schema_id] = schema
            self._ids.setdefault(schema.canonical, schema_id)
            self._subjects.setdefault(subject, {})[version] = SubjectVersion(subject, version, schema_id)
        elif kind == "DELETE_VERSION":
            versions = self._subjects.get(record["subject"], {})
            version = int(record["version"])
            if version in versions:
                if record.get("permanent"):
                    del versions[version]
                else:
                    versions[version].deleted = True
            if not versions:
                self._subjects.pop(record["subject"], None)
        elif kind == "DELETE_SUBJECT":
            subject = record["subject"]
            if record.get("permanent"):
                self._subjects.pop(subject, None)
            else:
                for entry in self._subjects.get(subject, {}).values():
                    entry.deleted = True
            # Like Confluent: deleting a subject also drops its compatibility override.
            self._subject_levels.pop(subject, None)
        elif kind == "CONFIG":
            subject, level = record.get("subject"), record.get("compatibility")
            if level is not None and level not in COMPATIBILITY_LEVELS:
                raise ValueError(f"unknown compatibility level {level!r}")
            if subject is None:
                self._global_level = level or DEFAULT_COMPATIBILITY
            elif level is None:
                self._subject_levels.pop(subject, None)
            else:
                self._subject_levels[subject] = level

    def apply_all(self, records: Iterable[dict]) -> list[str]:
        """Fold many records; a malformed one is skipped (one bad record in the log must
        not make every schema unavailable). Returns why each skipped record was skipped."""
        skipped = []
        for record in records:
            try:
                self.apply(record)
            except ValueError as exc:
                skipped.append(str(exc))
        return skipped

    # ------------------------------------------------------------------ queries
    def schema_count(self) -> int:
        """Distinct schemas still referenced by a subject version (soft-deleted included)."""
        return len(self._referenced_ids())

    def _referenced_ids(self) -> set[int]:
        return {e.schema_id for versions in self._subjects.values() for e in versions.values()}

    def subjects(self, deleted: bool = False, deleted_only: bool = False, prefix: str = "") -> list[str]:
        out = []
        for subject, versions in self._subjects.items():
            if not subject.startswith(prefix):
                continue
            live = any(not e.deleted for e in versions.values())
            if deleted_only:
                if not live:
                    out.append(subject)
            elif live or deleted:
                out.append(subject)
        return sorted(out)

    def _entries(self, subject: str, deleted: bool = False) -> list[SubjectVersion]:
        """Versions of a subject, oldest first; 40401 if none is visible."""
        entries = [e for e in self._subjects.get(subject, {}).values() if deleted or not e.deleted]
        if not entries:
            raise subject_not_found(subject)
        return sorted(entries, key=lambda e: e.version)

    def versions(self, subject: str, deleted: bool = False, deleted_only: bool = False) -> list[int]:
        entries = self._entries(subject, deleted=deleted or deleted_only)
        if deleted_only:
            return [e.version for e in entries if e.deleted]
        return [e.version for e in entries]

    def get_version(self, subject: str, spec: object, deleted: bool = False) -> SubjectVersion:
        """A subject version by number, or 'latest' / -1; deleted=True sees soft-deleted ones."""
        number = parse_version(spec)
        entries = self._entries(subject, deleted=deleted)
        if number is None:
            return entries[-1]
        for entry in entries:
            if entry.version == number:
                return entry
        raise version_not_found(subject, number)

    def schema_of(self, entry: SubjectVersion) -> AvroSchema:
        return self._schemas[entry.schema_id]

    def schema(self, schema_id: int) -> AvroSchema:
        """The schema with this id; 40403 once no subject version refers to it any more."""
        if schema_id in self._schemas and schema_id in self._referenced_ids():
            return self._schemas[schema_id]
        raise schema_not_found(f"Schema {schema_id} not found")

    def usages(self, schema_id: int, deleted: bool = False) -> list[SubjectVersion]:
        """Subject versions that use a schema id (40403 if it is unknown)."""
        self.schema(schema_id)
        found = [
            e
            for versions in self._subjects.values()
            for e in versions.values()
            if e.schema_id == schema_id and (deleted or not e.deleted)
        ]
        return sorted(found, key=lambda e: (e.subject, e.version))

    def lookup(
        self, subject: str, text: str, deleted: bool = False, schema_type: str | None = None,
        references: list | None = None,
    ) -> SubjectVersion:
        """The version of ``subject`` holding this schema (40401 / 40403 if none)."""
        schema = self._validated(text, schema_type, references)
        entries = self._entries(subject, deleted=deleted)
        for entry in reversed(entries):  # newest first, like Confluent
            if self._schemas[entry.schema_id].canonical == schema.canonical:
                return entry
        raise schema_not_found(f"Schema not found under subject '{subject}'")

    def global_compatibility(self) -> str:
        return self._global_level

    def subject_compatibility(self, subject: str) -> str | None:
        return self._subject_levels.get(subject)

    def effective_compatibility(self, subject: str) -> str:
        return self._subject_levels.get(subject, self._global_level)

    # ------------------------------------------------------------------ planning
    def plan_register(
        self, subject: str, text: str, schema_type: str | None = None, references: list | None = None
    ) -> tuple[int, dict | None]:
        """Validate a registration: (schema id, record to append or None if already there).

        Registering a schema the subject already holds (as a live version) is a no-op
        returning its id, so producers may register on every start.
        """
        schema = self._validated(text, schema_type, references)
        live = [e for e in self._subjects.get(subject, {}).values() if not e.deleted]
        live.sort(key=lambda e: e.version)
        for entry in live:
            if self._schemas[entry.schema_id].canonical == schema.canonical:
                return entry.schema_id, None
        level = self.effective_compatibility(subject)
        problems = compatibility_problems(
            level, schema, [(e.version, self._schemas[e.schema_id]) for e in live]
        )
        if problems:
            raise RegistryError(
                409,
                INCOMPATIBLE_SCHEMA,
                f"Schema being registered is incompatible with an earlier schema for subject "
                f"'{subject}' (compatibility {level}), details: " + "; ".join(problems),
            )
        schema_id = self._ids.get(schema.canonical)
        if schema_id is None:
            schema_id = max(self._schemas, default=0) + 1
        version = max(self._subjects.get(subject, {}), default=0) + 1
        record = {"type": "SCHEMA", "subject": subject, "version": version, "id": schema_id, "schema": schema.canonical}
        return schema_id, record

    def test_compatibility(
        self, subject: str, text: str, spec: object | None, schema_type: str | None = None,
        references: list | None = None,
    ) -> list[str]:
        """Problems registering ``text`` would meet: against one version (``spec``) with the
        subject's level (made non-transitive), or against all it applies to (spec None)."""
        schema = self._validated(text, schema_type, references)
        level = self.effective_compatibility(subject)
        live = [e for e in self._subjects.get(subject, {}).values() if not e.deleted]
        live.sort(key=lambda e: e.version)
        if spec is None:
            existing = [(e.version, self._schemas[e.schema_id]) for e in live]
            return compatibility_problems(level, schema, existing)
        number = parse_version(spec)
        if number is None:
            existing = live[-1:]  # no version yet: anything is compatible
        else:
            entry = self.get_version(subject, number)
            existing = [entry]
        level = level.replace("_TRANSITIVE", "")
        return compatibility_problems(level, schema, [(e.version, self._schemas[e.schema_id]) for e in existing])

    def _validated(self, text: str, schema_type: str | None, references: list | None) -> AvroSchema:
        if schema_type not in (None, "", "AVRO"):
            raise invalid_schema(f"schema type {schema_type!r} is not supported (only AVRO)")
        if references:
            raise invalid_schema("schema references are not supported by this registry")
        return parse_avro(text)

    def plan_delete_version(self, subject: str, spec: object, permanent: bool) -> tuple[int, dict]:
        """(deleted version number, record). A hard delete needs a soft delete first."""
        number = parse_version(spec)
        all_entries = self._entries(subject, deleted=True)
        if number is None:
            live = [e for e in all_entries if not e.deleted]
            if not live:
                raise subject_not_found(subject)
            entry = live[-1]
        else:
            entry = next((e for e in all_entries if e.version == number), None)
            if entry is None:
                raise version_not_found(subject, number)
        if permanent and not entry.deleted:
            raise RegistryError(
                404, VERSION_NOT_SOFT_DELETED,
                f"Subject '{subject}' Version {entry.version} was not deleted first before being permanently deleted",
            )
        if not permanent and entry.deleted:
            raise RegistryError(
                404, VERSION_SOFT_DELETED,
                f"Subject '{subject}' Version {entry.version} was soft deleted. "
                "Set permanent=true to delete permanently",
            )
        record = {"type": "DELETE_VERSION", "subject": subject, "version": entry.version, "permanent": permanent}
        return entry.version, record

    def plan_delete_subject(self, subject: str, permanent: bool) -> tuple[list[int], dict]:
        """(deleted version numbers, record). A hard delete needs a soft delete first."""
        entries = self._entries(subject, deleted=True)
        live = [e.version for e in entries if not e.deleted]
        if permanent and live:
            raise RegistryError(
                404, SUBJECT_NOT_SOFT_DELETED,
                f"Subject '{subject}' was not deleted first before being permanently deleted",
            )
        if not permanent and not live:
            raise RegistryError(
                404, SUBJECT_SOFT_DELETED,
                f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
            )
        deleted = [e.version for e in entries] if permanent else live
        return deleted, {"type": "DELETE_SUBJECT", "subject": subject, "permanent": permanent}

    def plan_set_compatibility(self, subject: str | None, level: object) -> tuple[str, dict]:
        if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
            raise RegistryError(
                422, INVALID_COMPATIBILITY_LEVEL,
                f"Invalid compatibility level {level!r}. Valid values are: {', '.join(COMPATIBILITY_LEVELS)}",
            )
        level = level.upper()
        return level, {"type": "CONFIG", "subject": subject, "compatibility": level}

    def plan_delete_compatibility(self, subject: str | None) -> tuple[str, dict]:
        """(previous level, record) resetting a subject to the global level, or the global
        level to the default."""
        if subject is None:
            return self._global_level, {"type": "CONFIG", "subject": None, "compatibility": None}
        old = self._subject_levels.get(subject)
        if old is None:
            raise RegistryError(
                404, SUBJECT_LEVEL_COMPATIBILITY_NOT_CONFIGURED,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return old, {"type": "CONFIG", "subject": subject, "compatibility": None}
