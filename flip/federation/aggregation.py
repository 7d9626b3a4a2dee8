"""Server-side aggregation: the sample-weighted pseudo-gradient (ALGORITHMS.md §1, step 3)."""

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor


def client_weights(num_samples: Sequence[int]) -> list[float]:
    """w_k = n_k / Σ_j n_j. Raises ``ValueError`` if the total is 0."""
    total = sum(num_samples)
    if total <= 0:
        raise ValueError("clients hold no training samples: cannot weight their updates")
    return [n / total for n in num_samples]


def pseudo_gradient(
    global_params: Mapping[str, Tensor],
    client_params: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
) -> dict[str, Tensor]:
    """Δ = Σ_k w_k · (θ − θ_k), per parameter tensor, same shapes and device as θ.

    Source: ALGORITHMS.md §1 step 3 (FedOpt, Reddi et al. 2021). The server optimizer steps
    on Δ as a gradient; plain FedAvg is SGD(lr=1), giving θ ← Σ_k w_k θ_k.
    """
    out = {}
    for name, theta in global_params.items():
        acc = torch.zeros_like(theta)
        for w, params in zip(weights, client_params, strict=True):
            acc.add_(theta - params[name].to(theta.device), alpha=w)
        out[name] = acc
    return out


def average_buffers(
    client_buffers: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """Buffers (batch-norm running statistics) are not trained by the server optimizer: floating
    buffers become the weighted mean Σ_k w_k b_k, integer ones (batch counters) the maximum."""
    out = {}
    for name, first in client_buffers[0].items():
        if first.is_floating_point():
            out[name] = sum(w * b[name] for w, b in zip(weights, client_buffers, strict=True))
        else:
            out[name] = torch.stack([b[name] for b in client_buffers]).max(0).values
    return out


def build_server_optimizer(factory: Callable, params) -> torch.optim.Optimizer:
    """The server optimizer on θ, with momentum buffers set to zero before the first step.

    torch's SGD seeds its momentum buffer with the first gradient; the paper's EMA starts from
    m = 0 (m ← β·m + (1−β)·Δ, so the first step moves (1−β)·Δ). With the buffers zeroed,
    ``SGD(lr=1, momentum=β, dampening=β)`` is that EMA exactly (ALGORITHMS.md §1 step 4).
    """
    opt = factory(params)
    for group in opt.param_groups:
        if group.get("momentum", 0):
            for p in group["params"]:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(p)
    return opt
