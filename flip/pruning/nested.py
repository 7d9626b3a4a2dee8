"""PR-FL's nested masks: a magnitude core in every layer plus one importance-per-cost ranking of
all other weights, cut at each client's density (ASYNC.md §3.5), and the residual pieces of
nested masks (§3.7)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from flip.metrics.costs import BYTES_PER_VALUE, transfer_bytes


def core_mask(weight: Tensor, fraction: float) -> Tensor:
    """The ⌈``fraction``·n⌉ largest-|w| entries of one layer's weight (n entries; ties broken
    by position, first wins), as a bool tensor of its shape (ASYNC.md §3.5: κ = 5%)."""
    flat = weight.detach().reshape(-1).abs().double()
    keep = min(flat.numel(), math.ceil(fraction * flat.numel()))
    core = torch.zeros(flat.numel(), dtype=torch.bool, device=weight.device)
    core[torch.sort(flat, descending=True, stable=True).indices[:keep]] = True
    return core.view_as(weight)


def nested_masks(
    weights: Mapping[str, Tensor],
    importance: Mapping[str, Tensor],
    costs: Mapping[str, float],
    densities: Sequence[float],
    core_fraction: float = 0.05,
) -> list[dict[str, Tensor]]:
    """One mask per density in ``densities``, nested: ρ_a < ρ_b ⇒ m_a ⊆ m_b (ASYNC.md §3.5).

    ``weights``: the prunable tensors W (biases are never pruned); ``importance``: A, same
    shapes (≥ 0); ``costs``: c_l = c_comm + c_comp,l, seconds one parameter of each tensor
    costs (:func:`flip.metrics.time_model.parameter_times`). Every mask holds each layer's
    :func:`core_mask` (``core_fraction`` κ of its entries by |W|); all other entries are
    ranked across layers by A[k]/c_l, descending (ties by layer order, then position), and
    the mask of density ρ adds the first ⌊ρ·N⌋ − |core| of them (N: prunable entries; never
    fewer than the core). Equal densities get the same mask object. Returns bool tensors
    keyed like ``weights``.
    """
    names = list(weights)
    cores = {n: core_mask(weights[n], core_fraction) for n in names}
    sizes = [weights[n].numel() for n in names]
    total = sum(sizes)
    score = torch.cat([
        (importance[n].detach().reshape(-1).double() / costs[n]).cpu() for n in names
    ])
    in_core = torch.cat([cores[n].reshape(-1).cpu() for n in names])
    score[in_core] = -math.inf  # already kept; ranked last, never counted as candidates
    order = torch.sort(score, descending=True, stable=True).indices
    core_size = int(in_core.sum())
    made: dict[float, dict[str, Tensor]] = {}
    for rho in sorted(set(float(d) for d in densities)):
        extra = max(0, min(total - core_size, math.floor(rho * total) - core_size))
        flat = in_core.clone()
        flat[order[:extra]] = True
        parts = flat.split(sizes)
        made[rho] = {n: p.view_as(weights[n]).to(weights[n].device)
                     for n, p in zip(names, parts, strict=True)}
    return [made[float(d)] for d in densities]


def residual_pieces(masks: Sequence[Mapping[str, Tensor]]) -> list[dict[str, Tensor]]:
    """The pieces of nested ``masks`` sorted by density: piece 1 = m_(1), piece k =
    m_(k) ∧ ¬m_(k−1) (ASYNC.md §3.7). W ⊙ m_(k) = Σ_{j≤k} W ⊙ piece_j, the pieces disjoint."""
    out, previous = [], None
    for m in masks:
        out.append(dict(m) if previous is None else {n: m[n] & ~previous[n] for n in m})
        previous = m
    return out


def piece_bytes(params: Mapping[str, Tensor], pieces: Sequence[Mapping[str, Tensor]]) -> list[int]:
    """Bytes of each residual piece (ALGORITHMS.md §4): piece 1 is the first sub-model's
    download (kept values at 4 B plus a bitmask per pruned tensor, unpruned tensors dense);
    a later piece carries only the prunable entries it adds, 4 B each, plus a bitmask of
    ⌈numel/8⌉ B for every tensor it adds entries to."""
    out = [transfer_bytes(params, dict(pieces[0]))[0]] if pieces else []
    for piece in pieces[1:]:
        nbytes = 0
        for m in piece.values():
            nnz = int(m.sum())
            if nnz:
                nbytes += BYTES_PER_VALUE * nnz + math.ceil(m.numel() / 8)
        out.append(nbytes)
    return out
