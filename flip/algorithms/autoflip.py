"""AutoFLIP: federated loss exploration, guidance matrix, hybrid mask (ALGORITHMS.md §2)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping

from flip.algorithms.base import Algorithm
from flip.errors import ConfigError, TrainingStopped
from flip.federation.failures import first_nonfinite
from flip.federation.seeding import EXPLORATION, derive_seed
from flip.pruning import guidance_matrix, hybrid_mask, squared_displacement, structured_removal

log = logging.getLogger(__name__)


class AutoFLIP(Algorithm):
    """AutoFLIP (Internò et al., arXiv 2405.10271), as ALGORITHMS.md §2 decides it.

    Args:
        threshold: Tp ∈ [0, 1), the fraction of prunable entries pruned (§2.2; paper 0.30).
        structured: also remove whole filters/neurons whose mean G ≤ τ (§2.2).
        scope: ``weights`` (Conv/Linear/LSTM/Embedding weights) or ``all`` (every tensor, as
            the released code did).
        compact: when units are removed, shrink the global network to the smaller dense
            network before round 1 (:meth:`flip.federation.Federation.compact`), so clients
            train and send it with the unstructured mask inside (§2.2). ``False`` keeps the
            dense shapes with removed units masked (same numbers up to float rounding, dense
            work on the clock).
        init_from: ``initial`` (θ = θ_0 ⊙ M, the paper, default) or ``explored`` (θ = the mean
            of the explorers' final models ⊙ M, close to the released code, which also ran
            extra dense epochs on all clients: that leaks the exploration's training into the
            start and is kept only to compare; the extra dense epochs are not reproduced).
        exploration: ``client_fraction`` (explorers / K, paper 1.0), ``epochs`` (paper 150),
            ``patience`` (early stop after this many epochs without a lower epoch-mean
            training loss, paper 40).

    Every explorer starts from its own copy of θ_0 (the released code shared one model object
    among explorers, so its "average" was one trajectory: a bug flip does not reproduce).
    Explorers train with the round-1 client learning rate and a fresh optimizer; D is the
    unweighted mean of D_k = (θ_k − θ_0)² over the explorers whose θ_k is finite (one with
    NaN/Inf is left out with a warning, as a failed client of a round is; its cost still
    counts). Raises ``ConfigError`` for out-of-range values, ``TrainingStopped`` when no explorer
    returns finite weights.
    """

    def __init__(
        self,
        name: str = "autoflip",
        threshold: float = 0.3,
        structured: bool = True,
        scope: str = "weights",
        compact: bool = True,
        init_from: str = "initial",
        exploration: dict | None = None,
    ):
        super().__init__(name)
        exploration = dict(exploration or {})
        if not 0.0 <= threshold < 1.0:
            raise ConfigError("pruning.threshold", threshold, "a fraction Tp with 0 <= Tp < 1")
        if scope not in ("weights", "all"):
            raise ConfigError("pruning.scope", scope, "weights, all")
        for field, value in (("pruning.structured", structured), ("pruning.compact", compact)):
            if not isinstance(value, bool):
                raise ConfigError(field, value, "true, false")
        if init_from not in ("initial", "explored"):
            raise ConfigError("algorithm.init_from", init_from, "initial, explored")
        self.client_fraction = float(exploration.get("client_fraction", 1.0))
        self.epochs = int(exploration.get("epochs", 150))
        self.patience = int(exploration.get("patience", 40))
        if not 0.0 < self.client_fraction <= 1.0:
            raise ConfigError(
                "exploration.client_fraction", self.client_fraction, "a fraction in (0, 1]"
            )
        if self.epochs < 1:
            raise ConfigError("exploration.epochs", self.epochs, "an integer >= 1")
        if self.patience < 1:
            raise ConfigError("exploration.patience", self.patience, "an integer >= 1")
        self.threshold = threshold
        self.structured = structured
        self.scope = scope
        self.compact = compact
        self.init_from = init_from
        self.guidance: dict[str, torch.Tensor] | None = None
        self.masks: dict[str, torch.Tensor] | None = None
        self.tau: float | None = None
        self.removal: dict[str, list[int]] = {}

    def explorers(self, seed: int, num_clients: int) -> list[int]:
        """The explorers: max(1, round(fraction·K)) clients drawn from the exploration stream."""
        m = max(1, int(self.client_fraction * num_clients + 0.5))
        rng = np.random.default_rng([seed, EXPLORATION])
        return sorted(int(k) for k in rng.choice(num_clients, size=m, replace=False))

    def setup(self, fed) -> None:
        """Exploration (§2.1), guidance matrix, hybrid mask (§2.2), start of round 1 (§2.3),
        then the compaction of the removed units (§2.2)."""
        theta0 = {k: p.detach().clone() for k, p in fed.net.named_parameters()}
        total = {k: torch.zeros_like(p, device="cpu") for k, p in theta0.items()}
        explored = {k: torch.zeros_like(p) for k, p in theta0.items()}
        clients = self.explorers(fed.seed, fed.dm.num_clients)
        used = 0
        for k in clients:
            stop = EarlyStopping(
                "train/loss", patience=self.patience, mode="min", check_on_train_epoch_end=True
            )
            seed = derive_seed(fed.seed, EXPLORATION, k)
            update = fed.train_client(k, fed.net, self.epochs, fed.lr, seed, None, [stop])
            fed.add_exploration_cost(update)
            bad = first_nonfinite(update.params)
            if bad is not None:  # a failed client (flip.federation.failures): left out of D
                log.warning("explorer %d left out of the guidance: NaN/Inf values in %s", k, bad)
                continue
            used += 1
            for name, d in squared_displacement(theta0, update.params).items():
                total[name] += d
            for name, p in update.params.items():
                explored[name] += p.to(explored[name].device) / len(clients)
            log.info("explorer %d: %d epochs", k, len(update.epoch_losses))
        if used == 0:
            raise TrainingStopped(
                f"exploration: all {len(clients)} explorers returned NaN/Inf weights; no "
                "guidance matrix can be computed (check the data and client.lr)."
            )
        if used < len(clients):  # the mean over the explorers that were used
            explored = {k: v * (len(clients) / used) for k, v in explored.items()}
        self.guidance = guidance_matrix({k: v / used for k, v in total.items()})
        example = fed.dm.example_input().to(next(fed.net.parameters()).device)
        self.masks, self.tau = hybrid_mask(
            fed.net, self.guidance, self.threshold, example, self.structured, self.scope
        )
        if self.init_from == "explored":
            with torch.no_grad():
                for name, p in fed.net.named_parameters():
                    p.copy_(explored[name])
        fed.set_masks(self.masks)
        if self.structured:
            self.removal = structured_removal(fed.net, self.guidance, self.tau, example)
            removed = sum(len(v) for v in self.removal.values())
            log.info("structured pruning removes %d units in %d groups", removed, len(self.removal))
            if self.compact and self.removal:
                fed.compact(self.removal)

    def state_dict(self) -> dict:
        """The guidance matrix G, the dense-layout mask M (bool), τ and the removed units:
        all a resumed run needs (§2.2; the compaction itself is in the federation's state)."""
        return {"guidance": self.guidance, "masks": self.masks, "tau": self.tau,
                "removal": self.removal}

    def load_state_dict(self, state: dict) -> None:
        self.guidance, self.masks, self.tau = state["guidance"], state["masks"], state["tau"]
        self.removal = state.get("removal", {})

    def save(self, out_dir: Path) -> list[Path]:
        """Writes ``guidance.pt`` (G per parameter, float32) and ``mask.pt`` (bool per
        parameter in the dense layout, plus τ and the removed units per group) into
        ``out_dir``."""
        out_dir = Path(out_dir)
        paths = [out_dir / "guidance.pt", out_dir / "mask.pt"]
        torch.save(self.guidance, paths[0])
        torch.save(
            {"tau": self.tau, "threshold": self.threshold, "masks": self.masks,
             "removal": self.removal},
            paths[1],
        )
        return paths
