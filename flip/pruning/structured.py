"""Structured units (filters, neurons) and their removal as masks (ALGORITHMS.md §2.2).

The coupling between a unit and every tensor slice it feeds (the next layer's input channels,
batch-norm parameters, channels joined by a residual sum, a flattened feature block) comes from
Torch-Pruning's ``DependencyGraph``, so the same groups serve masking here and physical
compaction later.
"""

from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import Tensor, nn

UNIT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
PRUNABLE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LSTM, nn.Embedding)


def prunable_names(model: nn.Module, scope: str = "weights") -> list[str]:
    """Names of the parameters the unstructured mask may prune (ALGORITHMS.md §2.2).

    ``scope='weights'``: the weights of Conv, Linear, LSTM (``weight_ih_l*``/``weight_hh_l*``)
    and Embedding layers; biases and normalisation parameters are not pruned on their own.
    ``scope='all'``: every parameter, as the released AutoFLIP code did.
    Raises ``ConfigError`` (field ``pruning.scope``) for another value.
    """
    from flip.errors import ConfigError

    if scope == "all":
        return [n for n, _ in model.named_parameters()]
    if scope != "weights":
        raise ConfigError("pruning.scope", scope, "weights, all")
    names = []
    for mname, m in model.named_modules():
        if isinstance(m, PRUNABLE_LAYERS):
            prefix = f"{mname}." if mname else ""
            names += [prefix + p for p, _ in m.named_parameters(recurse=False) if "weight" in p]
    return names


def output_layer(model: nn.Module) -> nn.Module:
    """The layer producing the logits: the last Conv/Linear module in registration order."""
    layers = [m for m in model.modules() if isinstance(m, UNIT_LAYERS)]
    if not layers:
        raise ValueError("model has no Conv or Linear layer")
    return layers[-1]


def _unit_scores(group, guidance: Mapping[str, Tensor], names: dict[nn.Module, str]) -> Tensor:
    """Mean G over the fan-in weights of each unit of a group; coupled producers (channels
    joined by a residual sum) pool their fan-in weights. Shape ``(units,)``."""
    total, count = None, 0
    for item in group:
        mod, handler = item.dep.target.module, item.dep.handler
        if isinstance(mod, UNIT_LAYERS) and handler.__name__ == "prune_out_channels":
            g = guidance[f"{names[mod]}.weight"].reshape(mod.weight.shape[0], -1)[item.idxs]
            s = g.sum(1).double()
            total = s if total is None else total + s
            count += g.shape[1]
    return total / count


def _zero_slices(group, masks: dict[str, Tensor], names: dict[nn.Module, str]) -> None:
    """Zero, in ``masks``, every slice the removal group touches: producers' output rows and
    biases, consumers' input columns, normalisation weights and biases."""
    for item in group:
        mod, fn, idx = item.dep.target.module, item.dep.handler.__name__, item.idxs
        if mod not in names:
            continue
        idx = torch.as_tensor(idx, dtype=torch.long)
        prefix = names[mod]
        if fn == "prune_out_channels":
            for p in ("weight", "bias"):
                key = f"{prefix}.{p}"
                if key in masks:
                    masks[key][idx] = False
        elif fn == "prune_in_channels" and isinstance(mod, UNIT_LAYERS):
            masks[f"{prefix}.weight"][:, idx] = False


def structured_mask(
    model: nn.Module, guidance: Mapping[str, Tensor], tau: float, example_input: Tensor
) -> dict[str, Tensor]:
    """Bool masks (one per parameter, its shape) removing every unit whose mean G ≤ τ.

    A unit is one output filter of a Conv or one output neuron of a Linear layer; removing it
    zeroes its weights, bias, normalisation parameters and the matching input slice of every
    consumer. Units of the output layer are never removed and the first layer's input channels
    are not units. ``example_input``: one batch ``(B, *input_shape)`` for tracing.
    Source: ALGORITHMS.md §2.2. (LSTM hidden units come with compaction; see issue 3.)
    """
    names = {m: n for n, m in model.named_modules()}
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    if tau == float("-inf"):
        return masks
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
    groups = graph.get_all_groups(
        ignored_layers=[output_layer(model)], root_module_types=list(UNIT_LAYERS)
    )
    for group in groups:
        scores = _unit_scores(group, guidance, names)
        removed = torch.nonzero(scores <= tau).flatten().tolist()
        if not removed:
            continue
        if len(removed) == len(scores):  # keep the strongest unit so the layer stays connected
            removed.remove(int(scores.argmax()))
        root = group[0].dep
        _zero_slices(
            graph.get_pruning_group(root.target.module, root.handler, removed), masks, names
        )
    return masks
