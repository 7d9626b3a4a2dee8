"""Physical compaction: a network with whole units removed, as a smaller dense network
(ALGORITHMS.md §2.2 "A structured mask must be realisable physically", §3.2).

A *removal* names, for each unit group, the units to take out: ``{key: [unit indices]}``. A
Conv/Linear group (one layer's output filters/neurons with everything coupled to them: the
consumers' input slices, batch norm, channels joined by a residual sum, a flattened feature
block, depthwise convolutions, squeeze-excitation gates) is keyed by its root layer's module
name and comes from Torch-Pruning's ``DependencyGraph``. An LSTM layer ``k`` of the nn.LSTM
named ``name`` is keyed ``f"{name}.l{k}"`` and sliced by :mod:`flip.pruning.lstm_units`
(Torch-Pruning prunes one-layer LSTMs only).

The compact network keeps the dense one's parameter and buffer names; only shapes shrink.
Every tensor of a float64 copy is first filled with the flat positions of its entries, so
after pruning the copy says which dense entry each compact entry is: the ``index`` that maps
values, masks and gradients between the two layouts exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch_pruning as tp
from torch import Tensor, nn

from flip.pruning.units import UNIT_LAYERS

Removal = Mapping[str, Sequence[int]]

REMOVALS_ATTR = "compact_removals"
"""Attribute :func:`compact` sets on its network: the chain of removals it was made with."""


def float_tensors(model: nn.Module) -> dict[str, Tensor]:
    """Parameters and floating buffers (batch-norm statistics) of ``model`` by name."""
    out = dict(model.named_parameters())
    out.update((n, b) for n, b in model.named_buffers() if b.is_floating_point())
    return out


def removal_chain(net: nn.Module) -> list[dict[str, list[int]]]:
    """The removals :func:`compact` applied, in order, to turn a network fresh from its
    constructor into ``net`` (empty for a network never compacted). Replaying them with
    :func:`compact` on a new network of the same constructor rebuilds ``net``'s architecture
    (ENGINES.md §3: how a client in another process rebuilds compact networks and sub-models)."""
    return [dict(r) for r in getattr(net, REMOVALS_ATTR, [])]


def _split(model: nn.Module, removal: Removal) -> tuple[dict, dict]:
    """(Conv/Linear part, LSTM part) of a removal; empty lists are dropped. Raises
    ``KeyError`` for a key naming no unit group."""
    modules = dict(model.named_modules())
    layers, lstm = {}, {}
    for key, idxs in removal.items():
        if not idxs:
            continue
        if isinstance(modules.get(key), UNIT_LAYERS):
            layers[key] = sorted(int(i) for i in idxs)
        elif isinstance(modules.get(key.rpartition(".l")[0]), nn.LSTM):
            lstm[key] = sorted(int(i) for i in idxs)
        else:
            raise KeyError(f"removal key {key!r} names no Conv/Linear layer or LSTM layer")
    return layers, lstm


def _tagged_prune(net: nn.Module, removal: Removal, example_input: Tensor) -> nn.Module:
    """A float64 copy of ``net`` whose entries hold their flat positions, with ``removal``
    pruned out physically."""
    device = next(net.parameters()).device
    tagged = copy.deepcopy(net).to(device=device, dtype=torch.float64).eval()
    layers, lstm = _split(tagged, removal)
    example = example_input.to(device)
    if example.is_floating_point():  # token ids (an Embedding's input) stay integers
        example = example.double()
    if layers:
        graph = tp.DependencyGraph().build_dependency(tagged, example_inputs=example)
    with torch.no_grad():
        for t in float_tensors(tagged).values():
            t.copy_(torch.arange(t.numel(), dtype=torch.float64, device=device).view_as(t))
    modules = dict(tagged.named_modules())
    for name, idxs in layers.items():
        layer = modules[name]
        handler = graph.get_pruner_of_module(layer).prune_out_channels
        graph.get_pruning_group(layer, handler, idxs).prune()
    if lstm:
        from flip.pruning.lstm_units import prune_lstm_units

        prune_lstm_units(tagged, lstm, example_input=example)
    return tagged


def compact(
    net: nn.Module, removal: Removal, example_input: Tensor
) -> tuple[nn.Module, dict[str, Tensor]]:
    """The compact network: ``net`` with the units of ``removal`` physically removed.

    ``example_input``: one batch ``(B, *input_shape)`` for tracing. Returns ``(small,
    index)``: ``small`` is a new float32 network on ``net``'s device with ``net``'s parameter
    and buffer names, holding ``net``'s values at the kept positions (integer buffers such as
    ``num_batches_tracked`` are copied) in ``net``'s training mode; ``index[name]`` is an int64
    tensor of ``small``'s shape giving, for each entry, its flat position in ``net``'s tensor
    ``name``. When ``net`` is masked so that every removed unit is zero (its weights, bias,
    normalisation parameters and every consumer slice, as :func:`removal_masks` gives),
    ``small`` computes the same function (ALGORITHMS.md §2.2). An empty removal gives an
    equal copy. ``small`` records its provenance, ``net``'s :func:`removal_chain` followed by
    ``removal``. Raises ``KeyError`` for a key naming no unit group.
    """
    tagged = _tagged_prune(net, removal, example_input)
    full = float_tensors(net)
    index = {n: t.detach().round().long() for n, t in float_tensors(tagged).items()}
    small = tagged.float()
    with torch.no_grad():
        for n, t in float_tensors(small).items():
            t.copy_(full[n].detach().reshape(-1)[index[n].reshape(-1)].view_as(t))
        for n, b in net.named_buffers():
            if not b.is_floating_point():
                small.get_buffer(n).copy_(b)
    small.train(net.training)
    applied = {k: sorted(int(i) for i in v) for k, v in removal.items() if len(v)}
    setattr(small, REMOVALS_ATTR, [*removal_chain(net), applied])
    return small, index


def kept_positions(shape: torch.Size, index: Tensor) -> Tensor:
    """Bool tensor of the dense ``shape``: True where the compact tensor holds the entry
    (``index`` from :func:`compact`)."""
    kept = torch.zeros(shape, dtype=torch.bool, device=index.device)
    kept.view(-1)[index.reshape(-1)] = True
    return kept


def removal_masks(model: nn.Module, removal: Removal, example_input: Tensor) -> dict[str, Tensor]:
    """Bool masks, one per parameter of ``model`` (its shape, True = kept), zeroing every entry
    the removal takes out: the units' weights and biases, their normalisation parameters and
    the matching input slice of every consumer (ALGORITHMS.md §2.2). They are, by
    construction, the entries :func:`compact` drops."""
    tagged = _tagged_prune(model, removal, example_input)
    held = dict(tagged.named_parameters())
    return {
        n: kept_positions(p.shape, held[n].detach().round().long().to(p.device))
        for n, p in model.named_parameters()
    }


def compact_masks(masks: Mapping[str, Tensor], index: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Dense-layout masks gathered into the compact layout (the unstructured mask that lives
    inside the compact network): ``out[n] = masks[n].flatten()[index[n]]``, shape of
    ``index[n]``."""
    return {
        n: m.reshape(-1)[index[n].reshape(-1).to(m.device)].view(index[n].shape)
        for n, m in masks.items()
    }


@torch.no_grad()
def expand(
    template: Mapping[str, Tensor], small: Mapping[str, Tensor], index: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Dense-layout tensors: a copy of ``template[name]`` with ``small[name]`` written at the
    positions ``index[name]`` (from :func:`compact`); entries the compact network does not
    hold keep their value in ``template`` (zeros for an export of a masked model, the
    previous global values for EFLPrune's parameter reuse, §3.2). Names missing from
    ``index`` (integer buffers) take ``small``'s value. Same keys, shapes and devices as
    ``template``."""
    out = {}
    for name, f in template.items():
        if name not in index:
            out[name] = small[name].to(f.device).clone()
            continue
        t = f.detach().clone()
        t.view(-1)[index[name].reshape(-1).to(t.device)] = small[name].detach().reshape(-1).to(t)
        out[name] = t
    return out


class CompactLayout:
    """How a compact global network maps onto the dense one (ALGORITHMS.md §2.2).

    ``removal``: the units compacted away (``{group key: [unit indices]}``); ``index``: per
    tensor, the dense flat position of each compact entry (:func:`compact`); ``template``: the
    dense state dict with removed parameters 0 and removed buffers at their values when
    compacted (CPU). Built by :meth:`build`; :meth:`dense_state_dict` writes a compact state
    back into the dense layout, :meth:`masks` gathers dense masks into the compact one.
    """

    def __init__(self, removal: Removal, index: dict[str, Tensor], template: dict[str, Tensor]):
        self.removal = {k: [int(i) for i in v] for k, v in removal.items()}
        self.index = index
        self.template = template

    @classmethod
    def build(
        cls, net: nn.Module, removal: Removal, example_input: Tensor
    ) -> tuple[nn.Module, CompactLayout]:
        """``(compact network, layout)`` of ``net`` without the units of ``removal``; the
        removed units must be zero under the run's mask so the function is unchanged."""
        small, index = compact(net, removal, example_input)
        params = dict(net.named_parameters())
        template = {  # removed parameters are 0; removed buffers keep their values
            n: (torch.zeros_like(t) if n in params else t.detach().clone()).cpu()
            for n, t in net.state_dict().items()
        }
        return small, cls(removal, index, template)

    def dense_state_dict(self, small: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The compact network's state ``small`` at its dense positions, zeros for removed
        parameters (the dense layout, for export and comparison)."""
        return expand(self.template, small, self.index)

    def masks(self, dense_masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``dense_masks`` gathered into the compact layout (:func:`compact_masks`)."""
        return compact_masks(dense_masks, self.index)
