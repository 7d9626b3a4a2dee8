"""PR-FL's parts that are plain computations (ASYNC.md §3): the buffered MaskFedAvg and the
buffer average, the importance A, the first stage's densities, and the client callback that
reports the last minibatch gradient."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor

from flip.federation.callbacks import register_callback

LAST_GRADIENT = "prfl_last_gradient"
"""The callback kind of :class:`LastGradient` in a ``CallbackSpec``."""


@register_callback(LAST_GRADIENT)
class LastGradient(L.Callback):
    """The square of the client's last minibatch gradient, masked as it trains (entries its
    mask prunes are 0: they were not observed, ASYNC.md §3.4), read once when training ends:
    the gradients of the last step are still in ``p.grad`` then (Lightning zeroes them before
    the next backward), already masked by the client module. ``client_extras()``:
    ``{"last_grad_sq": {name: float32 tensor of the parameter's shape}}``."""

    def __init__(self):
        self.last: dict[str, Tensor] = {}

    @torch.no_grad()
    def on_train_end(self, trainer, pl_module) -> None:
        masks = getattr(pl_module, "masks", None) or {}
        for name, p in pl_module.net.named_parameters():
            if p.grad is None:
                continue
            g = p.grad.detach().float()
            if name in masks:  # the module masked it already; kept for any other module
                g = g * masks[name].to(g)
            self.last[name] = g * g

    def client_extras(self, module=None) -> dict:
        return {"last_grad_sq": self.last}


@torch.no_grad()
def mask_fedavg(
    server: Mapping[str, Tensor], buffers: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> None:
    """PR-FL's MaskFedAvg, in place on ``server`` (W by name), ASYNC.md §3.3:
    W[k] ← Σ_i w_i B_i[k] / Σ_i w_i 1[B_i[k] ≠ 0] where the numerator is non-zero, else W[k]
    unchanged; ``weights``: w_i = c_i n_i (c_i the staleness share, n_i the samples client i
    processed), ``buffers``: the B_i (same names and shapes as ``server``). No server
    learning rate. Entries no buffer holds (all pruned) keep the server's value."""
    c = torch.tensor(list(weights), dtype=torch.float64)
    for name, w in server.items():
        x = torch.stack([b[name].reshape(-1).to(w.device, torch.float64) for b in buffers])
        num = (c.to(x.device) @ x).view_as(w)  # in float64, one product per tensor
        den = (c.to(x.device) @ (x != 0).to(torch.float64)).view_as(w)
        keep = num != 0
        w[keep] = (num[keep] / den[keep]).to(w.dtype)


@torch.no_grad()
def buffer_average(
    buffers: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """Σ_i w_i B_i / Σ_i w_i, zeros included (the model PR-FL's paper plots, ASYNC.md §3.8)."""
    total = float(sum(weights))
    out = {}
    for name, first in buffers[0].items():
        acc = torch.zeros_like(first, dtype=torch.float64)
        for b, c in zip(buffers, weights, strict=True):
            acc.add_(b[name].to(acc), alpha=c / total)
        out[name] = acc.to(first.dtype)
    return out


class Importance:
    """PR-FL's importance A of the prunable weights (ASYNC.md §3.4).

    :meth:`add` per arrived update: g = (last minibatch gradient)² × samples, min-max
    normalised over all its parameters; :meth:`refresh` at each control interval: the mean of
    the nonzero g since the last interval overwrites those entries of A; :meth:`values`: A,
    where entries never observed get g_min·|W| (g_min: the smallest nonzero A observed; 1 when
    none is). Only updates that arrived count (the code also used in-flight ones).
    """

    def __init__(self, weights: Mapping[str, Tensor]):
        self.A = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in weights.items()}
        self.observed = {n: torch.zeros_like(w, dtype=torch.bool) for n, w in weights.items()}
        self.sum = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in weights.items()}
        self.count = {n: torch.zeros_like(w, dtype=torch.int32) for n, w in weights.items()}

    @torch.no_grad()
    def add(self, grad_sq: Mapping[str, Tensor], samples: int) -> None:
        g = {n: t.float() * samples for n, t in grad_sq.items()}
        if not g:
            return
        lo = min(float(t.min()) for t in g.values())
        hi = max(float(t.max()) for t in g.values())
        if hi <= lo:  # a constant gradient says nothing about importance
            return
        for name in self.A:
            if name in g:
                x = (g[name].to(self.sum[name]) - lo) / (hi - lo)
                self.sum[name].add_(x)
                self.count[name].add_((x != 0).to(torch.int32))

    @torch.no_grad()
    def refresh(self) -> None:
        for name, a in self.A.items():
            seen = self.count[name] > 0
            a[seen] = self.sum[name][seen] / self.count[name][seen]
            self.observed[name] |= seen
            self.sum[name].zero_()
            self.count[name].zero_()

    @torch.no_grad()
    def values(self, weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
        seen = [a[self.observed[n] & (a > 0)] for n, a in self.A.items()]
        seen = [s for s in seen if s.numel()]
        g_min = min(float(s.min()) for s in seen) if seen else 1.0
        return {n: torch.where(self.observed[n], a, g_min * weights[n].detach().abs().float())
                for n, a in self.A.items()}

    def state_dict(self) -> dict:
        return {"A": self.A, "observed": self.observed, "sum": self.sum, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        for key in ("A", "observed", "sum", "count"):
            setattr(self, key, dict(state[key]))


def first_stage_densities(
    arrival_times: Sequence[Sequence[float]], last: int, min_density: float
) -> list[float]:
    """ρ_i = clip(min_j t̄_j / t̄_i, ρ_min, 1) (ASYNC.md §3.2, the paper's formula; the code's
    version has a precedence bug): t̄_i the mean of client i's last ≤ ``last`` inter-arrival
    times (seconds, the first measured from t = 0). A client that never arrived gets ρ_min."""
    means = []
    for times in arrival_times:
        gaps = np.diff([0.0, *times])[-last:]
        means.append(float(np.mean(gaps)) if len(gaps) else np.inf)
    fastest = min(means)
    return [float(np.clip(fastest / m, min_density, 1.0)) if np.isfinite(m) else min_density
            for m in means]
