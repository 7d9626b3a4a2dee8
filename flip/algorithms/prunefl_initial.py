"""PruneFL's initial pruning on one client, as a client callback (ALGORITHMS.md §3.1 step 1).

The client trains on the same first batches every pass (``ClientJob.batches``); this callback
accumulates z += g² per optimizer step, checks the accuracy on those batches after each pass,
reconfigures the mask every ``interval`` passes once the accuracy is reached and stops when the
density has settled. It is built from a :class:`~flip.federation.callbacks.CallbackSpec`
(kind ``prunefl_initial_pruning``) so any executor can run it; what it leaves behind (the mask,
the values stored for regrowth, its FLOPs and samples) comes back in the update's ``extras``.
"""

from __future__ import annotations

import torch

from flip.federation.callbacks import GradientSum, register_callback
from flip.metrics.costs import FlopsProfile, effective_flops, training_flops
from flip.pruning import mask_density, reconfigure_network

KIND = "prunefl_initial_pruning"
"""The callback kind of :class:`InitialPruning` in a ``CallbackSpec``."""


@register_callback(KIND)
class InitialPruning(GradientSum):
    """Callback of the initial pruning (§3.1 step 1). Args (JSON values):

    ``times``: seconds per parameter of each tensor (:func:`flip.metrics.time_model.
    parameter_times`); ``round_overhead_s``: T0; ``max_decrease``: dtp of every
    reconfiguration; ``interval``: passes between reconfigurations; ``patience`` and
    ``tolerance``: stop after ``patience`` reconfigurations in a row each changing the density by
    at most ``tolerance`` (|d_t/d_{t−1} − 1|); ``accuracy_threshold``: reconfigure only once the
    accuracy on the batches reaches it; ``flops``: the fvcore profile of the network
    (``total``, ``by_layer``, ``other``; FLOPs per sample), for the FLOPs it counts (each pass's
    training at the effective FLOPs of the mask, and the accuracy checks' forward passes).

    ``client_extras(module)``: ``masks`` (bool per prunable tensor), ``stored`` (values of
    pruned entries, for regrowth), ``passes``, ``reconfigurations``, ``flops``, ``samples``.
    """

    def __init__(self, times: dict, round_overhead_s: float, max_decrease: float, interval: int,
                 patience: int, tolerance: float, accuracy_threshold: float, flops: dict):
        super().__init__(squared=True)
        self.times = {k: float(v) for k, v in times.items()}
        self.round_overhead_s = round_overhead_s
        self.max_decrease = max_decrease
        self.interval, self.patience, self.tolerance = interval, patience, tolerance
        self.threshold = accuracy_threshold
        self.profile = FlopsProfile(int(flops["total"]), dict(flops["by_layer"]),
                                    int(flops["other"]))
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.stored: dict[str, torch.Tensor] = {}
        self.passes = 0
        self.samples = 0
        self.flops = 0.0
        self.started: int | None = None
        self.densities: list[float] = []
        self.stable: list[bool] = []

    def on_train_start(self, trainer, module) -> None:
        params = dict(module.net.named_parameters())
        self.stored = {n: torch.zeros_like(params[n]) for n in module.masks}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.passes == 0:  # the fixed batches, seen in the first pass
            self.batches.append((batch[0].detach(), batch[1].detach()))

    def _forward_flops(self, module) -> float:
        return effective_flops(self.profile, module.masks, module.net)

    @torch.no_grad()
    def _accuracy(self, module) -> float:
        net = module.net
        net.eval()
        x = torch.cat([b[0] for b in self.batches]).to(module.device)
        y = torch.cat([b[1] for b in self.batches]).to(module.device)
        pairs = zip(x.split(256), y.split(256), strict=True)
        correct = sum(int((net(xb).argmax(1) == yb).sum()) for xb, yb in pairs)
        net.train()
        self.flops += self._forward_flops(module) * len(y)
        return correct / len(y)

    def on_train_epoch_end(self, trainer, module) -> None:
        n = sum(len(b[1]) for b in self.batches)
        self.passes += 1
        self.samples += n
        self.flops += training_flops(self._forward_flops(module), n)
        if self.started is None and self._accuracy(module) >= self.threshold:
            self.started = self.passes
        if self.started is None or (self.passes - self.started) % self.interval:
            return
        module.masks = reconfigure_network(module.net, module.masks, self.sums, self.times,
                                           self.stored, self.max_decrease, self.round_overhead_s)
        self.reset()
        density = mask_density(module.masks)
        if self.densities:
            self.stable.append(abs(density / self.densities[-1] - 1) <= self.tolerance)
        self.densities.append(density)
        if len(self.stable) >= self.patience and all(self.stable[-self.patience:]):
            trainer.should_stop = True

    def client_extras(self, module=None) -> dict:
        return {
            "masks": module.masks,
            "stored": self.stored,
            "passes": self.passes,
            "reconfigurations": len(self.densities),
            "flops": self.flops,
            "samples": self.samples,
        }
