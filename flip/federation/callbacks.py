"""Lightning callbacks an algorithm hands to its clients (``Algorithm.client_callbacks``).

A callback with a ``client_extras()`` method reports what it collected: the round puts that
dict into the client's :class:`~flip.federation.server.ClientUpdate` as ``extras``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


class GradientSum(L.Callback):
    """Σ over a client's local optimizer steps of the raw gradient g of every parameter,
    including masked (pruned) positions: it reads ``p.grad`` in ``on_before_optimizer_step``,
    which Lightning calls on callbacks before the module's own hook zeroes masked gradients.

    ``squared=True`` accumulates Σ g² instead (PruneFL's initial pruning, ALGORITHMS.md §3.1
    step 1). Keys are the names of ``pl_module.net``'s parameters; tensors have the parameter's
    shape, float32, on its device. ``client_extras()`` returns ``{"grad_sum": {...}}`` (or
    ``"grad_sq_sum"``) and the number of steps under ``"grad_steps"``.
    """

    def __init__(self, squared: bool = False):
        self.squared = squared
        self.sums: dict[str, Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        for name, p in pl_module.net.named_parameters():
            if p.grad is None:
                continue
            g = p.grad.detach().float()
            g = g * g if self.squared else g
            if name in self.sums:
                self.sums[name].add_(g)
            else:
                self.sums[name] = g.clone()
        self.steps += 1

    def reset(self) -> None:
        """Forget what was accumulated (PruneFL resets importance after a reconfiguration)."""
        self.sums = {}
        self.steps = 0

    def client_extras(self) -> dict:
        key = "grad_sq_sum" if self.squared else "grad_sum"
        return {key: self.sums, "grad_steps": self.steps}
