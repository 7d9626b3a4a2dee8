"""Which entries AutoFLIP may prune and which structured units it removes (ALGORITHMS.md §2.2).

Units and their coupling come from :mod:`flip.pruning.units` (Torch-Pruning's
``DependencyGraph``) and :mod:`flip.pruning.lstm_units`; a removal's mask is the set of entries
the physical compaction (:mod:`flip.pruning.compaction`) drops, so masking and compaction agree
by construction.
"""

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from flip.pruning.compaction import removal_masks
from flip.pruning.units import PRUNABLE_LAYERS, group_scores, output_layer, unit_groups

__all__ = ["output_layer", "prunable_names", "structured_mask", "structured_removal"]


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


def unit_scores(
    model: nn.Module, guidance: Mapping[str, Tensor], example_input: Tensor
) -> dict[str, Tensor]:
    """The mean G over each unit's fan-in weights, per unit group (ALGORITHMS.md §2.2):
    ``{group key: float tensor (units,)}``.

    Conv/Linear groups come from :func:`flip.pruning.units.unit_groups` (keyed by root layer
    name; coupled producers, e.g. channels joined by a residual sum, pool their fan-in G);
    LSTM layers from :func:`flip.pruning.lstm_units.lstm_unit_scores` (keyed
    ``"{lstm}.l{k}"``). Units of the output layer are no units here, nor the first layer's
    input channels. ``example_input``: one batch ``(B, *input_shape)`` for tracing.
    """
    names = {m: n for n, m in model.named_modules()}

    def fan_in_sum(name: str, layer: nn.Module) -> Tensor:
        return guidance[f"{name}.weight"].reshape(layer.weight.shape[0], -1).sum(1)

    scores = {}
    for root, group in unit_groups(model, example_input)[1]:
        total, fan_in = group_scores(group, names, fan_in_sum)
        scores[root] = total / fan_in
    if any(isinstance(m, nn.LSTM) for m in model.modules()):
        from flip.pruning.lstm_units import lstm_unit_scores

        scores.update(lstm_unit_scores(model, guidance))
    return scores


def removal_at(scores: Mapping[str, Tensor], tau: float) -> dict[str, list[int]]:
    """The units of ``scores`` (:func:`unit_scores`) whose score is ≤ τ, as a removal of
    :mod:`flip.pruning.compaction`: ``{group key: sorted unit indices}``. A group whose units
    would all go keeps its strongest one, so the layer stays connected. τ = −∞ (Tp = 0)
    removes nothing."""
    if tau == float("-inf"):
        return {}
    removal = {}
    for key, s in scores.items():
        removed = torch.nonzero(s.cpu() <= tau).flatten().tolist()
        if len(removed) == len(s):  # keep the strongest unit so the layer stays connected
            removed.remove(int(s.argmax()))
        if removed:
            removal[key] = removed
    return removal


def structured_removal(
    model: nn.Module, guidance: Mapping[str, Tensor], tau: float, example_input: Tensor
) -> dict[str, list[int]]:
    """The units whose mean G over their fan-in weights is ≤ τ (ALGORITHMS.md §2.2):
    :func:`removal_at` of :func:`unit_scores`. τ = −∞ (Tp = 0) removes nothing."""
    if tau == float("-inf"):
        return {}
    return removal_at(unit_scores(model, guidance, example_input), tau)


def structured_mask(
    model: nn.Module, guidance: Mapping[str, Tensor], tau: float, example_input: Tensor
) -> dict[str, Tensor]:
    """Bool masks (one per parameter, its shape; True = kept) removing every unit whose mean
    G ≤ τ (:func:`structured_removal`): its weights, bias, normalisation parameters and the
    matching input slice of every consumer are zero, exactly the entries the compact network
    (:func:`flip.pruning.compaction.compact`) drops. Source: ALGORITHMS.md §2.2."""
    removal = structured_removal(model, guidance, tau, example_input)
    if not removal:
        return {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    return removal_masks(model, removal, example_input)
