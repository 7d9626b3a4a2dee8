"""AutoFLIP's hybrid mask and mask helpers (ALGORITHMS.md §2.2, §2.3)."""

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flip.pruning.compaction import removal_masks
from flip.pruning.structured import prunable_names, removal_at, unit_scores
from flip.pruning.threshold import global_threshold, unstructured_mask


@dataclass
class HybridMask:
    """AutoFLIP's mask at one threshold (ALGORITHMS.md §2.2): ``masks`` (bool per parameter,
    True = kept), ``tau`` (τ), ``removal`` (the whole units taken out, ``{group: [units]}``),
    ``unstructured`` (``1[G > τ]`` on the prunable tensors alone, before unit removal)."""

    masks: dict[str, Tensor]
    tau: float
    removal: dict[str, list[int]]
    unstructured: dict[str, Tensor]

    def density(self) -> float:
        """Kept entries / all parameter entries of the hybrid mask."""
        return kept_fraction(self.masks, self.masks)

    def unstructured_density(self) -> float:
        """Kept entries / all parameter entries under the unstructured mask alone (the
        tensors that are not prunable count as kept)."""
        return kept_fraction(self.masks, self.unstructured)


def kept_fraction(params: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> float:
    """Σ nnz(masks) + Σ numel of the tensors of ``params`` without a mask, over Σ numel."""
    total = sum(p.numel() for p in params.values())
    kept = sum(int(masks[n].sum()) if n in masks else p.numel() for n, p in params.items())
    return kept / total


def hybrid_parts(
    model: nn.Module,
    guidance: Mapping[str, Tensor],
    tp: float,
    example_input: Tensor,
    structured: bool = True,
    scope: str = "weights",
    scores: Mapping[str, Tensor] | None = None,
) -> HybridMask:
    """The hybrid mask at threshold Tp with its parts (:class:`HybridMask`); ``scores``: the
    unit scores (:func:`flip.pruning.structured.unit_scores`) when already computed (a search
    over Tp reuses them). See :func:`hybrid_mask`."""
    names = prunable_names(model, scope)
    tau = global_threshold(guidance, names, tp)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    loose = unstructured_mask(guidance, names, tau)
    for n, m in loose.items():
        masks[n] &= m.to(masks[n].device)
    removal = {}
    if structured and tau != float("-inf"):
        if scores is None:
            scores = unit_scores(model, guidance, example_input)
        removal = removal_at(scores, tau)
        if removal:
            for n, m in removal_masks(model, removal, example_input).items():
                masks[n] &= m
    return HybridMask(masks, tau, removal, loose)


def hybrid_mask(
    model: nn.Module,
    guidance: Mapping[str, Tensor],
    tp: float,
    example_input: Tensor,
    structured: bool = True,
    scope: str = "weights",
) -> tuple[dict[str, Tensor], float]:
    """Hybrid mask from the guidance matrix and the threshold Tp (ALGORITHMS.md §2.2).

    Returns ``(masks, tau)``: one bool tensor per parameter of ``model`` (its shape; True =
    kept), the unstructured mask ``1[G > τ]`` on the prunable tensors AND, when ``structured``,
    the removal of every unit whose mean G ≤ τ; τ is the global Tp-quantile of the prunable
    tensors' G. Tp = 0 keeps everything. Raises ``ConfigError`` for Tp outside [0, 1) or a bad
    ``scope``.
    """
    parts = hybrid_parts(model, guidance, tp, example_input, structured, scope)
    return parts.masks, parts.tau


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, Tensor] | None) -> None:
    """θ ← θ ⊙ M in place for every parameter that has a mask (ALGORITHMS.md §2.3)."""
    if not masks:
        return
    for n, p in model.named_parameters():
        m = masks.get(n)
        if m is not None:
            p.mul_(m.to(device=p.device, dtype=p.dtype))


def mask_density(masks: Mapping[str, Tensor]) -> float:
    """Fraction of kept entries over all masked tensors (1 − sparsity)."""
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    return kept / total if total else 1.0


def mask_jaccard(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    """Jaccard index of two masks' kept entries, |a ∧ b| / |a ∨ b| over all their tensors
    (bool, same keys and shapes); 1.0 when both keep nothing. Used to measure how far an
    attack moved AutoFLIP's mask from the clean one (docs/robust-guidance.md). Raises
    ``KeyError`` when ``b`` lacks a tensor of ``a``."""
    both = sum(int((a[n] & b[n].to(a[n].device)).sum()) for n in a)
    either = sum(int((a[n] | b[n].to(a[n].device)).sum()) for n in a)
    return both / either if either else 1.0
