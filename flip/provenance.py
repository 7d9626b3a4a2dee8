"""Where a result comes from: the code's commit and the machine that ran it (issue 11: every
number traces to a committed result file made by the code of that commit, on a named machine).
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(device: torch.device | str | None = None) -> dict:
    """``commit`` (git HEAD of flip's checkout, or None outside one), ``dirty`` (whether
    tracked files outside ``results/`` differ from it: a results driver rewriting its own
    committed outputs does not make the code dirty), ``machine`` (architecture), ``cpu``,
    ``cores``, ``torch`` and ``device`` (the training device, with the GPU's name on CUDA)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!results")
    name = str(device)
    if device.type == "cuda":
        name = f"{device} ({torch.cuda.get_device_name(device)})"
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "device": name,
    }
