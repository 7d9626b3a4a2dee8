"""AutoFLIP's hybrid mask and mask helpers (ALGORITHMS.md §2.2, §2.3)."""

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from flip.pruning.structured import prunable_names, structured_mask
from flip.pruning.threshold import global_threshold, unstructured_mask


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
    names = prunable_names(model, scope)
    tau = global_threshold(guidance, names, tp)
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    for n, m in unstructured_mask(guidance, names, tau).items():
        masks[n] &= m.to(masks[n].device)
    if structured:
        for n, m in structured_mask(model, guidance, tau, example_input).items():
            masks[n] &= m
    return masks, tau


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
