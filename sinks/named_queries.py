"""Named queries: ``sinks/queries/NAME.sql`` files that document themselves.

A named query's leading ``--`` comments are its documentation: the first paragraph is
its summary, and the lines after a ``-- Parameters`` line declare its parameters, one a
line, ``--   name  Type  default  meaning`` (a default with spaces in quotes, ``''``
for the empty string). Parameters are ClickHouse query parameters (``{home_id:String}``),
bound by the server; ``{database}`` is the warehouse database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError

QUERIES_DIR = Path(__file__).resolve().parent / "queries"
QUERY_NAME = re.compile(r"[A-Za-z_][\w-]*")
# "--   name  Type  default  meaning" in a named query's header; Type has no blanks
# (DateTime64(3) is fine); default is one word or a quoted string.
_PARAM_LINE = re.compile(r"--\s+(?P<name>[A-Za-z_]\w*)\s+(?P<type>\S+)\s+(?P<default>'(?:[^'\\]|\\.)*'|\S+)\s*(?P<help>.*)")

def resolve_sql(text: str, settings: Settings, queries_dir: Path | None = None) -> str:
    """SQL for a command-line argument: a named query's file, or the text itself.

    A single word is taken as a name: no useful SQL statement is one word long.
    """
    if not QUERY_NAME.fullmatch(text):
        return text
    return load_named(text, queries_dir).sql(settings)


@dataclass(frozen=True)
class QueryParam:
    name: str
    type: str
    default: str
    help: str


@dataclass(frozen=True)
class NamedQuery:
    """A file ``sinks/queries/NAME.sql`` with what its header declares."""

    name: str
    path: Path
    summary: str
    params: tuple[QueryParam, ...]

    def sql(self, settings: Settings) -> str:
        return self.path.read_text().replace("{database}", settings.clickhouse_database).strip().rstrip(";")

    def bind(self, given: dict[str, str]) -> dict[str, str]:
        """The declared parameters' defaults, overridden by ``given``. A query that
        declares nothing takes whatever it is given."""
        if not self.params:
            return dict(given)
        known = {p.name: p.default for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise CommandError(f"query {self.name!r} has no parameter {', '.join(unknown)} "
                               f"(it has: {', '.join(known)})")
        return {**known, **given}


def load_named(name: str, queries_dir: Path | None = None) -> NamedQuery:
    queries_dir = queries_dir or QUERIES_DIR
    path = queries_dir / f"{name}.sql"
    if not QUERY_NAME.fullmatch(name) or not path.is_file():
        known = ", ".join(sorted(p.stem for p in queries_dir.glob("*.sql"))) or "none yet"
        raise CommandError(f"no named query {name!r} in {queries_dir} (known: {known})")
    summary, params = parse_header(path.read_text())
    return NamedQuery(name, path, summary, tuple(params))


def parse_header(text: str) -> tuple[str, list[QueryParam]]:
    """(summary, declared parameters) from a named query's leading ``--`` comments;
    the summary is their first paragraph."""
    summary, params, in_params, in_summary = [], [], False, True
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("--"):
            if line:
                break  # the header ends at the first line of SQL
            continue
        body = line[2:].strip()
        if in_summary:
            if body:
                summary.append(body)
            elif summary:
                in_summary = False
        elif re.match(r"parameters\b", body, re.I):
            in_params = True
        elif in_params:
            m = _PARAM_LINE.fullmatch(line)
            if not m:
                in_params = False
                continue
            default = m["default"]
            if default.startswith("'"):
                default = re.sub(r"\\(.)", r"\1", default[1:-1])
            params.append(QueryParam(m["name"], m["type"], default, m["help"].strip()))
    return " ".join(summary), params


def describe_queries(names: list[str] | None = None, queries_dir: Path | None = None) -> str:
    """The ``--list`` text: each named query, its summary and its parameters."""
    queries_dir = queries_dir or QUERIES_DIR
    names = names or sorted(p.stem for p in queries_dir.glob("*.sql"))
    blocks = []
    for name in names:
        q = load_named(name, queries_dir)
        summary = q.summary[len(q.name) + 1:].strip() if q.summary.startswith(q.name + ":") else q.summary
        lines = [f"{q.name}: {summary}"]
        if q.params:
            shown = [(p.name, p.type, repr(p.default) if p.default == "" or " " in p.default else p.default)
                     for p in q.params]
            w = [max(len(s[i]) for s in shown) for i in range(3)]
            lines += [f"    --param {n:<{w[0]}}  {ty:<{w[1]}}  default {d:<{w[2]}}  {p.help}".rstrip()
                      for (n, ty, d), p in zip(shown, q.params)]
        else:
            lines.append("    (no declared parameters)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) if blocks else f"no named queries in {queries_dir}"
