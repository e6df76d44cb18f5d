"""Prometheus configuration for the local stack, generated from Settings so the
scrape targets always match the ports the services really use."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ecoretrofit import metrics
from ecoretrofit.config import Settings


def scrape_targets(settings: Settings) -> dict[str, list[str]]:
    host = "127.0.0.1"
    return {
        "simulator": [f"{host}:{metrics.port_for(settings, 'simulate')}"],
        "processor": [f"{host}:{metrics.port_for(settings, 'process', i)}" for i in range(4)],
        "sink": [f"{host}:{metrics.port_for(settings, 'sink')}"],
        "telemetry-sink": [f"{host}:{metrics.port_for(settings, 'telemetry_sink')}"],
        "demo": [f"{host}:{metrics.port_for(settings, 'demo')}"],
        "consumers": [f"{host}:{metrics.port_for(settings, 'consumers')}"],
        "lake-ingest": [f"{host}:{metrics.port_for(settings, 'lake_ingest')}"],
        "maintain": [f"{host}:{metrics.port_for(settings, 'maintain')}"],
        "registry": [f"{host}:{settings.port('registry')}"],
        "warehouse": [f"{host}:{settings.port('warehouse')}"],
    }


def rule_files() -> list[Path]:
    folder = resources.files("infra").joinpath("prometheus")
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".rules.yml"))


def render(settings: Settings, interval: str = "1s") -> str:
    lines = [
        "global:",
        f"  scrape_interval: {interval}",
        f"  evaluation_interval: {interval}",
        "rule_files:",
    ]
    lines += [f"  - {p}" for p in rule_files()] or ["  []"]
    lines.append("scrape_configs:")
    for job, targets in scrape_targets(settings).items():
        lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: [{', '.join(repr(t) for t in targets)}]"]
    return "\n".join(lines) + "\n"


def write(settings: Settings, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    path.write_text(render(settings))
    return path
