"""AutoFLIP's guidance matrix from the federated loss exploration (ALGORITHMS.md §2.1)."""

from collections.abc import Mapping

import torch
from torch import Tensor


def squared_displacement(
    start: Mapping[str, Tensor], end: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """D_k = (θ_k − θ_0)², elementwise, one tensor per parameter (ALGORITHMS.md §2.1).

    ``start`` and ``end`` map parameter names to tensors of equal shapes; the result has the
    same keys and shapes, float32 on the CPU. Raises ``KeyError`` when ``end`` lacks a name.
    """
    return {
        n: (end[n].detach().float().cpu() - t.detach().float().cpu()) ** 2 for n, t in start.items()
    }


def guidance_matrix(mean_displacement: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Guidance matrix G from the explorers' mean squared displacement (ALGORITHMS.md §2.1).

    ``mean_displacement``: D = mean_k D_k (unweighted; the caller accumulates it, so memory
    stays at one model however many explorers). Per tensor min-max normalisation
    G_t = (D_t − min D_t) / (max D_t − min D_t) ∈ [0, 1]; a constant tensor (max = min) gets
    G_t = 1 everywhere (keep all), never NaN. Same keys and shapes as the input.
    """
    out = {}
    for name, d in mean_displacement.items():
        lo, hi = d.min(), d.max()
        out[name] = torch.ones_like(d) if hi <= lo else (d - lo) / (hi - lo)
    return out
