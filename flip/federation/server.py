"""The federated round every algorithm shares: FedAvg with a server optimizer (ALGORITHMS.md §1)."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from flip.federation.aggregation import average_buffers, client_weights, pseudo_gradient
from flip.federation.checkpoint import set_rng_state
from flip.federation.client import ClientModule
from flip.federation.failures import collect_updates, keep_finite, snapshot
from flip.federation.progress import RoundProgress
from flip.federation.recorder import RunRecorder
from flip.metrics.costs import (
    GB,
    effective_flops,
    param_counts,
    profile_flops,
    training_flops,
    transfer_bytes,
)
from flip.pruning import apply_masks, compact, compact_masks, expand

log = logging.getLogger(__name__)


@dataclass
class ClientUpdate:
    """What one client's local training returns to the server."""

    client: int
    params: dict[str, Tensor]  # θ_k, detached
    buffers: dict[str, Tensor]  # batch-norm statistics etc.
    num_samples: int  # n_k, training samples held
    samples_processed: int  # samples seen in all local epochs (for training FLOPs)
    epoch_losses: list[float]  # epoch-mean training loss per local epoch
    extras: dict = field(default_factory=dict)  # from the client callbacks' client_extras()
    extra_bytes_up: int = 0  # bytes uploaded besides θ_k (e.g. PruneFL's importance)


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


class Federation:
    """Runs rounds of ALGORITHMS.md §1 on a global network with an algorithm's hooks.

    Args:
        net: the initialised global network θ_0 (kept on ``device``).
        datamodule: a set-up :class:`flip.data.FederatedDataModule`.
        algorithm: a :class:`flip.algorithms.Algorithm` (hooks ``setup``, ``client_model``,
            ``client_callbacks``, ``on_client_update``, ``on_round_end``).
        trainer: partial ``lightning.Trainer`` constructor (the one shared configuration);
            called with ``max_epochs`` and ``callbacks``.
        client_optimizer: partial ``torch.optim`` constructor ``(params, lr=...)``.
        lr: client learning rate of round 1; round r uses ``lr·lr_decay^(r−1)`` (§1 step 5).
        server_optimizer: partial ``torch.optim`` constructor on θ (§1 step 4).
        rounds, local_epochs, participation: R, E and C of §1.
        eval_every: evaluate every this many rounds and at the last round.
        seed: the run seed; all random streams derive from it (:mod:`flip.federation.seeding`).
        recorder: where rows go (``rounds.csv``, loggers).
        min_clients, max_round_retries, max_loss: failing clients and divergence
            (:mod:`flip.federation.failures`).
        checkpointer: writes the run state after rounds
            (:class:`flip.federation.checkpoint.Checkpointer`); ``None``: no checkpoints.
    """

    def __init__(
        self,
        net: nn.Module,
        datamodule,
        algorithm,
        *,
        trainer: Callable,
        client_optimizer: Callable,
        lr: float,
        server_optimizer: Callable,
        rounds: int,
        local_epochs: int,
        participation: float,
        lr_decay: float = 1.0,
        eval_every: int = 1,
        seed: int = 0,
        recorder: RunRecorder | None = None,
        progress: bool = True,
        min_clients: int = 1,
        max_round_retries: int = 2,
        max_loss: float | None = 1e3,
        checkpointer=None,
    ):
        self.dm = datamodule
        self.algorithm = algorithm
        self.trainer_factory = trainer
        self.client_optimizer = client_optimizer
        self.lr = lr
        self.lr_decay = lr_decay
        self.server_optimizer_factory = server_optimizer
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.participation = participation
        self.eval_every = eval_every
        self.seed = seed
        self.recorder = recorder
        self.progress = progress
        self.min_clients = min_clients
        self.max_round_retries = max_round_retries
        self.max_loss = max_loss
        self.checkpointer = checkpointer
        self.device = self.trainer_factory(max_epochs=1).strategy.root_device
        self.net = net.to(self.device)
        if hasattr(datamodule, "use_device"):  # data.device_data: batches from device tensors
            datamodule.use_device(self.device)
        self.masks: dict[str, Tensor] | None = None
        self.removal: dict[str, list[int]] = {}  # units compacted away (see compact())
        self.index: dict[str, Tensor] | None = None
        self.exploration = {"flops": 0.0, "bytes": 0, "samples": 0, "clients": 0}
        self.totals = {"flops": 0.0, "bytes": 0}
        self.history: list[dict] = []
        self.round = 0  # the last completed round

    # ----- clients -------------------------------------------------------------------------
    def train_client(
        self,
        client: int,
        net: nn.Module,
        epochs: int,
        lr: float,
        seed: int,
        masks: dict[str, Tensor] | None = None,
        callbacks: Sequence = (),
    ) -> ClientUpdate:
        """Client ``client`` trains a copy of ``net`` for up to ``epochs`` epochs with a fresh
        client optimizer at ``lr``; its data order and any augmentation draw from ``seed``."""
        local = copy.deepcopy(net).train()
        module = ClientModule(local, self.dm.num_classes, self.client_optimizer, lr, masks)
        loader = self.dm.client_train_dataloader(client, seed)
        torch.manual_seed(seed)
        trainer = self.trainer_factory(max_epochs=epochs, callbacks=list(callbacks))
        trainer.fit(module, train_dataloaders=loader)
        n = self.dm.client_num_train(client)
        extras = {}
        for cb in callbacks:
            if hasattr(cb, "client_extras"):
                extras.update(cb.client_extras())
        return ClientUpdate(
            client=client,
            params={k: v.detach() for k, v in local.named_parameters()},
            buffers={k: v.detach() for k, v in local.named_buffers()},
            num_samples=n,
            samples_processed=n * len(module.epoch_losses),
            epoch_losses=module.epoch_losses,
            extras=extras,
        )

    def set_masks(self, masks: dict[str, Tensor] | None) -> None:
        """Fix the global mask M (bool, per parameter) and apply θ ← θ ⊙ M (§2.3)."""
        self.masks = {k: v.to(self.device) for k, v in masks.items()} if masks else None
        apply_masks(self.net, self.masks)

    def compact(self, removal: dict[str, list[int]]) -> None:
        """Shrink the global network to the smaller dense network without the units of
        ``removal`` (:func:`flip.pruning.compact`, ALGORITHMS.md §2.2), before round 1.

        The removed units must already be zero under :attr:`masks` (AutoFLIP's structured
        mask), so the compact network computes the same function. From here on clients train
        and send the compact network, the mask lives inside it (gathered into its shapes), the
        server optimizer steps on it, FLOPs are profiled on it and bytes counted on its tensors;
        :meth:`dense_state_dict` writes it back into the dense layout."""
        example = self.dm.example_input().to(self.device)
        small, self.index = compact(self.net, removal, example)
        params = dict(self.net.named_parameters())
        self.dense_template = {  # removed parameters are 0; removed buffers keep their values
            n: (torch.zeros_like(t) if n in params else t.detach().clone()).cpu()
            for n, t in self.net.state_dict().items()
        }
        self.removal = {k: [int(i) for i in v] for k, v in removal.items()}
        masks = compact_masks(self.masks, self.index) if self.masks else None
        self.net = small.to(self.device)
        self.set_masks(masks)
        self.flops = profile_flops(self.net, self.dm.example_input())

    def dense_state_dict(self) -> dict[str, Tensor]:
        """The global model in the dense network's layout (for export and comparison): the
        compact network's values at their dense positions, zeros for removed parameters.
        Without compaction, the network's own state dict."""
        if self.index is None:
            return self.net.state_dict()
        return expand(self.dense_template, self.net.state_dict(), self.index)

    def add_exploration_cost(self, update: ClientUpdate) -> None:
        """Count one explorer: dense model down, D_k up (4 B per entry each), training FLOPs of
        the dense model over the samples it processed (ALGORITHMS.md §2.1, §4)."""
        flops = training_flops(self.dense_flops.total, update.samples_processed)
        self.add_setup_cost(flops, 2 * 4 * self.dense_params, update.samples_processed)

    def add_setup_cost(self, flops: float, nbytes: int, samples: int, clients: int = 1) -> None:
        """Count work done before round 1 (AutoFLIP's exploration, PruneFL's initial pruning):
        FLOPs, bytes, samples processed, clients involved. Reported as ``*_exploration`` in the
        summary and included in the cumulative costs of every round (ALGORITHMS.md §4)."""
        self.exploration["flops"] += flops
        self.exploration["bytes"] += int(nbytes)
        self.exploration["samples"] += int(samples)
        self.exploration["clients"] += clients

    def model_costs(
        self, net: nn.Module, masks: dict[str, Tensor] | None
    ) -> tuple[dict[str, float], float, int, int]:
        """Costs of sending ``net`` under ``masks`` to one client (ALGORITHMS.md §4).

        ``net`` is the global network (compact after :meth:`compact`) or a smaller sub-model
        of it (EFLPrune); its FLOPs are profiled with fvcore unless it is the global network.
        Returns ``(counts, flops per sample, download bytes, upload bytes)``; ``counts`` is
        :func:`param_counts` with ``params`` = the dense global network's size, so ``density``
        and ``compression_ratio`` are relative to the dense global model.
        """
        profile = self.flops if net is self.net else profile_flops(net, self.dm.example_input())
        params = {k: p.detach() for k, p in net.named_parameters()}
        counts = param_counts(params, masks)
        dense = self.dense_params
        kept = counts["nonzero_params"]
        counts.update(
            params=dense,
            density=kept / dense,
            sparsity=1.0 - kept / dense,
            compression_ratio=dense / kept if kept else math.inf,
        )
        down, up = transfer_bytes(params, masks)
        return counts, effective_flops(profile, masks, net), down, up

    # ----- evaluation ----------------------------------------------------------------------
    def test(self, loader) -> dict[str, float]:
        """Loss and :func:`~flip.federation.client.classification_metrics` of the global model."""
        module = ClientModule(self.net, self.dm.num_classes, self.client_optimizer, 0.0)
        self.trainer_factory(max_epochs=1).test(module, dataloaders=loader, verbose=False)
        return module.test_results

    def evaluate(self) -> dict[str, float]:
        """``global/*`` on the official test split; ``local/*`` over every client's local test
        set: sample-weighted mean, plain mean and std across clients."""
        row = {f"global/{k}": v for k, v in self.test(self.dm.test_dataloader()).items()}
        per_client = [
            self.test(self.dm.client_test_dataloader(k)) for k in range(self.dm.num_clients)
        ]
        n = np.array([self.dm.client_num_test(k) for k in range(self.dm.num_clients)], float)
        for key in ("acc1", "f1", "loss"):
            vals = np.array([r[key] for r in per_client])
            row[f"local/{key}_weighted"] = float((vals * n).sum() / n.sum())
            if key != "loss":
                row[f"local/{key}_mean"] = float(vals.mean())
                row[f"local/{key}_std"] = float(vals.std())
        return row

    # ----- rounds --------------------------------------------------------------------------
    def run_round(self, r: int) -> dict:
        """Round ``r`` (1-based) of ALGORITHMS.md §1; returns its row for ``rounds.csv``.

        The algorithm chooses what clients train (``client_model``: the global network and its
        mask, or a smaller sub-model) and may map each update back (``on_client_update``); the
        round's FLOPs, bytes, ``model/density`` and ``model/nonzero_params`` are those of what
        was sent this round, so they follow masks that change between rounds."""
        start = time.perf_counter()
        lr = self.lr * self.lr_decay ** (r - 1)
        net, masks = self.algorithm.client_model(self, r)
        self.counts, self.flops_per_sample, down, up = self.model_costs(net, masks)
        # drops failed clients, retries the round if too few succeed
        got = collect_updates(self, r, lr, net, masks)
        updates, clients = got.updates, got.clients
        del net
        weights = client_weights([u.num_samples for u in updates])
        params = dict(self.net.named_parameters())
        delta = pseudo_gradient(
            {k: p.detach() for k, p in params.items()}, [u.params for u in updates], weights
        )
        before = snapshot(self)
        self.server_opt.zero_grad(set_to_none=False)
        for name, p in params.items():
            p.grad = delta[name]
        self.server_opt.step()
        self.server_opt.zero_grad(set_to_none=True)
        apply_masks(self.net, self.masks)
        if updates[0].buffers:
            with torch.no_grad():
                for name, b in average_buffers([u.buffers for u in updates], weights).items():
                    self.net.get_buffer(name).copy_(b)
        keep_finite(self, before, r)  # never a non-finite global model
        self.algorithm.on_round_end(self, r)

        # costs: every sampled client was sent θ; every returned update was trained and sent up
        samples = sum(u.samples_processed for u in got.returned)
        flops = training_flops(self.flops_per_sample, samples)
        self.totals["flops"] += flops
        bytes_up = up * len(got.returned) + sum(u.extra_bytes_up for u in updates)
        self.totals["bytes"] += down * got.sampled + bytes_up
        cum_bytes = self.totals["bytes"] + self.exploration["bytes"]
        row = {
            "round": r,
            "clients/sampled": len(clients),
            "clients/failed": len(got.failures),
            "round/retries": got.retries,
            "lr/client": lr,
            "train/loss": float(np.average([u.epoch_losses[-1] for u in updates], weights=weights)),
            "model/nonzero_params": self.counts["nonzero_params"],
            "model/density": self.counts["density"],
            "cost/flops_train_round": flops,
            "cost/flops_train_cum": self.totals["flops"] + self.exploration["flops"],
            "cost/bytes_down_round": down * got.sampled,
            "cost/bytes_up_round": bytes_up,
            "cost/bytes_cum": cum_bytes,
            "cost/gb_cum": cum_bytes / GB,
        }
        if r % self.eval_every == 0 or r == self.rounds:
            row.update(self.evaluate())
        row["time/round_s"] = time.perf_counter() - start
        return row

    def setup(self, state: dict | None = None) -> None:
        """Before round 1: dense FLOPs profile, the algorithm's set-up (e.g. AutoFLIP's
        exploration, mask and compaction), the server optimizer, parameter counts and effective
        FLOPs. With ``state`` (a :meth:`state_dict`, resuming) the algorithm's set-up is skipped
        and everything is restored from it instead (the network compacted again first)."""
        self.dense_flops = self.flops = profile_flops(self.net, self.dm.example_input())
        self.dense_params = sum(p.numel() for p in self.net.parameters())
        if state is None:
            self.algorithm.setup(self)
        elif state.get("removal"):
            self.compact(state["removal"])
        self.server_opt = build_server_optimizer(
            self.server_optimizer_factory, self.net.parameters()
        )
        if state is not None:
            self.load_state_dict(state)
            return
        self.counts, self.flops_per_sample, _, _ = self.model_costs(self.net, self.masks)

    def state_dict(self) -> dict:
        """Everything a resumed run needs after round :attr:`round`: θ and buffers, the masks
        (both in the compact layout after :meth:`compact`), the removed units, the server
        optimizer's state, the algorithm's state (:meth:`Algorithm.state_dict`), cost
        totals (rounds and exploration), parameter counts, effective FLOPs per sample and the
        rows written so far. Tensors are on the device; the random streams need no state
        (:mod:`flip.federation.seeding`)."""
        return {
            "round": self.round,
            "net": self.net.state_dict(),
            "masks": self.masks,
            "removal": self.removal,
            "server_optimizer": self.server_opt.state_dict(),
            "algorithm": self.algorithm.state_dict(),
            "totals": dict(self.totals),
            "exploration": dict(self.exploration),
            "counts": dict(self.counts),
            "flops_per_sample": self.flops_per_sample,
            "history": [dict(row) for row in self.history],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (after the server optimizer is built, see :meth:`setup`)."""
        self.net.load_state_dict(state["net"])
        self.set_masks(state["masks"])
        self.server_opt.load_state_dict(state["server_optimizer"])
        self.algorithm.load_state_dict(state["algorithm"])
        self.totals = dict(state["totals"])
        self.exploration = dict(state["exploration"])
        self.counts = dict(state["counts"])
        self.flops_per_sample = state["flops_per_sample"]
        self.history = [dict(row) for row in state["history"]]
        self.round = int(state["round"])

    def fit(self, resume: dict | None = None) -> dict:
        """:meth:`setup`, then rounds up to R; every row is written as soon as its round ends,
        then the checkpoint if one is due. ``resume``: a checkpoint
        (:func:`flip.federation.checkpoint.load_checkpoint`) to continue from instead of setting
        up: its state and random generators are restored. Returns the run's summary (see
        :meth:`summary`)."""
        self.setup(resume["federation"] if resume else None)
        if resume:
            set_rng_state(resume["rng"])
        with RoundProgress(self.rounds, enabled=self.progress, done=self.round) as bar:
            for r in range(self.round + 1, self.rounds + 1):
                row = self.run_round(r)
                self.history.append(row)
                self.round = r
                if self.recorder:
                    self.recorder.log_round(row)
                if self.checkpointer:
                    self.checkpointer.after_round(self)
                bar.update(row)
        return self.summary()

    def summary(self) -> dict:
        """Final and best metrics and the cost totals (ALGORITHMS.md §4), with and without the
        exploration."""
        evaluated = [h for h in self.history if "global/acc1" in h]
        final = {k: v for k, v in evaluated[-1].items() if "/" in k} if evaluated else {}
        best = (
            {k: max(h[k] for h in evaluated) for k in ("global/acc1", "global/acc5")}
            if evaluated
            else {}
        )
        explo = self.exploration
        return {
            "algorithm": self.algorithm.name,
            "rounds_completed": len(self.history),
            "clients_failed": sum(h.get("clients/failed", 0) for h in self.history),
            "final": final,
            "best": best,
            "cost": {
                **self.counts,
                "flops_per_sample_dense": self.dense_flops.total,
                "flops_per_sample_structured": self.flops.total,
                "flops_per_sample": self.flops_per_sample,
                "train_flops_rounds": self.totals["flops"],
                "train_flops_exploration": explo["flops"],
                "train_flops_total": self.totals["flops"] + explo["flops"],
                "bytes_rounds": self.totals["bytes"],
                "bytes_exploration": explo["bytes"],
                "bytes_total": self.totals["bytes"] + explo["bytes"],
                "gb_total": (self.totals["bytes"] + explo["bytes"]) / GB,
                "exploration_clients": explo["clients"],
                "exploration_samples": explo["samples"],
            },
        }
