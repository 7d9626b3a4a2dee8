"""Flower's processes on this machine: their environment, a SuperLink on loopback, and
stopping them in bounded time (used by :mod:`flip.engines.flower.simulation` and the tests).

The environment (:func:`flower_env`) makes every process Flower starts (SuperExec, the
ServerApp's process, Ray's workers, ClientApp processes) import the same ``flip`` as this
process and the same executables, keeps Ray's node on 127.0.0.1, and turns off Flower's
telemetry and update check (both would reach the network).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import flip

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def executable(name: str) -> str:
    """Path of a Flower command (``flwr``, ``flower-superlink``, ``flower-supernode``): next to
    this Python interpreter, else on ``PATH``. Raises ``FileNotFoundError``."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install flip's extra (pip install -e "
                                "'.[flower]')")
    return found


def flower_env(flwr_home: str | os.PathLike) -> dict[str, str]:
    """This process's environment for Flower's processes: ``PATH`` starting with this
    interpreter's directory, ``PYTHONPATH`` with the directory holding the imported ``flip``
    and this process's ``sys.path``, ``FLWR_HOME`` (Flower's config and installed apps),
    ``FLWR_TELEMETRY_ENABLED=0``, ``FLWR_DISABLE_UPDATE_CHECK=1`` and
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (Ray's node address is the loopback one)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    paths = [str(Path(flip.__file__).resolve().parents[1])]
    paths += [p for p in sys.path if p and p not in paths]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(FLWR_HOME=str(flwr_home), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    return env


def write_connection(flwr_home: str | os.PathLike, name: str, address: str) -> None:
    """Flower's CLI config (``FLWR_HOME/config.toml``) with one default SuperLink connection
    ``name`` at ``address`` (insecure: loopback only)."""
    home = Path(flwr_home)
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\n'
        f'address = "{address}"\ninsecure = true\n'
    )


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to ``proc``'s process group (it was started in its own session), SIGKILL after
    ``grace_s`` seconds; returns once it exited."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()
    else:  # the leader exited: its group may still hold children
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@contextmanager
def started(cmd: Sequence[str], env: dict, log: str | os.PathLike,
            cwd: str | os.PathLike | None = None) -> Iterator[subprocess.Popen]:
    """``cmd`` running in its own session, output appended to ``log``; stopped (:func:`stop`)
    when the block ends, however it ends."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop(proc)


def wait_healthy(port: int, proc: subprocess.Popen, log: str | os.PathLike,
                 timeout_s: float = 60.0) -> None:
    """Wait until the SuperLink on ``port`` answers ``/health``. Raises ``RuntimeError`` (with
    the log's tail) when it exits or does not answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the Flower SuperLink on {LOOPBACK}:{port} did not start: "
                       f"{tail(log)}")


def tail(path: str | os.PathLike, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ('' when missing)."""
    p = Path(path)
    return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""


def superlink_cmd(port: int, simulation: bool) -> list[str]:
    """``flower-superlink`` on 127.0.0.1:``port`` (Fleet, Control and Runtime APIs over HTTP,
    insecure), without runtime installation of app dependencies; ``simulation``: Flower's
    simulation runtime (virtual SuperNodes on Ray) instead of real SuperNodes."""
    cmd = [executable("flower-superlink"), "--insecure", "--host", LOOPBACK, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    return cmd + (["--simulation"] if simulation else [])
