"""Find and load finished runs: the one run reader of the analysis commands.

A run dir holds what the federated core writes (``config.yaml``: the resolved Hydra config,
``summary.json``, ``rounds.csv``: one row per round) or, failing those, a W&B offline run
folder under ``wandb/`` (read by :mod:`flip.analysis.wandb_offline`). A folder of run dirs (a
Hydra multirun: jobs ``0``, ``1_fedavg``, ...) is expanded into its runs. What the tables
take from a loaded run (its row, curve and label) is :mod:`flip.analysis.rows`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import yaml

from flip.analysis.wandb_offline import nested_summary, offline_run_files, read_offline_run

_MISSING = object()


def is_run_dir(path: Path) -> bool:
    """A finished run: ``summary.json``, or a W&B offline run folder under ``wandb/``."""
    return (path / "summary.json").is_file() or bool(offline_run_files(path))


def _job_number(d: Path) -> int | None:
    """Hydra multirun job number of a subfolder named ``3`` or ``3_<algorithm>``."""
    head = d.name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def expand_run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run dirs among ``paths``: a finished run dir (:func:`is_run_dir`) is a run; otherwise
    its subfolders that are Hydra multirun jobs (``3`` or ``3_fedavg``) or finished runs are,
    in job order. Raises ``FileNotFoundError`` naming the dir when a path holds no run or a
    job did not finish (no ``summary.json``)."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if is_run_dir(path):
            runs.append(path)
            continue
        subs = [d for d in path.iterdir() if d.is_dir()] if path.is_dir() else []
        jobs = [d for d in subs if _job_number(d) is not None or is_run_dir(d)]
        if not jobs:
            raise FileNotFoundError(
                f"{path}: no summary.json here (not a finished run dir) and no run dirs inside"
            )
        numbered = sorted((d for d in jobs if _job_number(d) is not None), key=_job_number)
        for job in numbered + sorted(d for d in jobs if _job_number(d) is None):
            if not is_run_dir(job):
                raise FileNotFoundError(f"{job}: no summary.json (the run did not finish?)")
            runs.append(job)
    return runs


def find_runs(paths: list[str | Path]) -> list[Path]:
    """:func:`expand_run_dirs`, raising ``FileNotFoundError`` when ``paths`` hold no run."""
    runs = expand_run_dirs(paths)
    if not runs:
        raise FileNotFoundError("no run dirs given")
    return runs


def output_dir(runs: list[Path], out_dir: str | Path | None) -> Path:
    """``out_dir``, or the runs' common parent when None; created if missing."""
    out = Path(out_dir) if out_dir else Path(os.path.commonpath([r.resolve().parent for r in runs]))
    out.mkdir(parents=True, exist_ok=True)
    return out


def read_config(run_dir: str | Path, required: bool = False) -> dict | None:
    """The run's resolved Hydra config from ``config.yaml``; None when the file is absent,
    unless ``required`` (then ``FileNotFoundError`` naming the run)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        if required:
            raise FileNotFoundError(f"{run_dir}: no config.yaml")
        return None
    return yaml.safe_load(path.read_text())


def config_get(cfg, keys: tuple[str, ...] | list[str], default=_MISSING):
    """The value at ``keys`` (e.g. ``("federation", "rounds")``) in a nested config dict:
    ``default`` when absent, or ``KeyError`` (the dotted key) without a default."""
    node = cfg
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            if default is _MISSING:
                raise KeyError(".".join(keys))
            return default
        node = node[key]
    return node


def config_value(run_dir: Path, key: str):
    """The value of the dotted ``key`` (e.g. ``pruning.threshold``) in the run's
    ``config.yaml``. Raises ``KeyError`` naming the run when the key is absent and
    ``FileNotFoundError`` when the run has no ``config.yaml``."""
    cfg = read_config(run_dir, required=True)
    try:
        return config_get(cfg, key.split("."))
    except KeyError:
        raise KeyError(f"{run_dir}: config.yaml has no {key}") from None


def _float(cell: str | None) -> float | None:
    return float(cell) if cell not in (None, "") else None


def load_run(run_dir: Path) -> dict:
    """A run's files: ``{"summary", "rows", "config", "source"}``.

    From ``summary.json``, ``rounds.csv`` (cells as floats, empty → None) and ``config.yaml``
    (``None`` if absent) when present (``source`` = ``files``); otherwise from the newest W&B
    offline run under ``wandb/`` (``source`` = ``wandb``: its summary, history and config).
    Raises ``FileNotFoundError`` naming the dir when neither holds the run.
    """
    run_dir = Path(run_dir)
    summary_file, rounds_csv = run_dir / "summary.json", run_dir / "rounds.csv"
    if summary_file.is_file():
        if not rounds_csv.is_file():
            raise FileNotFoundError(f"{run_dir}: no rounds.csv")
        with rounds_csv.open(newline="") as f:
            rows = [{k: _float(v) for k, v in r.items()} for r in csv.DictReader(f)]
        return {
            "summary": json.loads(summary_file.read_text()),
            "rows": rows,
            "config": read_config(run_dir),
            "source": "files",
        }
    files = offline_run_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir}: no summary.json and no W&B offline run")
    run = read_offline_run(files[-1])
    summary = nested_summary(run["summary"])
    if "algorithm" not in summary:
        raise FileNotFoundError(f"{files[-1]}: the W&B run has no flip summary (unfinished?)")
    rows = [r for r in run["history"] if "round" in r]
    return {"summary": summary, "rows": rows, "config": run["config"] or None, "source": "wandb"}
