"""Compare finished runs: a table of accuracy and costs, and accuracy curves.

Usage: ``python -m flip.analysis.report RUN_DIR [RUN_DIR ...] [--out DIR]``. A RUN_DIR is read
by :mod:`flip.analysis.rows` (``summary.json`` and ``rounds.csv``, or a W&B offline run folder);
a directory that contains run dirs (a Hydra multirun folder) is expanded. One row per run: the
test accuracy at the round picked on the validation split ("no val split" for a run without
one; ALGORITHMS.md §5), final and optimistic (test-picked) accuracy, density and costs. Writes
``comparison.md``, ``comparison.json`` and ``accuracy.png`` into ``--out`` (default: the common
parent of the runs). ``python -m flip.analysis.compare`` builds the checked, multi-seed
comparison and dashboard on the same reader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from flip.analysis import cli
from flip.analysis.rows import COLUMNS, read_run, row_cell
from flip.analysis.runs import find_runs, output_dir
from flip.analysis.tables import markdown_table, print_table

TABLE = (
    "label", "best_acc1", "best_round", "best_val_acc1", "final_acc1", "final_acc5",
    "optimistic_acc1", "density", "flops_per_sample", "train_flops_total", "gb_total",
    "compression_ratio",
)  # fmt: skip
"""The per-run table's columns (headers and formats: :data:`flip.analysis.rows.COLUMNS`)."""


def _label(rows: list[dict]) -> None:
    """Label rows by algorithm; add the run dir's name where algorithms repeat."""
    names = [r["algorithm"] for r in rows]
    for r in rows:
        dup = names.count(r["algorithm"]) > 1
        r["label"] = f"{r['algorithm']} ({Path(r['run_dir']).name})" if dup else r["algorithm"]


def _plot(rows: list[dict], curves: list[list[dict]], path: Path) -> None:
    """``accuracy.png`` at ``path``: test top-1 (%, solid) and validation top-1 (dashed, when
    recorded) against round and against cumulative GB."""
    fig = Figure(figsize=(12, 4.5))
    FigureCanvasAgg(fig)  # render with Agg, no pyplot / display needed
    ax_round, ax_gb = fig.subplots(1, 2)
    for row, curve in zip(rows, curves, strict=True):
        color = None
        for key, style, name in (("acc1", "-", row["label"]), ("val_acc1", "--", None)):
            pts = [p for p in curve if p[key] is not None]
            if not pts:
                continue
            acc = [100 * p[key] for p in pts]
            (line,) = ax_round.plot(
                [p["round"] for p in pts], acc, style, marker=".", color=color, label=name
            )
            color = line.get_color()
            gb = [p for p in pts if p["gb_cum"] is not None]
            xy = [p["gb_cum"] for p in gb], [100 * p[key] for p in gb]
            ax_gb.plot(*xy, style, marker=".", color=color, label=name)
    ax_round.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_round.set(
        xlabel="Round",
        ylabel="Top-1 accuracy (%): test solid, validation dashed",
        title="Accuracy vs round",
    )
    ax_gb.set(
        xlabel="Cumulative communication (GB, incl. exploration)",
        ylabel="Top-1 accuracy (%): test solid, validation dashed",
        title="Accuracy vs communication",
    )
    for ax in (ax_round, ax_gb):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def report(run_dirs: list[str | Path], out_dir: str | Path | None = None) -> list[dict]:
    """Tabulate and plot runs; return one row (dict of raw numbers, accuracies as fractions,
    FLOPs, GB) per run (:func:`flip.analysis.rows.read_run`, plus ``label``).

    ``run_dirs`` are run dirs or folders of run dirs (see
    :func:`flip.analysis.runs.expand_run_dirs`). Prints a rich table and writes
    ``comparison.md``, ``comparison.json`` and ``accuracy.png`` (test and validation top-1 vs
    round and vs cumulative GB) into ``out_dir`` (default: the runs' common parent). Raises
    ``FileNotFoundError`` naming a dir without ``summary.json``/``rounds.csv``.
    """
    runs = find_runs(run_dirs)
    rows, curves = zip(*(read_run(r) for r in runs), strict=True)
    rows, curves = list(rows), list(curves)
    _label(rows)
    out = output_dir(runs, out_dir)

    header = [COLUMNS[key].header for key in TABLE]
    cells = [[row_cell(row, key) for key in TABLE] for row in rows]
    console = print_table(
        "flip: accuracy and cost per run", header, cells, width=220, no_wrap=False
    )
    (out / "comparison.md").write_text(markdown_table(header, cells))
    (out / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    _plot(rows, curves, out / "accuracy.png")
    console.print(f"wrote comparison.md, comparison.json, accuracy.png to {out}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m flip.analysis.report``: exit code 0, or 2 when a run is missing."""
    parser = cli.parser(
        "report", __doc__, "run dir (summary.json + rounds.csv) or a folder of run dirs"
    )
    args = parser.parse_args(argv)
    return cli.run(lambda: report(args.run_dirs, args.out), (FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
