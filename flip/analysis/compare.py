"""Compare algorithms on the same setting: checked tables, plots and a one-page dashboard.

Usage: ``python -m flip.analysis.compare RUN_DIR [RUN_DIR ...] [--out DIR] [--target ACC]``.

Reads each run with :func:`flip.analysis.rows.load_runs` (``summary.json``, ``rounds.csv``,
``config.yaml``, or a W&B offline run folder), refuses runs that are not comparable (different
data set, partition, validation fraction, model, federation budget, or seeds that differ
between table rows) and writes into ``--out`` (default: the runs' common parent):

- ``comparison.md`` / ``comparison.html`` / ``comparison.json``: per label (an algorithm, or
  its variant: ``prunefl (every_round)``, ``autoflip (pruning.threshold=0.2)``), mean ± std
  over seeds, two tables (:mod:`flip.analysis.algorithm_table`): test accuracy at the round
  picked on the validation split, final and optimistic (test-picked) accuracy, density,
  training FLOPs and GB (set-up included) with their cut against FedAvg, simulated time, and
  rounds / GB / FLOPs / simulated time until validation top-1 first reaches the target; and
  how each algorithm pruned (densities, Tp, units removed, PruneFL's importance upload);
- the PNGs of :mod:`flip.analysis.plots` (mean ± std bands, for papers);
- ``index.html``: the dashboard (:mod:`flip.analysis.dashboard`), self-contained, with
  interactive plotly curves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from flip.analysis import cli
from flip.analysis.algorithm_table import default_target, metric_cells, pruning_cells, summarise
from flip.analysis.dashboard import dashboard, notes
from flip.analysis.plots import plot
from flip.analysis.rows import Run, label_by_dir, load_runs
from flip.analysis.runs import config_get, output_dir
from flip.analysis.tables import html_table, markdown_table, print_table, show

COMPARED_FIELDS = (  # (what the user reads, path in config.yaml)
    ("data set", ("data", "name")),
    ("training subset", ("data", "train_subset")),
    ("local test fraction", ("data", "test_fraction")),
    ("validation fraction", ("data", "val_fraction")),
    ("partition", ("partition",)),
    ("model", ("model",)),
    ("clients K", ("federation", "num_clients")),
    ("participation C", ("federation", "participation")),
    ("rounds R", ("federation", "rounds")),
    ("local epochs E", ("federation", "local_epochs")),
)
"""Settings every compared run must share (the issue's data set, partition, model, budget)."""
ABSENT = {("data", "val_fraction"): 0.0}
"""What a setting missing from an older run's config meant (no validation split then)."""


class IncomparableRunsError(ValueError):
    """The runs differ in a setting they must share; the message names each difference."""


def check_comparable(runs: list[Run]) -> None:
    """Raise :class:`IncomparableRunsError` unless every run shares :data:`COMPARED_FIELDS`
    and every label (an algorithm or its variant, e.g. each PruneFL upload policy) ran the
    same set of seeds, each once. The message lists every field that differs with its value
    per run."""
    problems = []
    for what, path in COMPARED_FIELDS:
        values = {r.path: config_get(r.config, path, ABSENT.get(path)) for r in runs}
        if len({show(v) for v in values.values()}) > 1:
            lines = [f"    {p}: {show(v)}" for p, v in values.items()]
            problems.append(f"  {what} differs:\n" + "\n".join(lines))
    seeds: dict[str, list] = {}
    for r in runs:
        seeds.setdefault(r.label, []).append(r.seed)
    for label, s in seeds.items():
        if len(set(map(str, s))) < len(s):
            problems.append(f"  {label} has several runs with the same seed: {sorted(map(str, s))}")
    sets = {label: sorted(set(map(str, s))) for label, s in seeds.items()}
    if len({tuple(s) for s in sets.values()}) > 1:
        lines = [f"    {label}: {', '.join(s)}" for label, s in sets.items()]
        problems.append("  seeds differ between algorithms (table rows):\n" + "\n".join(lines))
    if problems:
        raise IncomparableRunsError(
            "runs are not comparable (same data set, partition, validation fraction, model, K, "
            "C, R, E and seeds needed):\n" + "\n".join(problems)
        )


def setting_text(runs: list[Run]) -> str:
    """The shared setting, one line (values of :data:`COMPARED_FIELDS` and the seeds)."""
    cfg = runs[0].config
    parts = [
        f"{what}: {show(config_get(cfg, path, ABSENT.get(path)))}" for what, path in COMPARED_FIELDS
    ]
    seeds = sorted({str(r.seed) for r in runs})
    return " · ".join(parts + [f"seeds: {', '.join(seeds)}"])


def compare(
    run_dirs: list[str | Path], out_dir: str | Path | None = None, target: float | None = None,
    labels: str = "config",
) -> list[dict]:
    """Check, tabulate, plot and write the dashboard; returns the rows of
    :func:`flip.analysis.algorithm_table.summarise`.

    Prints the tables and writes the files of the module docstring into ``out_dir``
    (default: the runs' common parent). ``target``: validation top-1 as a fraction in
    (0, 1] (default :func:`flip.analysis.algorithm_table.default_target`; without any
    validation split there is no target and the to-target cells say "no val split").
    ``labels``: ``config`` (the algorithm and the settings that differ,
    :func:`flip.analysis.rows.label_runs`) or ``dirs`` (the run directory's name less its
    ``_seed<N>``, :func:`flip.analysis.rows.label_by_dir`: for a ``results/`` folder whose
    runs come from versions of flip with different config keys).
    Raises ``FileNotFoundError`` for a dir without a run, :class:`IncomparableRunsError`,
    and ``ValueError`` for a target outside (0, 1] or an unknown ``labels``.
    """
    if target is not None and not 0.0 < target <= 1.0:
        raise ValueError(f"--target {target} is invalid: give a fraction in (0, 1], e.g. 0.7")
    if labels not in ("config", "dirs"):
        raise ValueError(f"--labels {labels!r} is invalid: accepted values are config, dirs")
    runs = load_runs(run_dirs)
    if not runs:
        raise FileNotFoundError("no run dirs given")
    if labels == "dirs":
        label_by_dir(runs)
    check_comparable(runs)
    out = output_dir([r.path for r in runs], out_dir)
    if target is None:
        target = default_target(summarise(runs, None))
    rows = summarise(runs, target)
    tables = [
        ("Accuracy and cost", "comparison", *metric_cells(rows, target)),
        ("How each algorithm pruned", "pruning", *pruning_cells(rows)),
    ]
    setting = setting_text(runs)
    md = [f"## {title}\n\n{markdown_table(h, c)}" for title, _, h, c in tables]
    (out / "comparison.md").write_text("\n".join([*md, notes(target)]) + "\n")
    (out / "comparison.html").write_text(
        "".join(f"<h2>{title}</h2>\n{html_table(h, c, i)}" for title, i, h, c in tables)
    )
    summary = {"target": target, "target_metric": "val/acc1", "setting": setting, "rows": rows}
    (out / "comparison.json").write_text(json.dumps(summary, indent=2) + "\n")
    pngs = plot(runs, out)
    (out / "index.html").write_text(dashboard(runs, tables, target, pngs, setting))

    aim = f"validation top-1 {100 * target:.0f}%" if target is not None else "no val split"
    for title, _, header, cells in tables:
        console = print_table(
            f"flip: {title.lower()} (target: {aim})", header, cells, width=220, no_wrap=False
        )
    console.print(f"wrote index.html, comparison.{{md,html,json}} and {len(pngs)} PNGs to {out}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m flip.analysis.compare``: exit code 0, or 2 when a run is missing, the runs
    are not comparable or ``--target`` is invalid."""
    parser = cli.parser("compare", __doc__, "run dir or folder of runs")
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help="validation top-1 to reach, a fraction (e.g. 0.7; default: the lowest best)",
    )
    parser.add_argument(
        "--labels",
        choices=("config", "dirs"),
        default="config",
        help="row labels: config (algorithm + differing settings, default) or dirs (the run "
        "directory's name less _seed<N>)",
    )
    args = parser.parse_args(argv)
    return cli.run(
        lambda: compare(args.run_dirs, args.out, args.target, args.labels),
        (FileNotFoundError, ValueError),
    )


if __name__ == "__main__":
    sys.exit(main())
