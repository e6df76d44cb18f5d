"""`ecoretrofit topics`: the contract is generated from the code, and docs/topics.md is
exactly what it generates (regenerate: ecoretrofit topics --format markdown --output docs/topics.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

import schemas
from ecoretrofit import topics
from ecoretrofit.config import Settings
from infra.localstack.stack import topic_specs

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "topics.md"
REGENERATE = "ecoretrofit topics --format markdown --output docs/topics.md"


def run_cli(tmp_path, *argv: str, settings: Settings | None = None) -> str:
    parser = argparse.ArgumentParser()
    topics.add_arguments(parser)
    out = tmp_path / "out.txt"
    args = parser.parse_args([*argv, "--output", str(out)])
    assert topics.run(args, settings or Settings()) == 0
    return out.read_text()


def test_committed_doc_is_what_the_command_generates(tmp_path):
    generated = run_cli(tmp_path, "--format", "markdown")
    assert DOC.exists(), f"docs/topics.md is missing: {REGENERATE}"
    assert DOC.read_text() == generated, f"docs/topics.md is stale: {REGENERATE}"


def test_every_topic_the_platform_owns_is_described():
    s = Settings()
    described = {c.name for c in topics.contracts(s)}
    expected = set(topic_specs(s))
    if topics.alert_schema() is None:
        expected.discard(s.topic_alerts)  # no schema yet: nothing to promise
    assert described == expected
    for c in topics.contracts(s):
        assert c.partitions == topic_specs(s)[c.name]


def test_every_schema_field_with_type_and_doc_is_in_both_formats(tmp_path):
    text = run_cli(tmp_path, "--format", "text")
    markdown = run_cli(tmp_path, "--format", "markdown")
    for name in (schemas.TELEMETRY_READING, schemas.ANOMALY_EVENT):
        for field in schemas.schema_dict(name)["fields"]:
            assert f"`{field['name']}`" in markdown
            assert f" {field['name']} " in text
            if field.get("doc"):
                assert field["doc"] in text
                assert field["doc"].replace("|", "\\|") in markdown
    assert "long (timestamp-millis)" in text and "double or null" in text
    for needle in ("BACKWARD", "event_id", "At-least-once", "murmur2", "source_offset", "cleanup.policy"):
        assert needle in text and needle in markdown, needle


def test_settings_drive_names_and_partitions(tmp_path):
    s = Settings(topic_anomalies="team.anomalies.v9", anomalies_partitions=12)
    text = run_cli(tmp_path, settings=s)
    assert "team.anomalies.v9: anomaly events" in text
    assert "team.anomalies.v9-value" in text
    section = text.split("team.anomalies.v9: anomaly events", 1)[1]
    assert "partitions:    12" in section.split("\n\n", 1)[0]


def test_alerts_topic_appears_once_it_has_a_schema(monkeypatch, tmp_path):
    s = Settings()
    assert topics.alert_schema() is None or s.topic_alerts in run_cli(tmp_path, settings=s)
    monkeypatch.setattr(topics, "alert_schema", lambda: schemas.ANOMALY_EVENT)
    assert f"{s.topic_alerts}: alerts" in run_cli(tmp_path, settings=s)


def test_type_rendering():
    assert topics.type_name(["null", "double"]) == "double or null"
    assert topics.type_name({"type": "long", "logicalType": "timestamp-millis"}) == "long (timestamp-millis)"
    assert topics.type_name({"type": "array", "items": "string"}) == "array of string"
    assert topics.type_name({"type": "enum", "name": "Sev", "symbols": ["a", "b"]}) == "enum Sev (a, b)"
    assert topics.type_name(["null", "string", "long"]) == "null or string or long"
