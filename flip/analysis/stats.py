"""Mean ± std over seeds: grouping runs' rows and aggregating their numbers.

Pure arithmetic on the rows of :func:`flip.analysis.rows.read_run`; nothing is read or
written. The spread is the sample standard deviation (ddof = 1), None for a single value.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable

import numpy as np


def group_by(items: Iterable, key: Callable[[object], Hashable]) -> dict:
    """``{key(item): [items ...]}`` in order of first appearance."""
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def mean_std(values: Iterable) -> tuple[float | None, float | None, int]:
    """Mean, sample std (None for one value) and count of the values that are not None;
    ``(None, None, 0)`` when there are none."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None, None, 0
    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
    return float(np.mean(vals)), std, len(vals)


def aggregate(rows: list[dict], keys: Iterable[str]) -> dict:
    """For each numeric key: ``<key>`` (mean over ``rows``), ``<key>_std`` and ``<key>_n``
    (how many rows had a value), as :func:`mean_std`."""
    out = {}
    for key in keys:
        out[key], out[f"{key}_std"], out[f"{key}_n"] = mean_std(r.get(key) for r in rows)
    return out


def distinct(values: Iterable) -> list:
    """The distinct values that are not None, in order of first appearance."""
    return list(dict.fromkeys(v for v in values if v is not None))
