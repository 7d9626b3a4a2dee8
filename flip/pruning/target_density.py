"""Tp for a target density: the threshold whose hybrid mask keeps a chosen fraction of the
parameters (``pruning.target_density``, issue 11; ALGORITHMS.md §2.2, §4)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import Tensor, nn

from flip.errors import TrainingStopped
from flip.pruning.masks import hybrid_parts

log = logging.getLogger(__name__)

DENSITY_TOLERANCE = 0.005
"""How close ``pruning.target_density`` must be met (half a percentage point)."""


def threshold_for_density(
    net: nn.Module,
    guidance: Mapping[str, Tensor],
    target: float,
    example_input: Tensor,
    structured: bool = True,
    scope: str = "weights",
    scores: Mapping[str, Tensor] | None = None,
) -> float:
    """Tp ∈ [0, 1) such that the hybrid mask (:func:`flip.pruning.masks.hybrid_parts` with
    these arguments) keeps ``target`` of all parameters within :data:`DENSITY_TOLERANCE`, by
    bisection (the density does not increase with Tp; at most 40 steps). Raises
    ``TrainingStopped`` when no Tp meets it (the density jumps over the target, e.g. when one
    unit holds more than a point of the parameters)."""
    lo, hi, seen = 0.0, 1.0, []
    for _ in range(40):
        tp = (lo + hi) / 2
        density = hybrid_parts(net, guidance, tp, example_input, structured, scope,
                               scores).density()
        seen.append((tp, density))
        if abs(density - target) <= DENSITY_TOLERANCE:
            log.info("pruning.target_density=%g: Tp=%.6g keeps %.4f", target, tp, density)
            return tp
        lo, hi = (tp, hi) if density > target else (lo, tp)
    if target >= 1 - DENSITY_TOLERANCE:
        return 0.0
    near = ", ".join(f"Tp={t:.6g}: {d:.4f}" for t, d in sorted(seen)[-4:])
    raise TrainingStopped(
        f"pruning.target_density={target} cannot be met within {DENSITY_TOLERANCE}: the "
        f"hybrid mask's density jumps over it ({near}); choose another target or "
        "pruning.threshold."
    )
