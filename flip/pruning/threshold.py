"""The global Tp-quantile threshold and AutoFLIP's unstructured mask (ALGORITHMS.md §2.2)."""

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from flip.errors import ConfigError


def global_threshold(guidance: Mapping[str, Tensor], names: Sequence[str], tp: float) -> float:
    """τ, the Tp-quantile of the concatenated guidance values of the tensors ``names``.

    τ is the k-th smallest value with k = ⌊Tp·N⌋ (N entries in all), so ``1[G > τ]`` prunes
    exactly k entries when no other entry ties with τ, and every entry equal to τ when some do.
    Tp = 0 gives τ = −∞ (nothing pruned). Exact at any size: ``torch.kthvalue`` in float64,
    not ``torch.quantile`` (limited to 2^24 elements). Source: ALGORITHMS.md §2.2.
    Raises ``ConfigError`` (field ``pruning.threshold``) unless 0 ≤ Tp < 1.
    """
    if not 0.0 <= tp < 1.0:
        raise ConfigError("pruning.threshold", tp, "a fraction Tp with 0 <= Tp < 1")
    flat = torch.cat([guidance[n].detach().reshape(-1).double().cpu() for n in names])
    k = int(tp * flat.numel())
    if k == 0:
        return float("-inf")
    return float(torch.kthvalue(flat, k).values)


def unstructured_mask(
    guidance: Mapping[str, Tensor], names: Sequence[str], tau: float
) -> dict[str, Tensor]:
    """M_t = 1[G_t > τ] for each tensor in ``names``: bool tensors of G_t's shape (§2.2)."""
    return {n: guidance[n] > tau for n in names}
