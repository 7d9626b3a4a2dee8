"""Curves over seeds: what the PNGs (:mod:`flip.analysis.plots`) and the interactive figures
(:mod:`flip.analysis.figures`) draw.

Per label the mean over seeds with a ± std band at the rounds every seed evaluated, and each
seed's own curve. Reads the curves of :class:`flip.analysis.rows.Run`; nothing is written.
Accuracies and densities are returned in percent, GB in 1e9 bytes, simulated time in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from flip.analysis.rows import Run
from flip.analysis.stats import group_by


class Axis(NamedTuple):
    """An x axis: its title, what it measures (for figure titles) and the file/element stem
    (``accuracy_<stem>.png``, ``plot-accuracy_<stem>``)."""

    title: str
    what: str
    stem: str


X_AXES = {  # curve key: axis
    "round": Axis("Round", "round", "round"),
    "gb_cum": Axis("Cumulative communication (GB, set-up included)", "communication", "gb"),
    "flops_cum": Axis("Cumulative training FLOPs (set-up included)", "training compute", "flops"),
    "sim_time": Axis("Simulated time (s)", "simulated time", "time"),
}
"""The x axes accuracy is drawn against; ``sim_time`` only when the runs have ``sim/time_s``."""
ACCURACY_PANELS = (  # (curve key, title)
    ("acc1", "Test top-1 (official test split)"),
    ("val_acc1", "Validation top-1 (picks the round)"),
)
PERCENT = {"acc1", "acc5", "val_acc1", "density"}


@dataclass
class Band:
    """One label's mean curve: ``rounds``, mean ``x``, mean ``y``, ``std`` of y (None for
    one seed) over the ``n`` seeds, aligned as :func:`band` says."""

    rounds: np.ndarray
    x: np.ndarray
    y: np.ndarray
    std: np.ndarray | None
    n: int


def by_label(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs grouped by label, in order of first appearance."""
    return group_by(runs, lambda r: r.label)


def has_values(runs: list[Run], key: str) -> bool:
    """Whether any run's curve has a value for ``key`` (e.g. ``sim_time``, ``val_acc1``)."""
    return any(p.get(key) is not None for r in runs for p in r.curve)


def x_axes(runs: list[Run]) -> list[str]:
    """The keys of :data:`X_AXES` the runs have values for (round, GB, FLOPs; sim_time only
    when recorded)."""
    return [k for k in X_AXES if has_values(runs, k)]


def seed_curve(run: Run, xkey: str, ykey: str) -> tuple[list[int], list[float], list[float]]:
    """One run's rounds, x and y (percent for :data:`PERCENT`) where both are recorded."""
    scale = 100.0 if ykey in PERCENT else 1.0
    pts = [p for p in run.curve if p.get(xkey) is not None and p.get(ykey) is not None]
    return [p["round"] for p in pts], [p[xkey] for p in pts], [scale * p[ykey] for p in pts]


def band(group: list[Run], xkey: str, ykey: str) -> Band | None:
    """The mean curve of ``group`` (one label's seeds), or None when a seed has no values.

    Seeds are aligned by round where they share rounds that every seed evaluated (synchronous
    runs). Asynchronous seeds evaluate after different aggregations (ASYNC.md §3: 5, 9, 14 in one
    seed, 6, 10, 13 in another), at about the same simulated times, so with no round common to
    all seeds their evaluations are aligned by index instead: the k-th of each, up to the
    shortest run; x is then the mean of the seeds' x (and ``rounds`` the first seed's rounds).
    """
    per_run = []
    for run in group:
        rounds, xs, ys = seed_curve(run, xkey, ykey)
        per_run.append({k: (x, y) for k, x, y in zip(rounds, xs, ys, strict=True)})
    if not per_run or not all(per_run):
        return None
    rounds = sorted(set.intersection(*(set(d) for d in per_run)))
    if rounds:
        xs = np.array([[d[k][0] for k in rounds] for d in per_run], float)
        ys = np.array([[d[k][1] for k in rounds] for d in per_run], float)
    else:
        n = min(len(d) for d in per_run)
        rounds = sorted(per_run[0])[:n]
        xs = np.array([[d[k][0] for k in sorted(d)[:n]] for d in per_run], float)
        ys = np.array([[d[k][1] for k in sorted(d)[:n]] for d in per_run], float)
    std = ys.std(0, ddof=1) if len(group) > 1 else None
    return Band(np.array(rounds), xs.mean(0), ys.mean(0), std, len(group))
