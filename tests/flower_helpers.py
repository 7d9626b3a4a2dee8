"""Shared by the engine=flower tests: a small real Fashion-MNIST setting, runs of it on an
engine, and comparisons of two runs' outputs."""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import pytest
import torch
from compose import compose_cfg

from flip.data.datasets import DEBIAN_FMNIST_DIR
from flip.train import train

# tests/test_golden.py's setting with a narrower TwoCNN (hidden 8) evaluated once, at the end
SETTING = [
    "experiment=fmnist_patho", "data.train_subset=0.05", "federation.num_clients=6",
    "federation.participation=0.5", "federation.rounds=2", "federation.local_epochs=1",
    "exploration.epochs=2", "exploration.patience=1", "logger=none", "progress=false",
    "checkpoint.every=0", "model.net.hidden_size=8", "federation.eval_every=2",
]
ALGORITHMS = {
    "fedavg": [],
    "autoflip": [],
    "eflprune": [],
    "prunefl": ["prunefl.interval=1", "prunefl.initial.batches=2", "prunefl.initial.passes=6",
                "prunefl.initial.interval=2", "prunefl.initial.patience=2"],
}
FLOWER_PROCESSES = ("flower-superlink", "flower-superexec", "flower-supernode",
                    "flwr-simulation", "flwr-serverapp", "flwr-clientapp", "raylet",
                    "gcs_server", "ray::")

needs_fmnist = pytest.mark.skipif(
    not (Path(DEBIAN_FMNIST_DIR) / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs Debian's dataset-fashion-mnist",
)


def run(out: Path, overrides: list[str]) -> dict:
    """``train`` of ``SETTING`` + ``overrides`` into ``out``; returns the summary."""
    return train(compose_cfg([*SETTING, *overrides], out))


def rows(run_dir: Path) -> list[dict]:
    with (run_dir / "rounds.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def unequal_tensors(a: Path, b: Path, key: str | None = None) -> list[str]:
    """Names whose tensors differ (or are missing) between two saved state dicts (or their
    entry ``key``, e.g. ``mask.pt``'s ``masks``)."""
    x, y = torch.load(a), torch.load(b)
    if key is not None:
        x, y = x[key], y[key]
    return sorted(k for k in set(x) | set(y)
                  if k not in x or k not in y or not torch.equal(x[k], y[k]))


def unequal_columns(a: Path, b: Path, skip=("time/",)) -> dict:
    """``{(round, column): (a, b)}`` for every rounds.csv cell that differs (times skipped)."""
    ra, rb = rows(a), rows(b)
    assert [r["round"] for r in ra] == [r["round"] for r in rb]
    return {(x["round"], k): (x[k], y.get(k)) for x, y in zip(ra, rb, strict=True)
            for k in x if not k.startswith(skip) and x[k] != y.get(k)}


def _start_ticks(pid: str) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def flower_processes_since(ticks: int) -> list[str]:
    """Flower or Ray processes (by command line) started after boot tick ``ticks`` that are
    still alive (zombies excluded)."""
    alive = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if stat.rsplit(")", 1)[1].split()[0] == "Z" or _start_ticks(pid) < ticks:
                continue
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if any(name in cmd for name in FLOWER_PROCESSES):
            alive.append(f"{pid} {cmd[:80]}")
    return alive


def now_ticks() -> int:
    """This moment in /proc's start-time units (clock ticks since boot)."""
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return int(uptime * os.sysconf("SC_CLK_TCK"))


def wait_gone(ticks: int, timeout_s: float = 20.0) -> list[str]:
    """:func:`flower_processes_since` once it is empty or after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while (left := flower_processes_since(ticks)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left
