"""The local stack's supervisor: clear one-line errors, nothing left running, and a
component that dies comes back, later each time it keeps dying."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError
from ecoretrofit.processes import alive
from helpers import wait_for
from infra.localstack.stack import Component, LocalStack


@pytest.fixture
def local(tmp_path):
    stack = LocalStack(Settings.from_env({"ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": "31000"}), log=lambda _: None)
    stack._prepare_dirs()
    return stack


def test_a_component_that_dies_at_start_up_is_reported_with_its_log(local):
    comp = Component("crasher", [sys.executable, "-c", "import sys; print('boom: no config'); sys.exit(3)"],
                     ports=[], healthy=lambda: False, start_timeout=10)
    with pytest.raises(CommandError, match=r"crasher exited with code 3 at start-up: boom: no config"):
        local.start_component(comp)
    assert local.pid_of("crasher") is None


def test_a_component_that_never_gets_healthy_is_stopped(local):
    seen = {}

    def healthy() -> bool:  # remembers the pid the supervisor wrote, then says no
        pidfile = local.run_dir / "sleeper.pid"
        if pidfile.exists():
            seen["pid"] = int(pidfile.read_text())
        return False

    comp = Component("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                     ports=[], healthy=healthy, start_timeout=1.5, stop_timeout=5)
    with pytest.raises(CommandError, match=r"sleeper failed its health check within 2s"):
        local.start_component(comp)
    assert not alive(seen["pid"]), "an unhealthy component must not be left running"
    assert not (local.run_dir / "sleeper.pid").exists()


def test_stop_uses_the_components_signal_and_escalates(local):
    # ignores SIGTERM like Tansu does: must be stopped with its own signal (SIGINT)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    comp = Component("stubborn", [sys.executable, "-c", code], ports=[], healthy=lambda: True,
                     stop_signal=signal.SIGINT, stop_timeout=5)
    local.start_component(comp)
    pid = local.pid_of("stubborn")
    assert pid and alive(pid)
    assert local.stop_component(comp)
    assert not alive(pid)


def _free_port_base() -> int:
    """A port base none of whose stack ports is in use now (parallel stacks of other test
    sessions hold theirs), so the only taken port is the one the test takes."""
    from ecoretrofit.config import PORT_OFFSETS

    for base in range(32000, 60000, 1000):
        ports = [base + o for o in PORT_OFFSETS.values()] + [base + PORT_OFFSETS["metrics"] + i for i in range(20)]  # consecutive metrics ports
        try:
            for port in ports:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no free port range for a stack on this machine")


def test_a_taken_port_is_a_one_line_error_from_the_cli(tmp_path):
    base = _free_port_base()
    s3_port = Settings.from_env({"ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": str(base)}).port("s3")
    env = {**os.environ, "ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": str(base)}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", s3_port))
        busy.listen()
        proc = subprocess.run([sys.executable, "-m", "ecoretrofit.cli", "stack", "up"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    errors = proc.stderr.strip().splitlines()
    assert errors == [f"ecoretrofit stack: s3: port {s3_port} on 127.0.0.1 is already in use "
                      "(another stack? set ECO_PORT_BASE to move every port)"]
    status = subprocess.run([sys.executable, "-m", "ecoretrofit.cli", "stack", "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "s3         stopped" in status.stdout


def _supervised_sleeper(tmp_path, **env: str):
    """A long-sleeping component, started, under ``supervise`` on a thread:
    (stack, component, stop event, thread)."""
    settings = Settings.from_env({"ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": "31000", **env})
    local = LocalStack(settings, log=lambda _: None)
    local._prepare_dirs()
    comp = Component("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], ports=[],
                     healthy=lambda: True, stop_timeout=5)
    local.start_component(comp)
    local.components_for_stop = lambda: [comp]
    stop = threading.Event()
    thread = threading.Thread(target=local.supervise, args=(stop, 0.05), daemon=True)
    thread.start()
    return local, comp, stop, thread


def test_a_component_killed_with_sigkill_is_restarted_with_growing_backoff(tmp_path):
    local, comp, stop, thread = _supervised_sleeper(tmp_path, ECO_RESTART_BACKOFF_S="0.3",
                                                    ECO_RESTART_BACKOFF_MAX_S="5")
    seen = []
    try:
        for crash in range(3):
            pid = local.pid_of("sleeper")
            assert pid, f"sleeper not running before crash {crash + 1}"
            os.kill(pid, signal.SIGKILL)
            t0 = time.monotonic()
            wait_for(lambda: (local.pid_of("sleeper") or pid) != pid, 30, 0.05, what=f"restart {crash + 1}")
            seen.append(time.monotonic() - t0)
        state = wait_for(lambda: local.supervisor_state()["sleeper"]["restarts"] == 3 and local.supervisor_state(),
                         10, 0.05, what="three restarts recorded")["sleeper"]
        assert state["delays_s"] == [0.3, 0.6, 1.2], state  # doubling: crashes in a row
        assert seen[0] >= 0.3 and seen[2] >= 1.2 and seen[2] > seen[0], seen
    finally:
        stop.set()
        thread.join(10)
        local.stop_component(comp)
    assert not thread.is_alive()
    assert local.pid_of("sleeper") is None


def test_a_component_stopped_on_purpose_is_not_restarted(tmp_path):
    local, comp, stop, thread = _supervised_sleeper(tmp_path, ECO_RESTART_BACKOFF_S="0.1")
    try:
        assert local.stop_component(comp)
        time.sleep(1.0)  # ten back-offs' worth
        assert local.pid_of("sleeper") is None
        assert local.supervisor_state() == {}
    finally:
        stop.set()
        thread.join(10)


def test_a_real_component_killed_with_sigkill_comes_back(stack):
    """The session stack runs its supervisor: the registry, SIGKILLed, is restarted
    and serves again (its schemas replayed from its topic)."""
    from ecoretrofit.processes import http_ok

    assert stack.pid_of("supervisor"), "stack up must start the supervisor"
    before = stack.pid_of("registry")
    subjects = f"{stack.settings.schema_registry_url}/subjects"
    assert before and http_ok(subjects)
    os.kill(before, signal.SIGKILL)
    wait_for(lambda: (stack.pid_of("registry") or before) != before and http_ok(subjects), 60, 0.2,
             what="the registry restarted by the supervisor")
    wait_for(lambda: stack.supervisor_state().get("registry", {}).get("restarts", 0) >= 1, 30, 0.2,
             what="the restart in the supervisor's state")


def test_up_stops_what_it_started_when_a_later_component_fails(tmp_path):
    settings = Settings.from_env({"ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": "31000"})
    local = LocalStack(settings, log=lambda _: None)
    first = Component("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], ports=[],
                      healthy=lambda: True, stop_timeout=5)
    second = Component("crasher", [sys.executable, "-c", "import sys; sys.exit(3)"], ports=[],
                       healthy=lambda: False, start_timeout=10)
    seen = {}
    local.components = lambda: [first, second]
    local.start_supervisor = lambda: pytest.fail("no supervisor for a stack that did not come up")
    original = local._start_locked

    def start(comp):
        original(comp)
        seen[comp.name] = local.pid_of(comp.name)

    local._start_locked = start
    with pytest.raises(CommandError, match="crasher exited with code 3"):
        local.up()
    assert seen["sleeper"] and not alive(seen["sleeper"]), "the component started before the failure was left running"
    assert local.pid_of("sleeper") is None


def test_settings_make_a_relative_data_directory_absolute(tmp_path, monkeypatch):
    """Children get ECO_DATA_DIR and some run inside the data directory: a relative one
    would point elsewhere there."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"ECO_DATA_DIR": "rel-data", "ECO_PORT_BASE": "31000"})
    assert settings.data_dir == tmp_path / "rel-data"
    assert settings.env()["ECO_DATA_DIR"] == str(tmp_path / "rel-data")


def test_the_whole_stack_comes_up_with_a_relative_data_directory(tmp_path):
    """As `make demo` runs it: ECO_DATA_DIR relative to the current directory (the default
    is `.eco-data`). Mosquitto, which runs inside the data directory, once failed to find
    its password file there."""
    base = _free_port_base()
    env = {**os.environ, "ECO_DATA_DIR": "rel-data", "ECO_PORT_BASE": str(base)}

    def cli(*args, timeout=240):
        return subprocess.run([sys.executable, "-m", "ecoretrofit.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=timeout)

    try:
        up = cli("stack", "up")
        assert up.returncode == 0, up.stderr[-2000:]
        status = cli("stack", "status", timeout=60)
        assert status.returncode == 0, status.stdout
        assert "mqtt" in status.stdout and "stopped" not in status.stdout
        assert not (tmp_path / "rel-data" / "rel-data").exists()  # nothing nested inside itself
    finally:
        down = cli("stack", "down")
    assert down.returncode == 0, down.stderr[-2000:]


def _processes_with_data_dir(data_dir) -> list[int]:
    """PIDs of the live processes whose environment names ``data_dir`` (everything a
    command started inherits its ECO_DATA_DIR)."""
    needle = f"ECO_DATA_DIR={data_dir}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:  # gone meanwhile, or not ours to read
                continue
    return pids


def test_sigterm_to_a_bench_stops_the_stack_and_workers_it_started(tmp_path):
    """CI's timeout or a `kill` ends a bench as Ctrl-C does: the stack it brought up and
    the workers it started stop too (SIGTERM used to end the bench alone and leave them
    all running). The signal lands while the workers warm up, before the load."""
    data = tmp_path / "bench-data"
    env = {**os.environ, "ECO_DATA_DIR": str(data), "ECO_PORT_BASE": str(_free_port_base())}
    with open(tmp_path / "bench.log", "wb") as log:
        bench = subprocess.Popen([sys.executable, "-m", "ecoretrofit.cli", "bench", "--only", "live",
                                  "--live-homes", "50", "--live-duration", "120"],
                                 env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: (data / "logs" / "bench-worker-1.log").exists() or bench.poll() is not None, 240,
                 what="the bench's workers")
        assert bench.poll() is None, (tmp_path / "bench.log").read_text()[-2000:]
        started = _processes_with_data_dir(data)
        assert len(started) >= 8, started  # the stack's servers and the two workers
        bench.send_signal(signal.SIGTERM)
        code = bench.wait(180)
        wait_for(lambda: not _processes_with_data_dir(data), 30, 1, what="nothing the bench started left running")
    finally:
        for pid in _processes_with_data_dir(data) + ([bench.pid] if bench.poll() is None else []):
            os.kill(pid, signal.SIGKILL)
    assert code == 130, (tmp_path / "bench.log").read_text()[-2000:]
