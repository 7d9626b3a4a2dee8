"""Structured units: which layers have them and how Torch-Pruning groups them (ALGORITHMS.md
§2.2). A unit is one output filter of a Conv or one output neuron of a Linear layer (LSTM
hidden units: :mod:`flip.pruning.lstm_units`); the coupling between a unit and every tensor
slice it feeds comes from Torch-Pruning's ``DependencyGraph``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch_pruning as tp
from torch import Tensor, nn

UNIT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
PRUNABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LSTM, nn.Embedding)


def output_layer(model: nn.Module) -> nn.Module:
    """The layer producing the logits: the last Conv/Linear module in registration order.
    Raises ``ValueError`` when the model has none."""
    layers = [m for m in model.modules() if isinstance(m, UNIT_LAYERS)]
    if not layers:
        raise ValueError("model has no Conv or Linear layer")
    return layers[-1]


def unit_groups(
    model: nn.Module, example_input: Tensor
) -> tuple[tp.DependencyGraph, list[tuple[str, object]]]:
    """Torch-Pruning's dependency graph of ``model`` traced on ``example_input`` ``(B, *input
    shape)`` and its Conv/Linear unit groups as ``(root layer name, group)``. A group is one
    layer's output units with everything coupled to them: the consumers' input slices, batch
    norm, channels joined by a residual sum, a flattened feature block, depthwise
    convolutions, squeeze-excitation gates. The output layer is no group (its units are the
    classes) and the first layer's input channels are none."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    names = {m: n for n, m in model.named_modules()}
    groups = graph.get_all_groups(
        ignored_layers=[output_layer(model)], root_module_types=list(UNIT_LAYERS)
    )
    return graph, [(names[g[0].dep.target.module], g) for g in groups]


def group_scores(
    group, names: Mapping[nn.Module, str], layer_scores: Callable[[str, nn.Module], Tensor]
) -> tuple[Tensor, int]:
    """Per-unit score of a group and the number of fan-in entries it sums over.

    ``layer_scores(name, layer)`` gives one float value per output unit of a Conv/Linear
    layer; the result is their sum over the group's producer layers (several when a residual
    sum couples their outputs), float64 ``(units,)``, and the producers' total fan-in per unit
    (``weight[0].numel()`` summed), so that a sum score divided by it is a mean."""
    total, fan_in = None, 0
    for item in group:
        mod, handler = item.dep.target.module, item.dep.handler
        if isinstance(mod, UNIT_LAYERS) and handler.__name__ == "prune_out_channels":
            s = layer_scores(names[mod], mod).double()[list(item.idxs)]
            total = s if total is None else total + s
            fan_in += mod.weight[0].numel()
    return total, fan_in
