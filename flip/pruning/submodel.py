"""Physically smaller sub-models of the global network and the way back (ALGORITHMS.md §3.2).

Units (filters of a Conv, neurons of a Linear) are ranked by the L1 norm of their fan-in
weights; the weakest are removed with Torch-Pruning's ``DependencyGraph`` (the same groups as
:mod:`flip.pruning.structured`: coupled consumers, batch norm, flattened feature blocks,
residual sums) by :func:`flip.pruning.compaction.compact`, whose index map tells exactly which
entry of the global tensor each sub-model entry is: the map the server uses to write returned
weights back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from flip.pruning.compaction import compact, expand
from flip.pruning.units import group_scores, unit_groups


def l1_unit_scores(weight: Tensor) -> Tensor:
    """L1 norm of each unit's fan-in weights: ``Σ |w[u, ...]|`` per output unit ``u`` of a
    Conv/Linear weight of shape ``(units, ...)``; returns float64 ``(units,)``
    (Li et al. 2017, "Pruning Filters for Efficient ConvNets")."""
    return weight.detach().abs().reshape(weight.shape[0], -1).double().sum(1).cpu()


def units_to_remove(scores: Tensor, keep_ratio: float) -> list[int]:
    """Indices of the units to remove: all but the ``max(1, ⌈keep_ratio·n⌉)`` highest
    ``scores`` (ties: the first position wins), sorted ascending. ``keep_ratio`` ∈ (0, 1]."""
    n = scores.numel()
    keep = max(1, math.ceil(keep_ratio * n - 1e-9))
    order = torch.sort(scores, descending=True, stable=True).indices
    return sorted(int(i) for i in order[keep:])


def l1_removal(net: nn.Module, keep_ratio: float, example_input: Tensor) -> dict[str, list[int]]:
    """EFLPrune's removal (a :mod:`flip.pruning.compaction` removal): in every unit group the
    units beyond the ``keep_ratio`` strongest by L1 (:func:`units_to_remove`; a unit's score is
    the sum of :func:`l1_unit_scores` over the group's producer layers), keyed by the group's
    root layer name. Raises ``ValueError`` unless 0 < keep_ratio ≤ 1."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    _, groups = unit_groups(net, example_input)

    def l1(name: str, layer: nn.Module) -> Tensor:
        return l1_unit_scores(layer.weight)

    names = {m: n for n, m in net.named_modules()}
    return {
        root: units_to_remove(group_scores(g, names, l1)[0], keep_ratio) for root, g in groups
    }


def extract_submodel(
    net: nn.Module, keep_ratio: float, example_input: Tensor
) -> tuple[nn.Module, dict[str, Tensor], dict[str, list[int]]]:
    """The sub-model keeping, in every unit group, the ``keep_ratio`` strongest units by L1.

    A group is a Conv/Linear layer's output units with everything coupled to them (found by
    Torch-Pruning's dependency graph on ``example_input`` of shape ``(B, *input_shape)``); see
    :func:`l1_removal`. The output layer keeps all units, the first layer all input channels.

    Returns ``(sub, index, removed)``: ``sub`` and ``index`` as
    :func:`flip.pruning.compaction.compact` gives them (``index[name]``: int64 of ``sub``'s
    shape, the flat position of each entry in ``net``'s tensor ``name``); ``removed`` maps each
    group's root layer name to the removed unit indices.
    Source: ALGORITHMS.md §3.2 (Wu, Song & Zeng 2023). Raises ``ValueError`` unless
    0 < keep_ratio ≤ 1.
    """
    removed = l1_removal(net, keep_ratio, example_input)
    sub, index = compact(net, removed, example_input)
    return sub, index, removed


def scatter_submodel(
    full: Mapping[str, Tensor], sub: Mapping[str, Tensor], index: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Full-size tensors: a copy of ``full[name]`` with ``sub[name]`` written at the positions
    ``index[name]`` (from :func:`extract_submodel`); entries the sub-model does not hold keep
    their value in ``full`` (EFLPrune's parameter reuse, §3.2). Names missing from ``index``
    (integer buffers) take ``sub``'s value. Same keys as ``full``; shapes and devices of
    ``full``."""
    return expand(full, sub, index)
