"""Starting, health-waiting and stopping subprocesses: the one place that does it.

The local stack's supervisor, the demo, the benchmarks, the fault evaluation and the
tests all start their processes here, so every process

- runs in its own session (a Ctrl-C in the terminal reaches only the caller, which
  then stops its children in order) with its output appended to a log file;
- is waited for until its health check passes, and fails fast, quoting the end of its
  log, when it exits during start-up;
- is stopped by signalling its whole process group with the signal it honours (Tansu
  ignores SIGTERM and needs SIGINT), escalating to SIGKILL after a timeout.

``Proc`` holds a started process; ``stop_pid`` stops one known only by its PID (the
supervisor's PID files outlive the command that started it).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ecoretrofit.errors import CommandError

KILL_WAIT_S = 5.0


@dataclass
class Proc:
    """A started subprocess, its log and how it wants to be stopped."""

    name: str
    popen: subprocess.Popen
    log_path: Path | None
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    _log_file: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait_healthy(self, healthy: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
        """Block until ``healthy()``; returns the seconds it took. Raises CommandError
        (and stops the process) if it exits or stays unhealthy for ``timeout``."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.popen.poll() is not None:
                self.close_log()
                raise CommandError(
                    f"{self.name} exited with code {self.popen.returncode} at start-up: {tail(self.log_path)}")
            if healthy():
                return time.monotonic() - t0
            time.sleep(interval)
        self.stop()
        raise CommandError(f"{self.name} failed its health check within {timeout:.0f}s: {tail(self.log_path)}")

    def stop(self, sig: int | None = None, timeout: float | None = None) -> int | None:
        """Stop the process group (its own signal, then SIGKILL); returns the exit code."""
        if self.popen.poll() is None:
            signal_group(self.popen.pid, self.stop_signal if sig is None else sig)
            try:
                self.popen.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                signal_group(self.popen.pid, signal.SIGKILL)
                try:
                    self.popen.wait(KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
        self.close_log()
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL at once (fault-injection tests)."""
        return self.stop(signal.SIGKILL, KILL_WAIT_S)

    def close_log(self) -> None:
        """Close our copy of the log file (the process keeps writing to its own)."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "Proc":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path | None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
    stop_timeout: float = 20.0,
    capture: bool = False,
) -> Proc:
    """Start ``argv`` in its own session, output appended to ``log_path`` (``None``:
    inherited; ``capture``: text pipes in ``popen.stdout``/``popen.stderr``),
    environment = ours + ``env``."""
    log_file = None
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "ab")
    if log_file is not None:
        out, err = log_file, subprocess.STDOUT
    elif capture:
        out, err = subprocess.PIPE, subprocess.PIPE
    else:
        out, err = None, None
    try:
        popen = subprocess.Popen(
            list(argv), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
            cwd=cwd, start_new_session=True, text=capture or None,
        )
    except BaseException:
        if log_file is not None:
            log_file.close()
        raise
    return Proc(name, popen, Path(log_path) if log_path else None, stop_signal, stop_timeout, log_file)


def cli_argv(*args: str) -> list[str]:
    """``ecoretrofit <args>`` with this interpreter (no dependence on PATH)."""
    return [sys.executable, "-m", "ecoretrofit.cli", *args]


def start_cli(settings, name: str, args: Sequence[str], log_path: Path | None = None,
              env: Mapping[str, str] | None = None, **kw) -> Proc:
    """Start ``ecoretrofit <args>`` with ``settings`` (as ECO_* variables) plus ``env``;
    log in ``DATA_DIR/logs/<name>.log`` unless given."""
    if log_path is None:
        log_path = settings.data_dir / "logs" / f"{name}.log"
    return start(name, cli_argv(*args), log_path, env={**settings.env(), **(env or {})}, **kw)


# ------------------------------------------------------------------ by PID
def alive(pid: int) -> bool:
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


def signal_group(pid: int, sig: int) -> None:
    """Signal the process's whole group (it may have children), or just it."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Stop a process known by PID: ``sig`` to its group, SIGKILL after ``timeout``."""
    signal_group(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.1)
    if alive(pid):
        signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)


# ------------------------------------------------------------ health, ports
def http_ok(url: str, timeout: float = 1.0, accept: tuple[int, ...] = (200,)) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status in accept
    except urllib.error.HTTPError as exc:
        return exc.code in accept
    except (OSError, ValueError):
        return False


def scrape(port: int, name: str, host: str = "127.0.0.1") -> float:
    """Sum of a metric over its labels from a /metrics endpoint (0 if unreachable)."""
    return scrape_many(port, (name,), host)[name]


def scrape_many(port: int, names: Sequence[str], host: str = "127.0.0.1") -> dict[str, float]:
    """``scrape`` of several metrics from one read of the endpoint (one snapshot, and
    one request: rendering /metrics costs the scraped process time)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return dict.fromkeys(names, 0.0)
    return {name: sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))
            for name in names}


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path | None, lines: int = 3) -> str:
    if path is None:
        return "(no log)"
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
