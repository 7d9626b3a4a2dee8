"""Which round a figure is read at: picks on the validation split (ALGORITHMS.md §5).

"Best" accuracy and "rounds / GB / FLOPs / simulated time to a target" pick a round. flip
picks it on ``val/acc1`` (the global model on the union of the clients' validation sets, a
held-out part of their training data: ``data.val_fraction``) and reports the test accuracy
(``global/*``, the official test split) at that round. The test-picked maximum is kept only
as the *optimistic* figure, labelled so. A run without a validation split has no pick (None):
its tables say so (:data:`flip.analysis.tables.NO_VAL`) instead of falling back to the test
set.

Pure functions on a run's ``summary.json`` (a dict) and its curve (the per-round records of
:func:`flip.analysis.rows.read_run`: ``round``, ``acc1``/``acc5`` test top-1/top-5,
``val_acc1``, ``gb_cum``, ``flops_cum``, ``sim_time``; accuracies as fractions, None in rounds
without evaluation). Nothing here reads or writes files.
"""

from __future__ import annotations

PICKED_ON = "val/acc1"
"""The metric rounds are picked on (``summary.json``'s ``best.picked_on``)."""


def val_pick(summary: dict, curve: list[dict]) -> dict | None:
    """The validation-picked round as ``{"round", "val_acc1", "acc1", "acc5"}`` (``acc*``:
    test top-1/top-5 at that round, fractions), or None when the run has no validation split.

    Read from ``summary["best"]`` when it says ``picked_on: val/acc1``; otherwise (a summary
    written before picks, or picking on another metric) from the curve: the first evaluated
    round with the highest ``val_acc1``."""
    best = summary.get("best") or {}
    if best.get("picked_on") == PICKED_ON and best.get("round") is not None:
        return {
            "round": int(best["round"]),
            "val_acc1": best.get(PICKED_ON),
            "acc1": best.get("global/acc1"),
            "acc5": best.get("global/acc5"),
        }
    evaluated = [p for p in curve if p.get("val_acc1") is not None]
    if not evaluated:
        return None
    top = max(evaluated, key=lambda p: p["val_acc1"])  # the first of equal maxima
    return {
        "round": top["round"],
        "val_acc1": top["val_acc1"],
        "acc1": top.get("acc1"),
        "acc5": top.get("acc5"),
    }


def optimistic(summary: dict, curve: list[dict]) -> dict:
    """The test-picked maxima ``{"acc1", "acc5"}`` over rounds (fractions; None when never
    evaluated): optimistic, since the test set picked the round. From the summary's
    ``best_test_optimistic``, or from an older summary's ``best`` (which was test-picked, no
    ``picked_on``), or else the curve's maxima."""
    picked = summary.get("best_test_optimistic")
    if not picked:
        old = summary.get("best") or {}
        picked = {} if "picked_on" in old else old
    out = {}
    for key in ("acc1", "acc5"):
        value = picked.get(f"global/{key}")
        if value is None:
            values = [p[key] for p in curve if p.get(key) is not None]
            value = max(values) if values else None
        out[key] = value
    return out


def first_reach(curve: list[dict], target: float, key: str = "val_acc1") -> dict | None:
    """The curve's first record whose ``key`` (default: validation top-1) ≥ ``target`` (a
    fraction), or None when it never does."""
    for p in curve:
        if p.get(key) is not None and p[key] >= target:
            return p
    return None
