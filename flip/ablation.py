"""Ablation plots: final accuracy, training FLOPs and GB against one swept config value.

Usage: ``python -m flip.ablation RUN_DIR [RUN_DIR ...] [--by pruning.threshold] [--out DIR]``.
RUN_DIRs are finished runs or folders of them (a Hydra multirun, e.g. ``make ablation-tp``), as
for :mod:`flip.report`, whose reading code this reuses; the swept value of each run is read
from its resolved ``config.yaml``. Writes ``ablation.md``, ``ablation.json`` and
``ablation.png`` (three panels: final global top-1, total training FLOPs and total GB, each
including AutoFLIP's exploration, against the value; one point per run and the mean per value)
into ``--out`` (default: the runs' common parent). Source: AutoFLIP (arXiv 2405.10271) §5,
the Tp ablation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from flip.report import expand_run_dirs, fmt, read_run

PANELS = [  # (row key, axis label, scale)
    ("final_acc1", "Final global top-1 accuracy (%)", 100.0),
    ("train_flops_total", "Training FLOPs (incl. exploration)", 1.0),
    ("gb_total", "Communication (GB, incl. exploration)", 1.0),
]


def config_value(run_dir: Path, key: str):
    """The value of the dotted ``key`` (e.g. ``pruning.threshold``) in the run's
    ``config.yaml``. Raises ``KeyError`` naming the run when the key is absent and
    ``FileNotFoundError`` when the run has no ``config.yaml``."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml")
    node = yaml.safe_load(path.read_text())
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{run_dir}: config.yaml has no {key}")
        node = node[part]
    return node


def ablation(run_dirs: list[str | Path], by: str = "pruning.threshold",
             out_dir: str | Path | None = None) -> list[dict]:
    """Rows (one per run, sorted by the value ``by``) of :func:`flip.report.read_run` plus
    ``value``; prints a table and writes ``ablation.{md,json,png}`` (module docstring).
    Raises ``FileNotFoundError``/``KeyError`` naming a run that lacks its files or the key."""
    runs = expand_run_dirs(run_dirs)
    if not runs:
        raise FileNotFoundError("no run dirs given")
    rows = []
    for run in runs:
        row, _ = read_run(run)
        row["value"] = config_value(run, by)
        rows.append(row)
    rows.sort(key=lambda r: (r["value"], r["run_dir"]))
    out = Path(out_dir) if out_dir else Path(os.path.commonpath([r.resolve().parent for r in runs]))
    out.mkdir(parents=True, exist_ok=True)

    cols = [("value", by, str), ("algorithm", "Algorithm", str),
            ("final_acc1", "Final top-1", "pct"), ("train_flops_total", "Train FLOPs", "si"),
            ("gb_total", "Total GB", "gb"), ("compression_ratio", "Compression", "ratio")]
    cells = [[fmt(r[k], kind) for k, _, kind in cols] for r in rows]
    table = Table(title=f"flip: ablation over {by}")
    for i, (_, header, _) in enumerate(cols):
        table.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
    for c in cells:
        table.add_row(*c)
    Console(width=160).print(table)
    md = ["| " + " | ".join(h for _, h, _ in cols) + " |",
          "|" + "|".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + "|"]
    md += ["| " + " | ".join(c) + " |" for c in cells]
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    _plot(rows, by, out / "ablation.png")
    return rows


def _plot(rows: list[dict], by: str, path: Path) -> None:
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (key, label, scale) in zip(fig.subplots(1, len(PANELS)), PANELS, strict=True):
        pts = [(r["value"], r[key] * scale) for r in rows if r.get(key) is not None]
        groups: dict = defaultdict(list)
        for v, y in pts:
            groups[v].append(y)
        xs = sorted(groups)
        ax.plot([v for v, _ in pts], [y for _, y in pts], "o", alpha=0.4, label="run")
        ax.plot(xs, [sum(groups[v]) / len(groups[v]) for v in xs], "-", marker="s", label="mean")
        ax.set(xlabel=by, ylabel=label)
        ax.grid(alpha=0.3)
    fig.axes[0].legend()
    fig.suptitle(f"AutoFLIP ablation over {by}")
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flip.ablation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="run dir or a folder of run dirs (a Hydra multirun)")
    parser.add_argument("--by", default="pruning.threshold",
                        help="dotted config key swept (default pruning.threshold)")
    parser.add_argument("--out", default=None, help="output dir (default: common parent)")
    args = parser.parse_args(argv)
    try:
        ablation(args.run_dirs, args.by, args.out)
    except (FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
