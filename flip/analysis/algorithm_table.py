"""The comparison's tables: one row per algorithm label, mean ± std over its seeds.

Two tables: :data:`METRICS` (accuracy picked on the validation split, costs, and how long
each algorithm takes to reach a validation target) and :data:`PRUNING` (how each algorithm
pruned: densities, AutoFLIP's threshold and units, PruneFL's importance upload). Figures that
pick a round (ALGORITHMS.md §5) say "no val split" for runs without a validation split.
Reads :class:`flip.analysis.rows.Run` objects; nothing is read from or written to files.
"""

from __future__ import annotations

import math

from flip.analysis.picks import first_reach
from flip.analysis.rows import COLUMNS, Column, Run
from flip.analysis.stats import aggregate, distinct, group_by
from flip.analysis.tables import cell, fmt

METRICS = (
    "best_acc1", "best_acc5", "best_val_acc1", "best_round", "final_acc1", "final_local_acc1",
    "optimistic_acc1", "density", "train_flops_total", "flops_cut", "gb_total", "gb_cut",
    "sim_time_total", "rounds_to_target", "gb_to_target", "flops_to_target", "time_to_target",
    "updates_min", "updates_max",
)  # fmt: skip
"""The accuracy-and-cost table's columns (:data:`flip.analysis.rows.COLUMNS` and
:data:`DERIVED`). "Target": validation top-1 ≥ the target, first round."""
DERIVED = {
    "flops_cut": Column("FLOPs cut vs FedAvg", "cut"),
    "gb_cut": Column("GB cut vs FedAvg", "cut"),
    "rounds_to_target": Column("Rounds to target", "count", True),
    "gb_to_target": Column("GB to target", "gb", True),
    "flops_to_target": Column("FLOPs to target", "si", True),
    "time_to_target": Column("Sim. time to target", "time", True),
}
"""Columns computed over the seeds of a label, not read from one run."""
PRUNING = (
    "density", "tp", "target_density", "density_unstructured", "density_hybrid",
    "units_removed", "importance_upload", "importance_share", "guidance", "epsilon",
)  # fmt: skip
"""The pruning table: densities are fractions of all parameters; Tp is a quantile of the
guidance scores, not a sparsity (ALGORITHMS.md §4)."""
SETTINGS = ("tp", "target_density", "units_total", "importance_upload", "guidance", "epsilon")
"""Keys shown as their distinct values over seeds (``0.3``, ``0.31 / 0.29``), not averaged."""

TO_TARGET = (  # (row key, curve key at the first round reaching the target)
    ("rounds_to_target", "round"),
    ("gb_to_target", "gb_cum"),
    ("flops_to_target", "flops_cum"),
    ("time_to_target", "sim_time"),
)


def column(key: str) -> Column:
    """The header, format and pick flag of a column of either table."""
    return DERIVED.get(key) or COLUMNS[key]


def summarise(runs: list[Run], target: float | None) -> list[dict]:
    """One dict per label, in order of first appearance: ``label``, ``algorithm``, ``runs``
    (seeds), ``seeds``, ``val_split`` (every seed has a validation split); for each number of
    :data:`METRICS` and :data:`PRUNING` the mean, ``<key>_std`` and ``<key>_n`` over seeds
    (:func:`flip.analysis.stats.aggregate`); each of :data:`SETTINGS` as the list of its
    distinct values; the cuts 1 − mean(algorithm)/mean(FedAvg) (None without a FedAvg row);
    and the ``*_to_target`` figures at each seed's first round with validation top-1 ≥
    ``target`` (a fraction; all None when ``target`` is None)."""
    keys = set(METRICS + PRUNING) - set(SETTINGS) - set(DERIVED)
    rows = []
    for label, group in group_by(runs, lambda r: r.label).items():
        out = {"label": label, "algorithm": group[0].algorithm, "runs": len(group)}
        out["seeds"] = sorted(str(r.seed) for r in group)
        out["val_split"] = all(r.row["val_split"] for r in group)
        out.update(aggregate([r.row for r in group], sorted(keys)))
        out.update({key: distinct(r.row[key] for r in group) for key in SETTINGS})
        reached = [first_reach(r.curve, target) if target is not None else None for r in group]
        for key, src in TO_TARGET:
            values = [{key: p[src]} if p else {} for p in reached]
            out.update(aggregate(values, [key]))
        rows.append(out)
    fedavg = next((r for r in rows if r["algorithm"] == "fedavg"), None)
    for r in rows:
        for key, base in (("flops_cut", "train_flops_total"), ("gb_cut", "gb_total")):
            ok = fedavg and fedavg.get(base) and r.get(base) is not None
            r[key] = 1.0 - r[base] / fedavg[base] if ok else None
            r[f"{key}_std"] = None
    return rows


def default_target(rows: list[dict]) -> float | None:
    """The lowest mean best validation top-1 among the labels of :func:`summarise`, rounded
    down to a whole percent (a validation accuracy every algorithm reached, so the to-target
    columns compare them all); None when no label has a validation split."""
    best = [r["best_val_acc1"] for r in rows if r.get("best_val_acc1") is not None]
    return math.floor(100 * min(best)) / 100 if best else None


def metric_cells(rows: list[dict], target: float | None) -> tuple[list[str], list[list[str]]]:
    """The accuracy-and-cost table: header (Algorithm, Seeds, :data:`METRICS`, the target
    named in the to-target headers) and one row of cells per label of :func:`summarise`."""
    name = f"{100 * target:.0f}% val top-1" if target is not None else "target (val top-1)"
    header = ["Algorithm", "Seeds"]
    for key in METRICS:
        text = column(key).header
        header.append(text.replace("target", name) if key.endswith("_to_target") else text)
    cells = []
    for r in rows:
        line = [r["label"], str(r["runs"])]
        for key in METRICS:
            line.append(cell(r, key, column(key).kind, column(key).picked))
        cells.append(line)
    return header, cells


def _distinct_cell(values: list, kind: str) -> str:
    """A :data:`SETTINGS` cell: each distinct value as :func:`flip.analysis.tables.fmt`
    (``text`` as is), joined by `` / ``; '–' when there is none."""
    return " / ".join(str(v) if kind == "text" else fmt(v, kind) for v in values) or "–"


def pruning_cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The pruning table: header (Algorithm, :data:`PRUNING`) and one row per label; units
    removed are shown out of the units there were (``12 of 96``); ε is ``∞`` for guidance
    made without noise."""
    header = ["Algorithm"] + [COLUMNS[key].header for key in PRUNING]
    cells = []
    for r in rows:
        line = [r["label"]]
        for key in PRUNING:
            kind = COLUMNS[key].kind
            text = _distinct_cell(r[key], kind) if key in SETTINGS else cell(r, key, kind)
            if key == "units_removed" and r["units_total"] and text != "–":
                text += f" of {_distinct_cell(r['units_total'], 'count')}"
            if key == "epsilon" and r["guidance"] and not r["epsilon"]:
                text = "∞"
            line.append(text)
        cells.append(line)
    return header, cells
