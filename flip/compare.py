"""Compare algorithms on the same setting: checked table, plots and a one-page dashboard.

Usage: ``python -m flip.compare RUN_DIR [RUN_DIR ...] [--out DIR] [--target ACC]``.

Reads each run with :func:`flip.report.load_run` (``summary.json``, ``rounds.csv``,
``config.yaml``, or a W&B offline run folder), refuses runs that are not comparable (different
data set, partition, model, federation budget, or seeds that differ between algorithms) and
writes into ``--out`` (default: the runs' common parent):

- ``comparison.md`` / ``comparison.html`` / ``comparison.json``: per algorithm (mean ± std over
  seeds) final and best global top-1/top-5, final local top-1 (sample-weighted over clients),
  training FLOPs and GB (set-up included) with their cut against FedAvg, compression ratio,
  rounds and GB until the global top-1 first reaches the target;
- ``accuracy_round.png``, ``accuracy_gb.png``, ``accuracy_flops.png``, ``density_round.png``;
- ``index.html``: the dashboard, self-contained (PNGs embedded as base64, no external asset).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.console import Console
from rich.table import Table

from flip.report import _si, expand_run_dirs, fmt, load_run, read_run

COMPARED_FIELDS = (  # (what the user reads, path in config.yaml)
    ("data set", ("data", "name")),
    ("training subset", ("data", "train_subset")),
    ("local test fraction", ("data", "test_fraction")),
    ("partition", ("partition",)),
    ("model", ("model",)),
    ("clients K", ("federation", "num_clients")),
    ("participation C", ("federation", "participation")),
    ("rounds R", ("federation", "rounds")),
    ("local epochs E", ("federation", "local_epochs")),
)
"""Settings every compared run must share (the issue's data set, partition, model, budget)."""

PLOTS = (  # (file, x key, x label, y key, y label, title)
    ("accuracy_round.png", "round", "Round", "acc1", "Global top-1 (%)", "Accuracy vs round"),
    (
        "accuracy_gb.png",
        "gb_cum",
        "Cumulative communication (GB, set-up included)",
        "acc1",
        "Global top-1 (%)",
        "Accuracy vs communication",
    ),
    (
        "accuracy_flops.png",
        "flops_cum",
        "Cumulative training FLOPs (set-up included)",
        "acc1",
        "Global top-1 (%)",
        "Accuracy vs training compute",
    ),
    ("density_round.png", "round", "Round", "density", "Density (%)", "Model density vs round"),
)


class IncomparableRunsError(ValueError):
    """The runs differ in a setting they must share; the message names each difference."""


@dataclass
class Run:
    """One run: its dir, algorithm, seed, label, table row, curve and config."""

    path: Path
    algorithm: str
    seed: object
    config: dict | None
    row: dict
    curve: list[dict]
    label: str = ""
    algo_config: dict = field(default_factory=dict)


def _get(cfg: dict | None, path: tuple[str, ...]):
    node = cfg
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _show(value) -> str:
    if isinstance(value, dict):
        items = ", ".join(f"{k}={_show(v)}" for k, v in value.items() if k != "_target_")
        return "{" + items + "}"
    return str(value)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Every run under ``paths`` (see :func:`flip.report.expand_run_dirs`), labelled by
    algorithm; runs of one algorithm whose algorithm settings differ (e.g. two Tp) get the
    differing settings in their label. Raises ``FileNotFoundError`` for a dir with no run."""
    runs = []
    for d in expand_run_dirs(paths):
        data = load_run(d)
        row, curve = read_run(d, data)
        cfg = data["config"]
        algo_cfg = {k: v for k, v in (_get(cfg, ("algorithm",)) or {}).items() if k != "name"}
        seed = row["seed"] if row["seed"] is not None else _get(cfg, ("seed",))
        runs.append(Run(d, row["algorithm"], seed, cfg, row, curve, algo_config=algo_cfg))
    by_algo: dict[str, list[Run]] = {}
    for r in runs:
        by_algo.setdefault(r.algorithm, []).append(r)
    for algo, group in by_algo.items():
        keys = sorted({k for r in group for k in r.algo_config})
        differ = [k for k in keys if len({_show(r.algo_config.get(k)) for r in group}) > 1]
        for r in group:
            extra = ", ".join(f"{k}={_show(r.algo_config.get(k))}" for k in differ)
            r.label = f"{algo} ({extra})" if extra else algo
    return runs


def check_comparable(runs: list[Run]) -> None:
    """Raise :class:`IncomparableRunsError` unless every run shares :data:`COMPARED_FIELDS`
    and every algorithm ran the same set of seeds, each once. The message lists every field
    that differs with its value per run."""
    problems = []
    for what, path in COMPARED_FIELDS:
        values = {r.path: _get(r.config, path) for r in runs}
        if len({_show(v) for v in values.values()}) > 1:
            lines = [f"    {p}: {_show(v)}" for p, v in values.items()]
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
        problems.append("  seeds differ between algorithms:\n" + "\n".join(lines))
    if problems:
        raise IncomparableRunsError(
            "runs are not comparable (same data set, partition, model, K, C, R, E and seeds "
            "needed):\n" + "\n".join(problems)
        )


def first_reach(curve: list[dict], target: float) -> dict | None:
    """The first evaluated round whose global top-1 ≥ ``target`` (fraction), or None."""
    for p in curve:
        if p["acc1"] is not None and p["acc1"] >= target:
            return p
    return None


def _stats(values: list) -> tuple[float | None, float | None, int]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None, 0
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return float(np.mean(vals)), std, len(vals)


METRICS = (  # (key, header, kind)
    ("final_acc1", "Final top-1", "pct"),
    ("best_acc1", "Best top-1", "pct"),
    ("final_acc5", "Final top-5", "pct"),
    ("best_acc5", "Best top-5", "pct"),
    ("final_local_acc1", "Local top-1 (weighted)", "pct"),
    ("train_flops_total", "Train FLOPs", "si"),
    ("flops_cut", "FLOPs cut vs FedAvg", "cut"),
    ("gb_total", "GB", "gb"),
    ("gb_cut", "GB cut vs FedAvg", "cut"),
    ("compression_ratio", "Compression", "ratio"),
    ("rounds_to_target", "Rounds to target", "rounds"),
    ("gb_to_target", "GB to target", "gb"),
)


def summarise(runs: list[Run], target: float) -> list[dict]:
    """One dict per label: for each of :data:`METRICS` ``<key>`` (mean), ``<key>_std`` (sample
    std over seeds, None for one seed) and, for the target columns, ``<key>_n`` (seeds that
    reached it); ``seeds`` and ``runs``. Cuts are 1 − mean(algorithm)/mean(FedAvg), None
    without a FedAvg run."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    rows = []
    for label, group in groups.items():
        out = {"label": label, "algorithm": group[0].algorithm, "runs": len(group)}
        out["seeds"] = sorted(str(r.seed) for r in group)
        for key in (k for k, _, _ in METRICS if k in group[0].row):
            out[key], out[f"{key}_std"], _ = _stats([r.row[key] for r in group])
        reached = [first_reach(r.curve, target) for r in group]
        for key, src in (("rounds_to_target", "round"), ("gb_to_target", "gb_cum")):
            vals = [p[src] if p else None for p in reached]
            out[key], out[f"{key}_std"], out[f"{key}_n"] = _stats(vals)
        rows.append(out)
    fedavg = next((r for r in rows if r["algorithm"] == "fedavg"), None)
    for r in rows:
        for key, base in (("flops_cut", "train_flops_total"), ("gb_cut", "gb_total")):
            ok = fedavg and fedavg.get(base) and r.get(base) is not None
            r[key] = 1.0 - r[base] / fedavg[base] if ok else None
            r[f"{key}_std"] = None
    return rows


def default_target(rows: list[dict]) -> float:
    """The lowest mean best top-1 among the algorithms, rounded down to a whole percent:
    an accuracy every algorithm reached, so rounds and GB to it compare them all."""
    best = [r["best_acc1"] for r in rows if r.get("best_acc1") is not None]
    return math.floor(100 * min(best)) / 100 if best else 0.0


def cell(row: dict, key: str, kind: str) -> str:
    """A table cell: mean, ``± std`` over seeds when several, ``(n/N)`` when only n of the N
    seeds reached the target; '–' when missing."""
    value, std = row.get(key), row.get(f"{key}_std")
    if value is None:
        return "–"
    if kind == "cut":
        return f"{100 * value:+.1f}%".replace("-", "−")
    if kind == "rounds":
        text = f"{value:.1f}" if std is not None else f"{value:.0f}"
    else:
        text = fmt(value, kind)
    if std is not None:
        spread = {"pct": f"{100 * std:.2f}%", "si": _si(std), "gb": f"{std:.3f}"}
        spread.update(ratio=f"{std:.2f}×", rounds=f"{std:.1f}")
        text += f" ± {spread[kind]}"
    n = row.get(f"{key}_n")
    if n is not None and n < row["runs"]:
        text += f" ({n}/{row['runs']} seeds)"
    return text


def table_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["Algorithm", "Seeds"] + [h for _, h, _ in METRICS]
    cells = [
        [r["label"], str(r["runs"])] + [cell(r, k, kind) for k, _, kind in METRICS] for r in rows
    ]
    return header, cells


def markdown_table(header: list[str], cells: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def html_table(header: list[str], cells: list[list[str]], table_id: str = "comparison") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in cells
    )
    return (
        f'<table id="{table_id}">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{body}</tbody>\n</table>\n"
    )


def _series(group: list[Run], xkey: str, ykey: str):
    """Mean x, mean y and std y over seeds at each evaluated round present in every run."""
    per_run = [
        {p["round"]: p for p in r.curve if p.get(ykey) is not None and p.get(xkey) is not None}
        for r in group
    ]
    rounds = sorted(set.intersection(*(set(d) for d in per_run))) if per_run else []
    scale = 100.0 if ykey in ("acc1", "density") else 1.0
    xs = np.array([[d[k][xkey] for k in rounds] for d in per_run], float)
    ys = np.array([[scale * d[k][ykey] for k in rounds] for d in per_run], float)
    return xs.mean(0), ys.mean(0), (ys.std(0, ddof=1) if len(group) > 1 else None)


def plot(runs: list[Run], out: Path) -> list[Path]:
    """The four PNGs of :data:`PLOTS`, one line per label (mean over seeds, band = ± std)."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    paths = []
    for name, xkey, xlabel, ykey, ylabel, title in PLOTS:
        fig = Figure(figsize=(7.5, 4.6))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for label, group in groups.items():
            x, y, std = _series(group, xkey, ykey)
            if not len(x):
                continue
            n = len(group)
            (line,) = ax.plot(x, y, marker=".", label=label + (f" (n={n})" if n > 1 else ""))
            if std is not None:
                ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.2)
        if xkey == "round":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        paths.append(out / name)
    return paths


def setting_text(runs: list[Run]) -> str:
    """The shared setting, one line (values of :data:`COMPARED_FIELDS` and the seeds)."""
    parts = [f"{what}: {_show(_get(runs[0].config, path))}" for what, path in COMPARED_FIELDS]
    seeds = sorted({str(r.seed) for r in runs})
    return " · ".join(parts + [f"seeds: {', '.join(seeds)}"])


def dashboard(
    runs: list[Run], header: list[str], cells: list[list[str]], target: float, pngs: list[Path]
) -> str:
    """The self-contained ``index.html``: setting, table, plots (base64 PNG), run list."""
    experiment = runs[0].row.get("experiment") or "flip"
    figures = []
    for png in pngs:
        title = next(t for n, *_, t in PLOTS if n == png.name)
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        figures.append(
            f'<figure id="plot-{png.stem}"><img alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(title)}</figcaption>'
            "</figure>"
        )
    run_cells = [
        [r.label, str(r.seed), str(r.row.get("rounds_completed")), r.row["source"], str(r.path)]
        for r in runs
    ]
    runs_table = html_table(
        ["Algorithm", "Seed", "Rounds", "Read from", "Run dir"], run_cells, "runs"
    )
    notes = (
        f"Target accuracy: global top-1 ≥ {100 * target:.1f}%. Cuts are 1 − mean(algorithm) / "
        "mean(FedAvg): positive = less than FedAvg. FLOPs and GB include set-up work before "
        "round 1 (AutoFLIP's exploration, PruneFL's initial pruning). ± is the sample standard "
        "deviation over seeds."
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>flip comparison: {html.escape(experiment)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 1.5em; }}
table {{ border-collapse: collapse; margin: 12px 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td {{ white-space: nowrap; }}
th:first-child, td:first-child {{ text-align: left; }}
thead th {{ background: #f0f0f0; }}
.setting, .notes {{ color: #444; max-width: 80em; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; }}
figure img {{ width: 640px; max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #555; }}
</style>
</head>
<body>
<h1>flip comparison: {html.escape(experiment)}</h1>
<p class="setting" id="setting">{html.escape(setting_text(runs))}</p>
<h2>Accuracy and cost</h2>
{html_table(header, cells)}
<p class="notes" id="notes">{html.escape(notes)}</p>
<h2>Curves</h2>
<div class="plots">
{chr(10).join(figures)}
</div>
<h2>Runs</h2>
{runs_table}
<script>
window.addEventListener("load", () => {{
  const shown = [...document.images].filter((i) => i.complete && i.naturalWidth > 0);
  document.body.dataset.imagesShown = String(shown.length);
}});
</script>
</body>
</html>
"""


def compare(
    run_dirs: list[str | Path], out_dir: str | Path | None = None, target: float | None = None
) -> list[dict]:
    """Check, tabulate, plot and write the dashboard; returns :func:`summarise`'s rows.

    ``target``: global top-1 as a fraction in (0, 1] (default :func:`default_target`).
    Raises ``FileNotFoundError`` for a dir without a run, :class:`IncomparableRunsError`,
    and ``ValueError`` for a target outside (0, 1].
    """
    if target is not None and not 0.0 < target <= 1.0:
        raise ValueError(f"--target {target} is invalid: give a fraction in (0, 1], e.g. 0.7")
    runs = load_runs(run_dirs)
    if not runs:
        raise FileNotFoundError("no run dirs given")
    check_comparable(runs)
    out = (
        Path(out_dir)
        if out_dir
        else Path(os.path.commonpath([r.path.resolve().parent for r in runs]))
    )
    out.mkdir(parents=True, exist_ok=True)
    if target is None:
        target = default_target(summarise(runs, 1.0))
    rows = summarise(runs, target)
    header, cells = table_cells(rows)
    header = [h.replace("to target", f"to {100 * target:.0f}%") for h in header]

    (out / "comparison.md").write_text(markdown_table(header, cells))
    (out / "comparison.html").write_text(html_table(header, cells))
    (out / "comparison.json").write_text(
        json.dumps({"target": target, "setting": setting_text(runs), "rows": rows}, indent=2) + "\n"
    )
    pngs = plot(runs, out)
    (out / "index.html").write_text(dashboard(runs, header, cells, target, pngs))

    table = Table(title=f"flip: comparison (target top-1 {100 * target:.1f}%)")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for c in cells:
        table.add_row(*c)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 220))
    console.print(table)
    console.print(f"wrote index.html, comparison.{{md,html,json}} and 4 PNGs to {out}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flip.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run dir or folder of runs")
    parser.add_argument("--out", default=None, help="output dir (default: common parent of runs)")
    parser.add_argument(
        "--target", type=float, default=None, help="global top-1 to reach, a fraction (e.g. 0.7)"
    )
    args = parser.parse_args(argv)
    try:
        compare(args.run_dirs, args.out, args.target)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
