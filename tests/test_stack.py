"""The local stack's supervisor: clear one-line errors, and nothing left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from ecoretrofit.config import Settings
from ecoretrofit.errors import CommandError
from infra.localstack.stack import Component, LocalStack, _alive


@pytest.fixture
def local(tmp_path):
    stack = LocalStack(Settings.from_env({"ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": "31000"}), log=lambda _: None)
    stack._prepare_dirs()
    return stack


def test_a_component_that_dies_at_start_up_is_reported_with_its_log(local):
    comp = Component("crasher", [sys.executable, "-c", "import sys; print('boom: no config'); sys.exit(3)"],
                     ports=[], healthy=lambda: False, start_timeout=10)
    with pytest.raises(CommandError, match=r"crasher exited with code 3 at start-up: boom: no config"):
        local._start(comp)
    assert local._pid("crasher") is None


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
        local._start(comp)
    assert not _alive(seen["pid"]), "an unhealthy component must not be left running"
    assert not (local.run_dir / "sleeper.pid").exists()


def test_stop_uses_the_components_signal_and_escalates(local):
    # ignores SIGTERM like Tansu does: must be stopped with its own signal (SIGINT)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    comp = Component("stubborn", [sys.executable, "-c", code], ports=[], healthy=lambda: True,
                     stop_signal=signal.SIGINT, stop_timeout=5)
    local._start(comp)
    pid = local._pid("stubborn")
    assert pid and _alive(pid)
    assert local._stop(comp)
    assert not _alive(pid)


def test_a_taken_port_is_a_one_line_error_from_the_cli(tmp_path):
    env = {**os.environ, "ECO_DATA_DIR": str(tmp_path), "ECO_PORT_BASE": "31500"}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 31500 + 333))  # the S3 port
        busy.listen()
        proc = subprocess.run([sys.executable, "-m", "ecoretrofit.cli", "stack", "up"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    errors = proc.stderr.strip().splitlines()
    assert errors == ["ecoretrofit stack: s3: port 31833 on 127.0.0.1 is already in use "
                      "(another stack? set ECO_PORT_BASE to move every port)"]
    status = subprocess.run([sys.executable, "-m", "ecoretrofit.cli", "stack", "status"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "s3         stopped" in status.stdout
