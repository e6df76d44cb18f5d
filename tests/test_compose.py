"""Offline checks of the docker-compose cluster (no Docker engine needed).

infra/docker-compose.yml is validated against the compose-spec schema that
check-jsonschema vendors, then cross-checked against everything it must agree with:
the ECO_* settings the services read (derived from the Settings dataclass, so a new
endpoint setting cannot be forgotten), infra/.env.example, the Prometheus scrape
config and rule files, and Grafana's provisioning and dashboards.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from ecoretrofit import metrics
from ecoretrofit.config import Settings

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
PROM_CONFIG = INFRA / "prometheus" / "prometheus.compose.yml"
GRAFANA = INFRA / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"

# The endpoint and identity settings every one of our services needs in a cluster,
# whatever the dataclass says (the derivation below adds to these, never removes).
FLOOR = {
    "ECO_KAFKA_BOOTSTRAP", "ECO_SCHEMA_REGISTRY_URL", "ECO_CLICKHOUSE_URL",
    "ECO_CLICKHOUSE_USER", "ECO_CLICKHOUSE_PASSWORD", "ECO_CLICKHOUSE_DATABASE",
    "ECO_S3_ENDPOINT", "ECO_S3_ACCESS_KEY", "ECO_S3_SECRET_KEY",
    "ECO_CLICKHOUSE_KAFKA_BOOTSTRAP", "ECO_CLICKHOUSE_SCHEMA_REGISTRY_URL",
    "ECO_BIND_HOST", "ECO_METRICS_PORT",
}


# --------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # SafeLoader resolves `<<:` merge keys


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def our_services(services) -> dict:
    """Services running our image (built from infra/Dockerfile)."""
    ours = {
        name: svc for name, svc in services.items()
        if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile", "").endswith("infra/Dockerfile")
    }
    assert {"simulate", "process", "warehouse-init"} <= set(ours), sorted(ours)
    return ours


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


_VAR = re.compile(r"(?<!\$)\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def referenced_vars(node: object) -> set[str]:
    """Every ${VAR} / ${VAR:-x} / ${VAR:?x} / $VAR interpolated in the values of a parsed
    YAML document ($$ escapes; comments are not interpolated, so they are not seen)."""
    if isinstance(node, dict):
        return set().union(*(referenced_vars(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(referenced_vars(v) for v in node)) if node else set()
    if isinstance(node, str):
        return {m.group("braced") or m.group("bare") for m in _VAR.finditer(node.replace("$$", ""))}
    return set()


def interpolate(value: object, env: dict[str, str]) -> str:
    """Compose's interpolation, enough for this file: ${V}, ${V:-default}, ${V:?error}."""

    def sub(m: re.Match) -> str:
        name = m.group("braced") or m.group("bare")
        if name in env and env[name] != "":
            return env[name]
        if m.group("op") in (":-", "-"):
            return m.group("arg")
        raise AssertionError(f"${{{name}}} is not set in infra/.env.example")

    return _VAR.sub(sub, str(value)).replace("$$", "$")


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# Settings whose empty default means "feature off", in a cluster as locally: without a
# language model `ecoretrofit explain` runs its deterministic analysis.
OPTIONAL = {"ECO_LLM_PROVIDER", "ECO_LLM_URL", "ECO_LLM_MODEL", "ECO_LLM_API_KEY"}


def cluster_required_vars(floor: set[str] = FLOOR) -> set[str]:
    """ECO_* settings with no usable default in a cluster: empty or zero (derived from
    the local stack's ports), loopback addresses, and relative paths."""
    required = set(floor)
    for f in dataclasses.fields(Settings):
        if f.name == "extra" or f.default is dataclasses.MISSING or "ECO_" + f.name.upper() in OPTIONAL:
            continue
        d = f.default
        unusable = (
            d == "" if isinstance(d, str) else False
        ) or (
            type(d) in (int, float) and d == 0
        ) or (
            isinstance(d, str) and d.startswith(("127.", "localhost", "::1"))
        ) or (
            isinstance(d, Path) and not d.is_absolute()
        )
        if unusable:
            required.add("ECO_" + f.name.upper())
    return required


def settings_fields() -> set[str]:
    return {"ECO_" + f.name.upper() for f in dataclasses.fields(Settings) if f.name != "extra"}


def host_path(service: dict, container_path: str) -> Path | None:
    """The host path a service's bind mount puts at ``container_path`` (or under it)."""
    best = None
    for volume in service.get("volumes", []):
        source, target = (volume.split(":")[:2] if isinstance(volume, str) else (volume["source"], volume["target"]))
        if not source.startswith((".", "/")):
            continue  # a named volume
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    if best is None:
        return None
    source, target = best
    return (INFRA / source).resolve() / container_path[len(target):].lstrip("/")


# ---------------------------------------------------------------- the schema
def compose_schema() -> dict:
    # check-jsonschema's own copy of the compose-spec schema, read as a file: importing
    # check_jsonschema imports its CLI, which does not load with the click that
    # faust-streaming pins (<8.4); the schema is all this test needs.
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec is not None, "check-jsonschema is not installed: make setup installs the test extra"
    root = Path(list(spec.submodule_search_locations)[0])
    return json.loads((root / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())


def schema_errors(document: dict) -> list[str]:
    schema = compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_spec(compose):
    errors = schema_errors(compose)
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_typos(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["process"]["depends_on"]["warehouse-init"]["condition"] = "service_complete"
    broken["services"]["kafka"]["restrat"] = "always"
    errors = schema_errors(broken)
    assert any("process" in e for e in errors) and any("kafka" in e for e in errors), errors


# ------------------------------------------------------------------- images
def test_every_image_is_pinned(services):
    for name, svc in services.items():
        image = svc.get("image")
        assert image or svc.get("build"), f"{name}: neither image nor build"
        if not image:
            continue
        if "@sha256:" in image:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: image {image!r} has no tag"
        assert tag and tag != "latest", f"{name}: image {image!r} is not pinned"


def test_dockerfile_pins_python_and_installs_the_project():
    text = (INFRA / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms and all(f == "python:3.11-slim" for f in froms), froms
    assert re.search(r"pip install[^\n]*\s\.\s*$", text, flags=re.M), "the Dockerfile must pip install the project"
    ignore = (INFRA / "Dockerfile.dockerignore").read_text().split()
    assert "infra/.env" in ignore and ".git" in ignore


# ------------------------------------------------------------ ECO_* settings
def test_required_vars_are_derived_from_settings():
    required = cluster_required_vars()
    assert required <= settings_fields(), f"not Settings fields: {required - settings_fields()}"
    # the derivation finds the endpoints by itself, not only because FLOOR lists them
    derived = cluster_required_vars(floor=set())
    for name in ("ECO_KAFKA_BOOTSTRAP", "ECO_SCHEMA_REGISTRY_URL", "ECO_CLICKHOUSE_URL", "ECO_S3_ENDPOINT",
                 "ECO_S3_SECRET_KEY", "ECO_CLICKHOUSE_PASSWORD", "ECO_CLICKHOUSE_KAFKA_BOOTSTRAP",
                 "ECO_BIND_HOST", "ECO_METRICS_PORT", "ECO_DATA_DIR"):
        assert name in derived, name


def test_our_services_set_every_setting_a_cluster_needs(our_services):
    required = cluster_required_vars()
    for name, svc in our_services.items():
        env = environment(svc)
        missing = sorted(v for v in required if not env.get(v))
        assert not missing, f"{name}: {missing} not set"
        unknown = sorted(k for k in env if k.startswith("ECO_") and k not in settings_fields())
        assert not unknown, f"{name}: {unknown} are not Settings fields (typo?)"


def test_settings_resolve_to_compose_services(services, our_services):
    example = env_example()
    for name, svc in our_services.items():
        env = {k: interpolate(v, example) for k, v in environment(svc).items()}
        settings = Settings.from_env(env)
        # secrets come from .env, never from the local stack's generated credentials
        assert settings.clickhouse_password == example["ECO_CLICKHOUSE_PASSWORD"]
        assert settings.s3_secret_key == example["ECO_S3_SECRET_KEY"]
        for field in ("kafka_bootstrap", "clickhouse_kafka_bootstrap"):
            host = getattr(settings, field).split(":")[0]
            assert host in services, f"{name}: {field} points at {host!r}, not a compose service"
        for field in ("schema_registry_url", "clickhouse_url", "s3_endpoint", "clickhouse_schema_registry_url"):
            host = urlsplit(getattr(settings, field)).hostname
            assert host in services, f"{name}: {field} points at {host!r}, not a compose service"
        assert settings.bind_host == "0.0.0.0", f"{name}: /metrics must listen beyond loopback"


def test_every_interpolated_variable_is_in_env_example():
    used = referenced_vars(yaml.safe_load(COMPOSE_FILE.read_text()))
    example = env_example()
    missing = sorted(used - set(example))
    assert not missing, f"used in docker-compose.yml but not in infra/.env.example: {missing}"
    assert {"ECO_CLICKHOUSE_PASSWORD", "ECO_S3_ACCESS_KEY", "ECO_S3_SECRET_KEY"} <= used


def test_secrets_are_not_committed():
    for key, value in env_example().items():
        if any(word in key for word in ("PASSWORD", "SECRET", "ACCESS_KEY")):
            assert value.startswith("change-me"), f".env.example: {key} must be a placeholder"
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=REPO)
    assert ignored.returncode == 0, "infra/.env must be git-ignored"
    tracked = subprocess.run(["git", "ls-files", "infra/.env"], cwd=REPO, capture_output=True, text=True)
    assert tracked.stdout.strip() == "", "infra/.env is committed"
    # no literal secret in the compose file: every secret-looking value is interpolated
    for name, svc in yaml.safe_load(COMPOSE_FILE.read_text())["services"].items():
        for key, value in environment(svc).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "ACCESS_KEY")):
                assert value.startswith("${"), f"{name}: {key} is a literal, not from .env"


# -------------------------------------------------------- ordering and health
def test_start_up_order_is_enforced(services):
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions, not a list"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy, but it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} is a one-shot job: restart must be no"
            else:
                pytest.fail(f"{name} -> {dep}: condition {condition!r} does not wait for anything")
    for name, svc in services.items():
        if svc.get("restart", "no") != "no":
            assert "healthcheck" in svc, f"{name} is long-running but has no healthcheck"
    init = services["warehouse-init"]
    assert set(init["depends_on"]) >= {"kafka", "schema-registry", "clickhouse", "s3"}
    assert init["entrypoint"][-1] == "infra.init_cli" and importlib.util.find_spec("infra.init_cli")
    for name in ("simulate", "process"):
        assert services[name]["depends_on"]["warehouse-init"]["condition"] == "service_completed_successfully"


def test_published_ports_are_bound_to_loopback(services):
    for name, svc in services.items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:  # "HOST_IP:HOST_PORT:CONTAINER_PORT"; shorter forms bind every interface
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name}: port {port!r} must be published on 127.0.0.1 only"


def test_the_object_stores_master_answers_no_admin_request_as_in_the_local_stack(services):
    """SeaweedFS's master HTTP admin API (/col/delete) is closed by a white list that
    matches no one; it must run apart from the volume server, which the list would
    otherwise close to the S3 gateway's uploads (tests/test_access.py, run locally)."""
    from infra.localstack.stack import NO_LOCAL_CLIENT

    master, store = services["s3-master"], services["s3"]
    assert master["command"][0] == "master" and f"-whiteList={NO_LOCAL_CLIENT}" in master["command"]
    assert "ports" not in master, "the master's admin API must not be published"
    assert "-master=false" in store["command"][-1] and "-master.peers=s3-master:9333" in store["command"][-1]
    assert store["depends_on"]["s3-master"]["condition"] == "service_healthy"
    # the master signs the volume server's write tokens: same keys on both
    keys = {k: v for k, v in store["environment"].items() if k.startswith("WEED_JWT_SIGNING")}
    assert keys and {k: master["environment"].get(k) for k in keys} == keys


def test_bind_mounts_exist(services):
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source} does not exist"


def test_metrics_ports_agree_with_healthchecks_and_scrape_config(services, our_services):
    example = env_example()
    prom = yaml.safe_load(PROM_CONFIG.read_text())
    ports = {}
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                ports[target.split(":")[0]] = int(target.split(":")[1])
        for sd in job.get("dns_sd_configs", []):
            for host in sd["names"]:
                ports[host] = int(sd["port"])
    for service, role in (("simulate", "simulate"), ("process", "process"), ("consumers", "consumers"),
                          ("lake-ingest", "lake_ingest")):
        env = {k: interpolate(v, example) for k, v in environment(our_services[service]).items()}
        port = metrics.port_for(Settings.from_env(env), role)
        assert ports.get(service) == port, f"Prometheus scrapes {service} on {ports.get(service)}, it serves {port}"
        assert f":{port}/metrics" in " ".join(services[service]["healthcheck"]["test"])


# ------------------------------------------------------------------ Prometheus
def test_prometheus_scrapes_compose_services(services):
    prom = yaml.safe_load(PROM_CONFIG.read_text())
    jobs = {job["job_name"] for job in prom["scrape_configs"]}
    assert {"simulator", "processor", "warehouse"} <= jobs
    for job in prom["scrape_configs"]:
        hosts = [t.rsplit(":", 1)[0] for sc in job.get("static_configs", []) for t in sc["targets"]]
        hosts += [n for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        assert hosts, f"job {job['job_name']} has no target"
        for host in hosts:
            assert host in services, f"job {job['job_name']} scrapes {host!r}, which is not a compose service"


def test_prometheus_mounts_its_config_and_every_rule_file(services):
    svc = services["prometheus"]
    config_arg = next(a for a in svc["command"] if a.startswith("--config.file="))
    assert host_path(svc, config_arg.split("=", 1)[1]) == PROM_CONFIG.resolve()
    prom = yaml.safe_load(PROM_CONFIG.read_text())
    found = []
    for pattern in prom["rule_files"]:
        local = host_path(svc, pattern)
        assert local is not None, f"rule file {pattern} is not mounted into the prometheus service"
        matches = sorted(local.parent.glob(local.name))
        assert matches, f"rule file {pattern} -> {local}: nothing there"
        found += matches
    assert sorted(p.resolve() for p in (INFRA / "prometheus").glob("*.rules.yml")) == sorted(found)


# --------------------------------------------------------------------- Grafana
def provisioned_datasources() -> list[dict]:
    out = []
    for path in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        out += yaml.safe_load(path.read_text()).get("datasources", [])
    return out


def test_provisioning_files_are_well_formed():
    files = sorted(PROVISIONING.rglob("*.y*ml"))
    assert {p.parent.name for p in files} >= {"datasources", "dashboards"}
    for path in files:
        doc = yaml.safe_load(path.read_text())
        assert isinstance(doc, dict) and doc.get("apiVersion") == 1, path
    sources = provisioned_datasources()
    assert len({d["uid"] for d in sources}) == len(sources), "duplicate datasource uid"
    for ds in sources:
        assert {"name", "uid", "type"} <= set(ds), ds
    assert {d["type"] for d in sources} >= {"prometheus", "grafana-clickhouse-datasource"}


def test_grafana_service_matches_its_provisioning(services):
    svc = services["grafana"]
    env = environment(svc)
    # the ClickHouse datasource needs its plugin
    plugins = env.get("GF_INSTALL_PLUGINS", "")
    for ds in provisioned_datasources():
        if ds["type"] not in ("prometheus", "loki", "tempo", "alertmanager"):
            assert ds["type"] in plugins, f"datasource type {ds['type']} is not in GF_INSTALL_PLUGINS"
            assert re.search(re.escape(ds["type"]) + r" \d+\.\d+\.\d+", plugins), "pin the plugin version"
    # every $VAR Grafana expands in provisioning is in its environment
    for path in PROVISIONING.rglob("*.y*ml"):
        for var in referenced_vars(path.read_text()):
            assert var in env, f"{path.name} uses ${var}, not set in the grafana service"
    # the dashboards provider reads where the dashboards are mounted
    provider_paths = [
        p["options"]["path"]
        for path in (PROVISIONING / "dashboards").glob("*.y*ml")
        for p in yaml.safe_load(path.read_text())["providers"]
    ]
    for container_path in provider_paths:
        assert host_path(svc, container_path) == DASHBOARDS.resolve()
    assert host_path(svc, "/etc/grafana/provisioning") == PROVISIONING.resolve()
    # datasource URLs/hosts name compose services
    for ds in provisioned_datasources():
        host = urlsplit(ds["url"]).hostname if ds.get("url") else ds.get("jsonData", {}).get("host")
        assert host in services, f"datasource {ds['name']} points at {host!r}"


def _panels(dashboard: dict):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def _datasource_uids(node) -> set[str]:
    uids = set()
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            uids.add(ds["uid"])
        elif isinstance(ds, str):
            uids.add(ds)
        for value in node.values():
            uids |= _datasource_uids(value)
    elif isinstance(node, list):
        for value in node:
            uids |= _datasource_uids(value)
    return uids


def test_dashboards_parse_and_use_provisioned_datasources():
    known = {d["uid"] for d in provisioned_datasources()}
    files = sorted(DASHBOARDS.glob("*.json"))
    assert DASHBOARDS / "city-heartbeat.json" in files
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard.get("uid") and dashboard.get("title"), path.name
        panels = list(_panels(dashboard))
        assert panels, f"{path.name}: no panels"
        assert len({p["id"] for p in panels}) == len(panels), f"{path.name}: duplicate panel ids"
        for panel in panels:
            if panel.get("type") == "row":
                continue
            uids = _datasource_uids(panel)
            assert uids, f"{path.name}: panel {panel.get('title')!r} names no datasource"
            assert uids <= known, f"{path.name}: panel {panel.get('title')!r} uses {uids - known}"
            assert panel.get("targets"), f"{path.name}: panel {panel.get('title')!r} has no query"
        assert _datasource_uids(dashboard.get("templating", {})) <= known


def test_city_heartbeat_covers_the_brief():
    dashboard = json.loads((DASHBOARDS / "city-heartbeat.json").read_text())
    text = json.dumps(dashboard)
    for needle in ("readings_produced", "anomalies", "homes_in_alert", "energy_kwh"):
        assert needle in text, needle
    clickhouse = [p for p in _panels(dashboard) if "eco-clickhouse" in _datasource_uids(p)]
    assert any("energy_kwh" in t.get("rawSql", "") for p in clickhouse for t in p["targets"])


def test_dashboard_queries_use_defined_metrics():
    from prometheus_client import REGISTRY

    defined = set(REGISTRY._names_to_collectors) | {"ALERTS", "up"}  # noqa: SLF001
    for path in (INFRA / "prometheus").glob("*.rules.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            defined |= {r["record"] for r in group["rules"] if "record" in r}
    for path in DASHBOARDS.glob("*.json"):
        dashboard = json.loads(path.read_text())
        exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if "expr" in t]
        exprs += [v.get("definition", "") for v in dashboard.get("templating", {}).get("list", [])]
        for expr in exprs:
            expr = re.sub(r'"[^"]*"', '""', expr)
            for name in re.findall(r"\b(eco[a-zA-Z0-9_:]*|ALERTS)\b", expr):
                assert name in defined, f"{path.name}: {name} is neither a metric nor a recording rule"


def test_topic_facts_in_compose_come_from_their_declarations(services, our_services):
    """Our services take topic names and partitions from schemas/topics.py (through the
    Settings defaults): compose must not restate them, and the Confluent registry's own
    topic and default compatibility must be the declared ones."""
    from schemas.topics import BACKWARD, SCHEMAS

    for name, svc in our_services.items():
        restated = sorted(k for k in environment(svc) if k.startswith("ECO_TOPIC_") or k.endswith("_PARTITIONS"))
        assert not restated, f"{name} restates topic facts declared in schemas/topics.py: {restated}"
    registry = environment(services["schema-registry"])
    assert registry["SCHEMA_REGISTRY_KAFKASTORE_TOPIC"] == SCHEMAS.name
    assert registry["SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL"].upper() == BACKWARD


# ------------------------------------------------------- the ClickHouse cluster
# ClickHouse's native (TCP) port in the server image's own config: remote_servers and
# Distributed tables speak it. infra/clickhouse/ does not move it.
CLICKHOUSE_NATIVE_PORT = 9000


def clickhouse_servers(services) -> dict:
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("clickhouse/clickhouse-server:")}


def mounted_xml(service: dict, container_path: str):
    """The parsed XML file a service mounts at ``container_path`` (None if none)."""
    import xml.etree.ElementTree as ET

    path = host_path(service, container_path)
    return ET.parse(path).getroot() if path is not None and path.is_file() else None


def server_configs(service: dict) -> dict[str, object]:
    """config.d file name -> parsed XML, for every file a ClickHouse service mounts there."""
    out = {}
    for volume in service.get("volumes", []):
        target = volume.split(":")[1] if isinstance(volume, str) else volume["target"]
        if target.startswith("/etc/clickhouse-server/config.d/"):
            out[Path(target).name] = mounted_xml(service, target)
    return out


def test_clickhouse_cluster_hosts_are_its_shards(services, our_services):
    servers = clickhouse_servers(services)
    assert len(servers) >= 2, f"a sharded warehouse needs two ClickHouse services, found {sorted(servers)}"
    example = env_example()
    cluster_names = {interpolate(environment(svc)["ECO_CLICKHOUSE_CLUSTER"], example) for svc in our_services.values()}
    assert len(cluster_names) == 1, f"our services disagree on the cluster: {cluster_names}"
    (cluster,) = cluster_names
    seen = {}
    for name, svc in servers.items():
        configs = server_configs(svc)
        assert None not in configs.values(), f"{name}: a mounted config.d file does not exist or is not XML"
        clusters = [c.find(f"remote_servers/{cluster}") for c in configs.values() if c.find("remote_servers") is not None]
        assert len(clusters) == 1 and clusters[0] is not None, f"{name}: no remote_servers/{cluster} in its config.d"
        shards = [[(r.findtext("host"), int(r.findtext("port"))) for r in shard.findall("replica")]
                  for shard in clusters[0].findall("shard")]
        seen[name] = shards
    # every ClickHouse service has the same cluster, and it is exactly these services
    assert len({json.dumps(s) for s in seen.values()}) == 1, seen
    shards = next(iter(seen.values()))
    hosts = [host for shard in shards for host, _ in shard]
    assert sorted(hosts) == sorted(servers), f"remote_servers hosts {hosts} vs ClickHouse services {sorted(servers)}"
    assert all(port == CLICKHOUSE_NATIVE_PORT for shard in shards for _, port in shard)
    for name in servers:
        assert services[name].get("hostname", name) == name, f"{name}: hostname must be the service name"


def test_clickhouse_macros_are_unique_and_match_the_cluster(services):
    servers = clickhouse_servers(services)
    macros, positions = {}, {}
    for name, svc in servers.items():
        found = [c.find("macros") for c in server_configs(svc).values() if c.find("macros") is not None]
        assert len(found) == 1, f"{name}: needs exactly one <macros> in its config.d, has {len(found)}"
        macros[name] = {m.tag: m.text for m in found[0]}
        remote = next(c.find("remote_servers") for c in server_configs(svc).values() if c.find("remote_servers") is not None)
        for cluster in remote:
            for n, shard in enumerate(cluster.findall("shard"), start=1):
                for replica in shard.findall("replica"):
                    positions[(cluster.tag, replica.findtext("host"))] = str(n)
    pairs = [(m.get("shard"), m.get("replica")) for m in macros.values()]
    assert all(s and r for s, r in pairs), macros
    assert len(set(pairs)) == len(pairs), f"two ClickHouse services share shard and replica macros: {macros}"
    assert len({r for _, r in pairs}) == len(pairs), f"replica macros must be unique: {macros}"
    for name, m in macros.items():
        assert m["replica"] == name, f"{name}: replica macro {m['replica']!r}"
        assert positions[(m["cluster"], name)] == m["shard"], f"{name}: shard macro {m['shard']} is not its place in {m['cluster']}"


def test_clickhouse_keeper_is_where_the_shards_look_for_it(services):
    keepers = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("clickhouse/clickhouse-keeper:")}
    assert len(keepers) == 1, sorted(keepers)
    (keeper_name, keeper), = keepers.items()
    server_version = {s["image"].split(":")[1] for s in clickhouse_servers(services).values()}
    assert server_version == {keeper["image"].split(":")[1]}, "Keeper and servers should be one ClickHouse version"
    config = mounted_xml(keeper, "/etc/clickhouse-keeper/keeper_config.xml")
    assert config is not None, "the keeper service must mount infra/clickhouse/keeper.xml as its config"
    ks = config.find("keeper_server")
    port = int(ks.findtext("tcp_port"))
    raft = ks.findall("raft_configuration/server")
    assert [s.findtext("id") for s in raft].count(ks.findtext("server_id")) == 1
    for server in raft:
        assert server.findtext("hostname") in services, f"raft member {server.findtext('hostname')} is not a service"
    ready = ks.find("http_control")
    assert f"http://127.0.0.1:{ready.findtext('port')}{ready.findtext('readiness/endpoint')}" in keeper["healthcheck"]["test"]
    for name, svc in clickhouse_servers(services).items():
        nodes = [(c.findtext("zookeeper/node/host"), c.findtext("zookeeper/node/port"))
                 for c in server_configs(svc).values() if c.find("zookeeper") is not None]
        assert nodes == [(keeper_name, str(port))], f"{name}: Keeper at {nodes}, the service is {keeper_name}:{port}"
        assert any(c.find("distributed_ddl/path") is not None for c in server_configs(svc).values()), name
        assert svc["depends_on"][keeper_name]["condition"] == "service_healthy"
        # the shards' cluster credentials come from the server's own environment
        for c in server_configs(svc).values():
            for element in c.iter():
                if "from_env" in element.attrib:
                    assert element.attrib["from_env"] in environment(svc), f"{name}: {element.attrib['from_env']} unset"


def test_warehouse_init_waits_for_every_shard(services):
    init = services["warehouse-init"]["depends_on"]
    for name in clickhouse_servers(services):
        assert init.get(name, {}).get("condition") == "service_healthy", f"ON CLUSTER DDL needs {name} up"
    prom = yaml.safe_load(PROM_CONFIG.read_text())
    warehouse = next(j for j in prom["scrape_configs"] if j["job_name"] == "warehouse")
    scraped = {t.split(":")[0] for sc in warehouse["static_configs"] for t in sc["targets"]}
    assert scraped == set(clickhouse_servers(services)), "Prometheus should scrape every shard"
