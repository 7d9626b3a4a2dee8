"""Physically smaller sub-models of the global network and the way back (ALGORITHMS.md §3.2).

Units (filters of a Conv, neurons of a Linear) are ranked by the L1 norm of their fan-in
weights; the weakest are removed with Torch-Pruning's ``DependencyGraph`` (the same groups as
:mod:`flip.pruning.structured`: coupled consumers, batch norm, flattened feature blocks,
residual sums), on a copy of the network. Every tensor of the copy is first filled with the
flat positions of its entries, so after pruning the copy tells exactly which entry of the
global tensor each sub-model entry is: the map the server uses to write returned weights back.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import Tensor, nn

from flip.pruning.structured import UNIT_LAYERS, output_layer


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


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    """Parameters and floating buffers (batch-norm statistics) by name."""
    out = dict(model.named_parameters())
    out.update((n, b) for n, b in model.named_buffers() if b.is_floating_point())
    return out


def extract_submodel(
    net: nn.Module, keep_ratio: float, example_input: Tensor
) -> tuple[nn.Module, dict[str, Tensor], dict[str, list[int]]]:
    """The sub-model keeping, in every unit group, the ``keep_ratio`` strongest units by L1.

    A group is a Conv/Linear layer's output units with everything coupled to them (found by
    Torch-Pruning's dependency graph on ``example_input`` of shape ``(B, *input_shape)``); a
    unit's score is the sum of :func:`l1_unit_scores` over the group's producer layers. The
    output layer keeps all units, the first layer all input channels.

    Returns ``(sub, index, removed)``: ``sub`` is a new dense float32 network on ``net``'s
    device whose parameters and buffers hold ``net``'s values at the kept positions (integer
    buffers such as ``num_batches_tracked`` are copied); ``index[name]`` is an int64 tensor of
    ``sub``'s shape giving, for each entry, its flat position in ``net``'s tensor ``name``;
    ``removed`` maps each group's root layer name to the removed unit indices.
    Source: ALGORITHMS.md §3.2 (Wu, Song & Zeng 2023). Raises ``ValueError`` unless
    0 < keep_ratio ≤ 1.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    device = next(net.parameters()).device
    tagged = copy.deepcopy(net).to(device=device, dtype=torch.float64).eval()
    example = example_input.to(device)
    if example.is_floating_point():  # token ids (an Embedding's input) stay integers
        example = example.double()
    graph = tp.DependencyGraph().build_dependency(tagged, example_inputs=example)
    names = {m: n for n, m in tagged.named_modules()}
    real = dict(net.named_parameters())
    plans = []
    for group in graph.get_all_groups(
        ignored_layers=[output_layer(tagged)], root_module_types=list(UNIT_LAYERS)
    ):
        scores = None
        for item in group:
            mod, handler = item.dep.target.module, item.dep.handler
            if isinstance(mod, UNIT_LAYERS) and handler.__name__ == "prune_out_channels":
                s = l1_unit_scores(real[f"{names[mod]}.weight"])[list(item.idxs)]
                scores = s if scores is None else scores + s
        root = group[0].dep
        plans.append((names[root.target.module], root.target.module, root.handler, scores))
    removed = {}
    with torch.no_grad():  # tag every entry with its flat position (exact in float64)
        for t in _tensors(tagged).values():
            t.copy_(torch.arange(t.numel(), dtype=torch.float64, device=device).view_as(t))
    for name, module, handler, scores in plans:
        idxs = units_to_remove(scores, keep_ratio)
        removed[name] = idxs
        if idxs:
            graph.get_pruning_group(module, handler, idxs).prune()
    full = _tensors(net)
    index = {n: t.detach().round().long() for n, t in _tensors(tagged).items()}
    sub = tagged.float()
    with torch.no_grad():
        for n, t in _tensors(sub).items():
            t.copy_(full[n].detach().reshape(-1)[index[n].reshape(-1)].view_as(t))
        for n, b in net.named_buffers():
            if not b.is_floating_point():
                sub.get_buffer(n).copy_(b)
    sub.train(net.training)
    return sub, index, removed


@torch.no_grad()
def scatter_submodel(
    full: Mapping[str, Tensor], sub: Mapping[str, Tensor], index: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Full-size tensors: a copy of ``full[name]`` with ``sub[name]`` written at the positions
    ``index[name]`` (from :func:`extract_submodel`); entries the sub-model does not hold keep
    their value in ``full`` (EFLPrune's parameter reuse, §3.2). Names missing from ``index``
    (integer buffers) take ``sub``'s value. Same keys as ``full``; shapes and devices of
    ``full``."""
    out = {}
    for name, f in full.items():
        if name not in index:
            out[name] = sub[name].to(f.device).clone()
            continue
        t = f.detach().clone()
        t.view(-1)[index[name].reshape(-1).to(t.device)] = sub[name].detach().reshape(-1).to(t)
        out[name] = t
    return out


def kept_positions(shape: torch.Size, index: Tensor) -> Tensor:
    """Bool tensor of ``shape``: True where the sub-model holds the entry (``index`` from
    :func:`extract_submodel`)."""
    kept = torch.zeros(shape, dtype=torch.bool, device=index.device)
    kept.view(-1)[index.reshape(-1)] = True
    return kept
