"""Shared fixtures. The integration tests run against the real local stack, started
once per test session on its own ports and data directory, and stopped at the end."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from ecoretrofit import processes
from ecoretrofit.config import Settings
from infra.localstack.stack import LocalStack
from helpers import TEST_REGIONS

REPO = Path(__file__).resolve().parent.parent


def pytest_generate_tests(metafunc):
    # ECO_TEST_REPEAT=N runs every collected test N times in one session (one stack):
    # how the failure rates of restart races in docs/delivery.md were measured.
    repeat = int(os.environ.get("ECO_TEST_REPEAT", "0") or 0)
    if repeat > 1:
        metafunc.fixturenames.append("_repeat")
        metafunc.parametrize("_repeat", range(repeat))


def pytest_collection_modifyitems(items):
    # Tests that use the stack are integration tests, whether marked or not.
    for item in items:
        if {"stack_settings", "stack", "processor"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("eco-stack")
    env = {
        "ECO_DATA_DIR": str(data),
        "ECO_PORT_BASE": os.environ.get("ECO_TEST_PORT_BASE", "25000"),
        # keep checkpoints frequent so restart tests do not wait long
        "ECO_CHECKPOINT_INTERVAL_S": "2",
        # a pool of regions for tests (helpers.fresh_region), accepted but never simulated
        "ECO_EXTRA_REGIONS": ",".join(TEST_REGIONS),
    }
    settings = Settings.from_env(env)
    local = LocalStack(settings, with_prometheus=True, log=lambda line: print(line, file=sys.stderr))
    try:
        local.up()
    except Exception:
        local.down()
        raise
    yield local
    local.down()


@pytest.fixture(scope="session")
def stack_settings(stack) -> Settings:
    return stack.settings


def spawn(settings: Settings, *args: str, log_name: str) -> processes.Proc:
    """Start an ``ecoretrofit`` subcommand against the test stack."""
    return processes.start_cli(settings, log_name, args, cwd=settings.data_dir)


def stop(proc: processes.Proc, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Stop it with ``sig`` (SIGKILL after ``timeout``); its exit code."""
    return proc.stop(sig, timeout)


@pytest.fixture(scope="session")
def processor(stack_settings):
    """One Faust worker for the whole session."""
    proc = spawn(stack_settings, "process", log_name="processor")
    time.sleep(1.0)
    assert proc.running(), "processor exited at start-up; see its log in the stack data dir"
    yield proc
    stop(proc)
