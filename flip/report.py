"""Compare finished runs: a table of accuracy and costs, and accuracy curves.

Usage: ``python -m flip.report RUN_DIR [RUN_DIR ...] [--out DIR]``. A RUN_DIR holds the
``summary.json`` and ``rounds.csv`` that the federated core writes (or, failing those, a W&B
offline run folder, read by :mod:`flip.wandb_offline`); a directory that contains run dirs (a
Hydra multirun folder) is expanded. Writes ``comparison.md``, ``comparison.json`` and
``accuracy.png`` into ``--out`` (default: the common parent of the runs). ``python -m
flip.compare`` builds the checked, multi-seed comparison and dashboard on the same readers.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.table import Table

from flip.metrics.costs import GB
from flip.wandb_offline import nested_summary, offline_run_files, read_offline_run

COLUMNS = [  # (row key, header, formatter)
    ("label", "Algorithm", str),
    ("final_acc1", "Final top-1", "pct"),
    ("best_acc1", "Best top-1", "pct"),
    ("final_acc5", "Final top-5", "pct"),
    ("best_acc5", "Best top-5", "pct"),
    ("flops_per_sample", "FLOPs/sample", "si"),
    ("train_flops_total", "Train FLOPs", "si"),
    ("gb_total", "Total GB", "gb"),
    ("compression_ratio", "Compression", "ratio"),
]


def _si(value: float) -> str:
    """3 significant digits with K/M/G/T/P, e.g. 9527488 → '9.53 M'."""
    for scale, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"), (1, "")):
        if abs(value) >= scale or scale == 1:
            v = value / scale
            digits = max(0, 2 - math.floor(math.log10(abs(v)))) if v else 2
            return f"{v:.{digits}f} {unit}".rstrip()
    raise AssertionError  # unreachable


def fmt(value, kind) -> str:
    """Format one table cell: ``pct`` (fraction → %), ``si`` (FLOPs), ``gb`` (3 decimals),
    ``ratio`` (×); ``None`` → '–'."""
    if value is None:
        return "–"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "si":
        return _si(value)
    if kind == "gb":
        return f"{value:.3f}"
    if kind == "ratio":
        return f"{value:.2f}×"
    return kind(value)


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


def _float(cell: str | None) -> float | None:
    return float(cell) if cell not in (None, "") else None


def load_run(run_dir: Path) -> dict:
    """A run's files: ``{"summary", "rows", "config", "source"}``.

    From ``summary.json``, ``rounds.csv`` (cells as floats, empty → None) and ``config.yaml``
    (``None`` if absent) when present (``source`` = ``files``); otherwise from the newest W&B
    offline run under ``wandb/`` (``source`` = ``wandb``: its summary, history and config).
    Raises ``FileNotFoundError`` naming the dir when neither holds the run.
    """
    import yaml

    run_dir = Path(run_dir)
    summary_file, rounds_csv = run_dir / "summary.json", run_dir / "rounds.csv"
    if summary_file.is_file():
        if not rounds_csv.is_file():
            raise FileNotFoundError(f"{run_dir}: no rounds.csv")
        with rounds_csv.open(newline="") as f:
            rows = [{k: _float(v) for k, v in r.items()} for r in csv.DictReader(f)]
        cfg_file = run_dir / "config.yaml"
        return {
            "summary": json.loads(summary_file.read_text()),
            "rows": rows,
            "config": yaml.safe_load(cfg_file.read_text()) if cfg_file.is_file() else None,
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


def read_run(run_dir: Path, data: dict | None = None) -> tuple[dict, list[dict]]:
    """One run's table row and its per-round records (``round``, ``acc1``, ``gb_cum``,
    ``flops_cum``, ``density``), from ``data`` or read by :func:`load_run`."""
    run_dir = Path(run_dir)
    data = data or load_run(run_dir)
    summary = data["summary"]
    cost, final, best = summary.get("cost", {}), summary.get("final", {}), summary.get("best", {})
    gb_total = cost.get("gb_total")
    if gb_total is None and cost.get("bytes_total") is not None:
        gb_total = cost["bytes_total"] / GB
    train_flops = cost.get("train_flops_total")
    if train_flops is None and "train_flops_rounds" in cost:
        train_flops = cost["train_flops_rounds"] + cost.get("train_flops_exploration", 0.0)
    row = {
        "run_dir": str(run_dir),
        "source": data["source"],
        "algorithm": summary.get("algorithm", run_dir.name),
        "experiment": summary.get("experiment"),
        "model": summary.get("model"),
        "seed": summary.get("seed"),
        "rounds_completed": summary.get("rounds_completed"),
        "final_acc1": final.get("global/acc1"),
        "best_acc1": best.get("global/acc1"),
        "final_acc5": final.get("global/acc5"),
        "best_acc5": best.get("global/acc5"),
        "final_local_acc1": final.get("local/acc1_weighted"),
        "flops_per_sample": cost.get("flops_per_sample"),
        "flops_per_sample_dense": cost.get("flops_per_sample_dense"),
        "train_flops_total": train_flops,
        "gb_total": gb_total,
        "compression_ratio": cost.get("compression_ratio"),
    }
    curve = [
        {
            "round": int(r["round"]),
            "acc1": r.get("global/acc1"),
            "gb_cum": r.get("cost/gb_cum"),
            "flops_cum": r.get("cost/flops_train_cum"),
            "density": r.get("model/density"),
        }
        for r in data["rows"]
    ]
    return row, curve


def _label(rows: list[dict]) -> None:
    """Label rows by algorithm; add the run dir's name where algorithms repeat."""
    names = [r["algorithm"] for r in rows]
    for r in rows:
        dup = names.count(r["algorithm"]) > 1
        r["label"] = f"{r['algorithm']} ({Path(r['run_dir']).name})" if dup else r["algorithm"]


def _markdown(cells: list[list[str]]) -> str:
    header = [h for _, h, _ in COLUMNS]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict], curves: list[list[dict]], path: Path) -> None:
    fig = Figure(figsize=(12, 4.5))
    FigureCanvasAgg(fig)  # render with Agg, no pyplot / display needed
    ax_round, ax_gb = fig.subplots(1, 2)
    for row, curve in zip(rows, curves, strict=True):
        pts = [p for p in curve if p["acc1"] is not None]
        acc = [100 * p["acc1"] for p in pts]
        ax_round.plot([p["round"] for p in pts], acc, marker=".", label=row["label"])
        gb_pts = [(p["gb_cum"], 100 * p["acc1"]) for p in pts if p["gb_cum"] is not None]
        ax_gb.plot([g for g, _ in gb_pts], [a for _, a in gb_pts], marker=".", label=row["label"])
    ax_round.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_round.set(xlabel="Round", ylabel="Global top-1 accuracy (%)", title="Accuracy vs round")
    ax_gb.set(
        xlabel="Cumulative communication (GB, incl. exploration)",
        ylabel="Global top-1 accuracy (%)",
        title="Accuracy vs communication",
    )
    for ax in (ax_round, ax_gb):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> list[dict]:
    """Tabulate and plot runs; return one row (dict of raw numbers, accuracies as fractions,
    FLOPs, GB) per run.

    ``run_dirs`` are run dirs or folders of run dirs (see :func:`expand_run_dirs`). Prints a rich
    table and writes ``comparison.md``, ``comparison.json`` and ``accuracy.png`` (global top-1 vs
    round and vs cumulative GB) into ``out_dir`` (default: the runs' common parent). Raises
    ``FileNotFoundError`` naming a dir without ``summary.json``/``rounds.csv``.
    """
    runs = expand_run_dirs(run_dirs)
    if not runs:
        raise FileNotFoundError("no run dirs given")
    rows, curves = zip(*(read_run(r) for r in runs), strict=True)
    rows, curves = list(rows), list(curves)
    _label(rows)
    out = Path(out_dir) if out_dir else Path(os.path.commonpath([r.resolve().parent for r in runs]))
    out.mkdir(parents=True, exist_ok=True)

    cells = [[fmt(row[key], kind) for key, _, kind in COLUMNS] for row in rows]
    table = Table(title="flip: accuracy and cost per run")
    for i, (_, header, _) in enumerate(COLUMNS):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    for c in cells:
        table.add_row(*c)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 160))
    console.print(table)

    (out / "comparison.md").write_text(_markdown(cells))
    (out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    _plot(rows, curves, out / "accuracy.png")
    console.print(f"wrote comparison.md, comparison.json, accuracy.png to {out}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flip.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run dir (summary.json + rounds.csv) or a folder of run dirs",
    )
    parser.add_argument("--out", default=None, help="output dir (default: common parent of runs)")
    args = parser.parse_args(argv)
    try:
        report(args.run_dirs, args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
