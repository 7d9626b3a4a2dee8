"""PruneFL: initial pruning on one client, then adaptive reconfiguration (ALGORITHMS.md §3.1)."""

from __future__ import annotations

import copy
import json
import logging
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from flip.algorithms.base import Algorithm
from flip.errors import ConfigError
from flip.federation.callbacks import GradientSum
from flip.federation.client import ClientModule
from flip.federation.seeding import derive_seed
from flip.metrics.costs import BYTES_PER_VALUE, effective_flops, training_flops, transfer_bytes
from flip.metrics.time_model import DeviceProfile, parameter_times
from flip.pruning import (
    decrease_fraction,
    mask_density,
    prunable_names,
    reconfigure,
    swap_pruned,
)

log = logging.getLogger(__name__)

INITIAL_PRUNING_STREAM = 4001
"""Key of the random stream (with the run seed) ordering the initial-pruning client's data."""

INITIAL_DEFAULTS = {
    "enabled": True,
    "client": 0,
    "batches": 10,
    "passes": 1000,
    "interval": 50,
    "patience": 5,
    "tolerance": 0.1,
    "accuracy_factor": 1.5,
}


class PruneFL(Algorithm):
    """PruneFL (Jiang et al., "Model Pruning Enables Efficient Federated Learning on Edge
    Devices", TNNLS 2022, arXiv 1909.12326), as ALGORITHMS.md §3.1 decides it.

    1. Initial pruning (``initial``) on client ``initial.client``'s first ``initial.batches``
       batches (its data order drawn from the run seed): ``initial.passes`` passes at most, one
       optimizer step per batch (the configured client optimizer at the round-1 learning rate),
       importance z += g² per step; once the accuracy on those batches reaches
       ``accuracy_factor``/num_classes, reconfigure every ``initial.interval`` passes with
       dtp = ``max_decrease``; stop when the density changed by at most ``tolerance``
       (|d_t/d_{t−1} − 1|) in ``patience`` reconfigurations in a row. FL starts from these
       weights and mask. Its FLOPs (training and the accuracy checks) and bytes (dense model
       down, masked model and bitmask up) are the run's set-up cost (``*_exploration``).
    2. Rounds as §1; clients train the masked model, and a :class:`GradientSum` callback reads
       each client's raw gradients, pruned positions included, before the mask zeroes them;
       the server adds z += n_k·(Σ_steps g)². Clients hold no state between rounds (§4), so
       each sampled client uploads that importance every round: 4 B per parameter entry,
       counted in ``cost/bytes_up_round``.
    3. After every ``interval``-th round: dtp = ``max_decrease``·0.5^(r/``half_life``);
       :func:`flip.pruning.reconfigure` keeps each layer's (1−dtp) largest-|w| active weights
       and greedily adds candidates by importance per unit time, with per-parameter times
       from :func:`flip.metrics.time_model.parameter_times` on ``device`` (T0 =
       ``device.round_overhead_s``; the tensors that are not prunable are always kept and
       count as c_comm each). Regrown weights get back the value they held when pruned
       (:func:`flip.pruning.swap_pruned`); z is reset.

    ``scope``: which tensors may be pruned (:func:`flip.pruning.prunable_names`; default
    Conv/Linear/LSTM/Embedding weights, as PruneFL's prunable layers). Raises ``ConfigError``
    for out-of-range values, naming the ``prunefl.*`` field.
    """

    def __init__(
        self,
        name: str = "prunefl",
        interval: int = 50,
        max_decrease: float = 0.3,
        half_life: float = 10000,
        scope: str = "weights",
        initial: dict | None = None,
        device: DeviceProfile | dict | None = None,
    ):
        super().__init__(name)
        if not (isinstance(interval, int) and interval >= 1):
            raise ConfigError("prunefl.interval", interval, "an integer >= 1 (rounds)")
        if not 0.0 <= max_decrease < 1.0:
            raise ConfigError("prunefl.max_decrease", max_decrease, "a fraction in [0, 1)")
        if not half_life > 0:
            raise ConfigError("prunefl.half_life", half_life, "a number of rounds > 0")
        if scope not in ("weights", "all"):
            raise ConfigError("prunefl.scope", scope, "weights, all")
        unknown = set(initial or {}) - set(INITIAL_DEFAULTS)
        if unknown:
            raise ConfigError("prunefl.initial", sorted(unknown), ", ".join(INITIAL_DEFAULTS))
        init = {**INITIAL_DEFAULTS, **(initial or {})}
        for key in ("batches", "passes", "interval", "patience"):
            if not (isinstance(init[key], int) and init[key] >= 1):
                raise ConfigError(f"prunefl.initial.{key}", init[key], "an integer >= 1")
        if not (isinstance(init["client"], int) and init["client"] >= 0):
            raise ConfigError("prunefl.initial.client", init["client"], "a client index >= 0")
        if not init["tolerance"] >= 0:
            raise ConfigError("prunefl.initial.tolerance", init["tolerance"], "a number >= 0")
        if not init["accuracy_factor"] >= 0:
            raise ConfigError(
                "prunefl.initial.accuracy_factor", init["accuracy_factor"], "a number >= 0"
            )
        if isinstance(device, dict):
            device = DeviceProfile(**{k: v for k, v in device.items() if k != "_target_"})
        self.device = device or DeviceProfile(2.5e6, 1.25e6, 1e10, 1.0)
        self.interval = interval
        self.max_decrease = max_decrease
        self.half_life = half_life
        self.scope = scope
        self.initial = init
        self.history: list[dict] = []
        self.masks: dict[str, torch.Tensor] = {}

    # ----- set-up ------------------------------------------------------------------------
    def setup(self, fed) -> None:
        """Per-parameter times, initial pruning (§3.1 step 1), the first mask."""
        params = dict(fed.net.named_parameters())
        self.names = prunable_names(fed.net, self.scope)
        n_mean = sum(fed.dm.client_num_train(k) for k in range(fed.dm.num_clients))
        n_mean /= fed.dm.num_clients
        self.times = parameter_times(
            fed.flops, params, self.names, n_mean, fed.local_epochs, self.device
        )
        self.stored = {n: torch.zeros_like(params[n]) for n in self.names}
        masks = {n: torch.ones_like(params[n], dtype=torch.bool) for n in self.names}
        if self.initial["enabled"]:
            if self.initial["client"] >= fed.dm.num_clients:
                raise ConfigError(
                    "prunefl.initial.client",
                    self.initial["client"],
                    f"a client index in 0..{fed.dm.num_clients - 1}",
                )
            masks = self._initial_pruning(fed, masks)
        fed.set_masks(masks)
        self.masks = fed.masks
        self.importance = {n: torch.zeros_like(p) for n, p in params.items()}

    def reconfigure_model(self, net, masks: dict, importance: dict, dtp: float) -> dict:
        """One reconfiguration (§3.1 step 3) of ``net`` under ``masks`` (bool per prunable
        tensor) with importance z (per parameter name): returns the new masks and applies
        them to ``net`` in place, regrown entries taking back their value from ``self.stored``
        and newly pruned ones saving theirs there. Uses ``self.times`` (seconds per parameter,
        set in :meth:`setup`) and T0 = ``device.round_overhead_s``."""
        params = dict(net.named_parameters())
        fixed = [n for n in params if n not in masks]
        base_importance = sum(float(importance[n].sum()) for n in fixed if n in importance)
        base_time = self.device.round_overhead_s + sum(
            self.times[n] * params[n].numel() for n in fixed
        )
        zeros = {n: torch.zeros_like(params[n]) for n in masks if n not in importance}
        new = reconfigure(
            {n: params[n] for n in masks},
            masks,
            {**importance, **zeros},
            self.times,
            dtp,
            base_importance,
            base_time,
        )
        for n, m in new.items():
            swap_pruned(params[n].data, self.stored[n], masks[n], m)
        return new

    def _initial_pruning(self, fed, masks: dict) -> dict:
        """§3.1 step 1 on a copy of θ_0; copies the result into ``fed.net``; returns M."""
        init = self.initial
        k = init["client"]
        seed = derive_seed(fed.seed, INITIAL_PRUNING_STREAM)
        batches = list(islice(fed.dm.client_train_dataloader(k, seed), init["batches"]))
        x = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        loader = DataLoader(TensorDataset(x, y), batch_size=len(batches[0][1]), shuffle=False)
        local = copy.deepcopy(fed.net).train()
        module = ClientModule(local, fed.dm.num_classes, fed.client_optimizer, fed.lr, masks)
        watcher = _InitialPruning(self, fed, x, y)
        torch.manual_seed(seed)
        trainer = fed.trainer_factory(max_epochs=init["passes"], callbacks=[watcher])
        trainer.fit(module, train_dataloaders=loader)
        masks = module.masks
        with torch.no_grad():
            for name, p in fed.net.named_parameters():
                p.copy_(local.get_parameter(name))
        params = {n: p.detach() for n, p in fed.net.named_parameters()}
        masked_up, _ = transfer_bytes(params, masks)  # 4·nnz + bitmask
        dense_down = BYTES_PER_VALUE * sum(p.numel() for p in params.values())
        fed.add_setup_cost(watcher.flops, dense_down + masked_up, watcher.samples)
        log.info(
            "PruneFL initial pruning: %d passes, %d reconfigurations, density %.4f",
            watcher.passes,
            len(watcher.densities),
            mask_density(masks),
        )
        self.history.append(
            {
                "round": 0,
                "passes": watcher.passes,
                "reconfigurations": len(watcher.densities),
                "density_prunable": mask_density(masks),
            }
        )
        return masks

    # ----- rounds ------------------------------------------------------------------------
    def client_callbacks(self, fed, round_idx: int, client: int) -> list:
        return [GradientSum()]

    def on_client_update(self, fed, round_idx: int, update):
        """z += n_k·(Σ g)² for every tensor; the importance upload is counted."""
        with torch.no_grad():
            for name, g in update.extras.pop("grad_sum", {}).items():
                z = self.importance[name]
                z.add_(g.to(z) ** 2, alpha=update.num_samples)
        update.extra_bytes_up += BYTES_PER_VALUE * sum(t.numel() for t in self.importance.values())
        return update

    def on_round_end(self, fed, round_idx: int) -> None:
        """Every ``interval`` rounds: reconfigure (§3.1 step 3) and reset z."""
        if round_idx % self.interval:
            return
        dtp = decrease_fraction(round_idx, self.max_decrease, self.half_life)
        masks = self.reconfigure_model(fed.net, fed.masks, self.importance, dtp)
        fed.set_masks(masks)
        self.masks = fed.masks
        for z in self.importance.values():
            z.zero_()
        self.history.append(
            {"round": round_idx, "dtp": dtp, "density_prunable": mask_density(masks)}
        )
        log.info("PruneFL round %d: dtp %.4f, density %.4f", round_idx, dtp, mask_density(masks))

    def save(self, out_dir: Path) -> list[Path]:
        """``mask.pt`` (the last mask, bool per prunable tensor) and ``prunefl.json`` (one entry
        per reconfiguration: round, dtp, density of the prunable tensors; round 0 = the
        initial pruning)."""
        out_dir = Path(out_dir)
        paths = [out_dir / "mask.pt", out_dir / "prunefl.json"]
        torch.save({"masks": {n: m.cpu() for n, m in self.masks.items()}}, paths[0])
        paths[1].write_text(json.dumps(self.history, indent=2) + "\n")
        return paths

    def state_dict(self) -> dict:
        """What carries over between rounds (§3.1): the prunable tensors' names and per-parameter
        times, the current mask, the accumulated importance z, the values stored for regrowth
        and the reconfiguration history."""
        return {
            "names": list(self.names),
            "times": dict(self.times),
            "masks": self.masks,
            "importance": self.importance,
            "stored": self.stored,
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        self.names = list(state["names"])
        self.times = dict(state["times"])
        self.masks = dict(state["masks"])
        self.importance = dict(state["importance"])
        self.stored = dict(state["stored"])
        self.history = list(state["history"])


class _InitialPruning(GradientSum):
    """Callback of the initial pruning: z += g² per step (as :class:`GradientSum`), and at the
    end of each pass the accuracy check, the reconfiguration and the stopping rule (§3.1)."""

    def __init__(self, algo: PruneFL, fed, x, y):
        super().__init__(squared=True)
        self.algo, self.fed, self.x, self.y = algo, fed, x, y
        self.threshold = algo.initial["accuracy_factor"] / fed.dm.num_classes
        self.passes = 0
        self.samples = 0
        self.flops = 0.0
        self.started: int | None = None
        self.densities: list[float] = []
        self.stable: list[bool] = []

    def _forward_flops(self, module) -> float:
        return effective_flops(self.fed.flops, module.masks, module.net)

    @torch.no_grad()
    def _accuracy(self, module) -> float:
        net = module.net
        net.eval()
        x, y = self.x.to(module.device), self.y.to(module.device)
        pairs = zip(x.split(256), y.split(256), strict=True)
        correct = sum(int((net(xb).argmax(1) == yb).sum()) for xb, yb in pairs)
        net.train()
        self.flops += self._forward_flops(module) * len(y)
        return correct / len(y)

    def on_train_epoch_end(self, trainer, module) -> None:
        init = self.algo.initial
        self.passes += 1
        self.samples += len(self.y)
        self.flops += training_flops(self._forward_flops(module), len(self.y))
        if self.started is None and self._accuracy(module) >= self.threshold:
            self.started = self.passes
        if self.started is None or (self.passes - self.started) % init["interval"]:
            return
        dtp = self.algo.max_decrease
        masks = self.algo.reconfigure_model(module.net, module.masks, self.sums, dtp)
        module.masks = masks
        self.reset()
        density = mask_density(masks)
        if self.densities:
            self.stable.append(abs(density / self.densities[-1] - 1) <= init["tolerance"])
        self.densities.append(density)
        patience = init["patience"]
        if len(self.stable) >= patience and all(self.stable[-patience:]):
            trainer.should_stop = True
