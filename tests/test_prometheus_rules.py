"""The Prometheus rules load (`promtool check rules`) and behave as their unit tests
say (`promtool test rules`), and they name only metrics that ecoretrofit/metrics.py
defines."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ecoretrofit import metrics
from infra import prometheus_config

REPO = Path(__file__).resolve().parent.parent
PROM_DIR = REPO / "infra" / "prometheus"
RULES = sorted(PROM_DIR.glob("*.rules.yml"))
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.test.yml"))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: it comes with Debian's `prometheus` package, "
            "which `make setup` installs (apt-get install prometheus)",
            pytrace=False,
        )
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def test_rule_files_exist_and_are_what_the_local_stack_loads():
    assert RULES, f"no *.rules.yml in {PROM_DIR}"
    assert RULE_TESTS, f"no promtool unit tests in {PROM_DIR / 'tests'}"
    assert sorted(p.resolve() for p in prometheus_config.rule_files()) == [p.resolve() for p in RULES]


def test_promtool_check_rules():
    proc = run("check", "rules", *map(str, RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests():
    proc = run("test", "rules", *map(str, RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _rules():
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def test_every_alert_is_labelled_annotated_and_unit_tested():
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                tested.add((check["alertname"], bool(check.get("exp_alerts"))))
    alerts = [r for r in _rules() if "alert" in r]
    assert alerts
    for rule in alerts:
        name = rule["alert"]
        assert rule["labels"].get("severity") in ("warning", "critical"), name
        assert rule["labels"].get("page") in ("true", "false"), name
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), name
        assert (name, True) in tested, f"{name}: no unit test shows it firing"
        assert (name, False) in tested, f"{name}: no unit test shows it staying silent"


def test_rules_use_only_metrics_defined_in_ecoretrofit_metrics():
    from prometheus_client import REGISTRY

    assert metrics.READINGS_PRODUCED  # importing ecoretrofit.metrics registers every metric
    # every series name the registry can expose (counters as *_total, histograms as
    # *_bucket/_sum/_count ...); private but stable in prometheus-client 0.x
    defined = set(REGISTRY._names_to_collectors) | {"up"}  # noqa: SLF001
    recorded = {r["record"] for r in _rules() if "record" in r}
    used = set()
    for rule in _rules():
        expr = re.sub(r'"[^"]*"', '""', rule["expr"])  # label values are not metric names
        used.update(re.findall(r"\b(eco[a-zA-Z0-9_:]*|up)\b", expr))
    unknown = used - defined - recorded
    assert not unknown, f"rules use metrics that ecoretrofit/metrics.py does not define: {sorted(unknown)}"
    assert {"eco_anomalies_total", "eco_homes_in_alert", "eco_dead_letters_total"} <= used
