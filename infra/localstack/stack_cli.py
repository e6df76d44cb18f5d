"""``ecoretrofit stack up|down|status`` (and ``supervise``, which ``up`` starts in the
background: it restarts a component that dies)."""

from __future__ import annotations

import signal
import threading

from ecoretrofit.config import Settings
from infra.localstack.stack import LocalStack


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "supervise"],
                        help="supervise: restart components that die, until SIGTERM (started by up)")
    parser.add_argument("--prometheus", action="store_true", help="also start Prometheus with the alert rules")


def run(args, settings: Settings) -> int:
    stack = LocalStack(settings, with_prometheus=args.prometheus)
    if args.action == "up":
        print(f"starting the local stack in {stack.data_dir} (127.0.0.1, ECO_PORT_BASE={settings.port_base})")
        stack.up()
        print_endpoints(settings)
        return 0
    if args.action == "supervise":
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stack = LocalStack(settings, with_prometheus=args.prometheus, log=lambda line: print(line, flush=True))
        stack.supervise(stop)
        return 0
    if args.action == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    rows = stack.status()
    for name, pid, healthy in rows:
        state = "healthy" if healthy else ("UNHEALTHY" if pid else "stopped")
        print(f"{name:<10} {state:<10} {'pid ' + str(pid) if pid else ''}")
    restarts = {name: s["restarts"] for name, s in stack.supervisor_state().items() if s.get("restarts")}
    supervisor = stack.pid_of("supervisor")
    print(f"{'supervisor':<10} {'running' if supervisor else 'stopped':<10} {'pid ' + str(supervisor) if supervisor else ''}"
          + (f"  restarts: {', '.join(f'{n} {k}' for n, k in restarts.items())}" if restarts else ""))
    print_endpoints(settings)
    return 0 if all(h for _, _, h in rows) else 1


def print_endpoints(settings: Settings) -> None:
    print(f"  kafka      {settings.kafka_bootstrap}")
    print(f"  registry   {settings.schema_registry_url}")
    print(f"  warehouse  {settings.clickhouse_url}  (ClickHouse HTTP; user {settings.clickhouse_user}, "
          f"password in {settings.credentials_file})")
    print(f"  s3         {settings.s3_endpoint}")
    print(f"  mqtt       mqtts://{settings.mqtt_host}:{settings.mqtt_port}  (devices: ecoretrofit devices add; "
          f"bridge: ecoretrofit gateway bridge; CA {settings.data_dir / 'tls' / 'ca.pem'})")
