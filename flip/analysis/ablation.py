"""Ablation: accuracy, density and costs against one swept config value, over seeds.

Usage: ``python -m flip.analysis.ablation RUN_DIR [RUN_DIR ...] [--by pruning.threshold] [--default
VALUE] [--out DIR]``. RUN_DIRs are finished runs or folders of them (a Hydra multirun, e.g. ``make
ablation-tp``), read by :mod:`flip.analysis.rows`; the swept value of each run is read from its
resolved ``config.yaml`` (``--default``: the value for a run made before the option existed, whose
config lacks it). Runs sharing a value and an algorithm (several seeds) are one row, mean ± std
over seeds, of: the test top-1 at the round picked on the validation split ("no val split" without
one; ALGORITHMS.md §5), the final test top-1, the density (fraction of parameters sent) and, for
AutoFLIP, the hybrid and unstructured-only mask densities (Tp is a quantile, not a sparsity:
ALGORITHMS.md §4), total training FLOPs and GB (AutoFLIP's exploration included), and where runs
have them the mask's Jaccard index against the clean mask (attacked explorers) and the guidance's ε
(private guidance). Writes ``ablation.md``, ``ablation.json`` (``by``, the rows and each run's row)
and ``ablation.png`` (four panels against the value: picked test top-1, density, FLOPs, GB; each
run a faint point, the mean with ± std error bars) into ``--out`` (default: the runs' common
parent). Source: AutoFLIP (arXiv 2405.10271) §5, the Tp ablation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flip.analysis import cli
from flip.analysis.rows import COLUMNS, read_run, row_cell
from flip.analysis.runs import config_value, find_runs, output_dir
from flip.analysis.stats import aggregate, group_by
from flip.analysis.tables import NO_VAL, markdown_table, print_table

TABLE = (
    "best_acc1", "final_acc1", "density", "density_hybrid", "density_unstructured",
    "train_flops_total", "gb_total",
)  # fmt: skip
"""The table's columns after the value, algorithm and seeds (formats:
:data:`flip.analysis.rows.COLUMNS`)."""
OPTIONAL = ("jaccard_clean", "epsilon")
"""Columns added when some run has them: the attacked mask's Jaccard index against the clean
one and the ε of private guidance (docs/robust-guidance.md)."""
PANELS = [  # (row key, axis label, scale)
    ("best_acc1", "Test top-1 at the best-val round (%)", 100.0),
    ("density", "Density: parameters sent (%)", 100.0),
    ("train_flops_total", "Training FLOPs (incl. exploration)", 1.0),
    ("gb_total", "Communication (GB, incl. exploration)", 1.0),
]


def ablation(
    run_dirs: list[str | Path], by: str = "pruning.threshold", out_dir: str | Path | None = None,
    default=None,
) -> list[dict]:
    """One row per (value of ``by``, algorithm), sorted by value: ``value``, ``algorithm``,
    ``runs`` (seeds), ``seeds``, ``val_split`` (every seed has one) and the mean,
    ``<key>_std`` and ``<key>_n`` over seeds of :data:`TABLE` and ``compression_ratio``.
    Prints a table and writes ``ablation.{md,json,png}`` (module docstring). ``default``:
    the value of ``by`` for a run whose ``config.yaml`` lacks the key (made by a version of
    flip before the option existed, so it ran with the option's default; ``None``: such a
    run is an error). Raises ``FileNotFoundError``/``KeyError`` naming a run that lacks its
    files or the key."""
    runs = find_runs(run_dirs)
    per_run = []
    for run in runs:
        row, _ = read_run(run)
        try:
            row["value"] = config_value(run, by)
        except KeyError:
            if default is None:
                raise
            row["value"] = default
        per_run.append(row)
    per_run.sort(key=lambda r: (r["value"], r["run_dir"]))
    rows = []
    groups = group_by(per_run, lambda r: (r["value"], r["algorithm"]))
    for (value, algorithm), group in groups.items():
        row = {"value": value, "algorithm": algorithm, "runs": len(group)}
        row["seeds"] = [str(r["seed"]) for r in group]
        row["val_split"] = all(r["val_split"] for r in group)
        row.update(aggregate(group, [*TABLE, *OPTIONAL, "compression_ratio"]))
        rows.append(row)
    out = output_dir(runs, out_dir)

    table = [*TABLE, *(k for k in OPTIONAL if any(r.get(k) is not None for r in per_run))]
    header = [by, "Algorithm", "Seeds"] + [COLUMNS[key].header for key in table]
    cells = [
        [str(r["value"]), r["algorithm"], str(r["runs"])] + [row_cell(r, key) for key in table]
        for r in rows
    ]
    print_table(
        f"flip: ablation over {by} (mean ± std over seeds)",
        header,
        cells,
        left=2,
        width=220,
        fit_terminal=False,
        no_wrap=False,
    )
    (out / "ablation.md").write_text(markdown_table(header, cells, left=2))
    summary = {"by": by, "rows": rows, "runs": per_run}
    (out / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(rows, per_run, by, out / "ablation.png")
    return rows


def _plot(rows: list[dict], per_run: list[dict], by: str, path: Path) -> None:
    """``ablation.png`` at ``path``: one panel per :data:`PANELS` entry against ``by``; per
    algorithm each run as a faint point and the mean over seeds with ± std error bars."""
    fig = Figure(figsize=(18, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, (key, label, scale) in zip(fig.subplots(1, len(PANELS)), PANELS, strict=True):
        for algorithm, group in group_by(rows, lambda r: r["algorithm"]).items():
            runs = [r for r in per_run if r["algorithm"] == algorithm and r.get(key) is not None]
            pts = [r for r in group if r.get(key) is not None]
            if key == "best_acc1":
                runs = [r for r in runs if r["val_split"]]
                pts = [r for r in pts if r["val_split"]]
            (line,) = ax.plot(
                [r["value"] for r in runs], [scale * r[key] for r in runs], "o", alpha=0.3
            )
            ax.errorbar(
                [r["value"] for r in pts],
                [scale * r[key] for r in pts],
                yerr=[scale * (r[f"{key}_std"] or 0.0) for r in pts],
                fmt="-s",
                capsize=3,
                color=line.get_color(),
                label=f"{algorithm} (mean ± std)",
            )
        if key == "best_acc1" and not any(r["val_split"] for r in rows):
            ax.text(0.5, 0.5, NO_VAL, transform=ax.transAxes, ha="center", va="center")
        ax.set(xlabel=by, ylabel=label)
        ax.grid(alpha=0.3)
    fig.axes[0].legend()
    fig.suptitle(f"Ablation over {by}: each run (faint) and mean ± std over seeds")
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    """``python -m flip.analysis.ablation``: exit code 0, or 2 when a run or its key is
    missing."""
    parser = cli.parser("ablation", __doc__, "run dir or a folder of run dirs (a Hydra multirun)")
    parser.add_argument(
        "--by",
        default="pruning.threshold",
        help="dotted config key swept (default pruning.threshold)",
    )
    parser.add_argument(
        "--default",
        type=yaml.safe_load,
        default=None,
        help="value of --by for runs whose config.yaml lacks it (made before the option "
        "existed, so with its default), e.g. 0.0",
    )
    args = parser.parse_args(argv)
    return cli.run(
        lambda: ablation(args.run_dirs, args.by, args.out, args.default),
        (FileNotFoundError, KeyError),
    )


if __name__ == "__main__":
    sys.exit(main())
