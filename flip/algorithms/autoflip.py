"""AutoFLIP: federated loss exploration, guidance matrix, hybrid mask (ALGORITHMS.md §2)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flip.algorithms.base import Algorithm
from flip.errors import TrainingStopped
from flip.federation.callbacks import CallbackSpec
from flip.federation.executor import ClientJob, ClientUpdate
from flip.federation.failures import first_nonfinite
from flip.federation.seeding import EXPLORATION, derive_seed
from flip.metrics.costs import BYTES_PER_VALUE
from flip.params import POS_INT, check, check_bool, check_choice, from_node, is_int, is_number
from flip.pruning import guidance_matrix, squared_displacement
from flip.pruning.masks import hybrid_parts
from flip.pruning.structured import unit_scores

log = logging.getLogger(__name__)

DENSITY_TOLERANCE = 0.005
"""How close ``pruning.target_density`` must be met (half a percentage point)."""

EXPLORATION_WAVE = 32
"""Explorers trained per executor call: the explorers are one cohort, sent in waves of this
size so that no more than this many explorers' weights are held at once (FEMNIST has ~3,500)."""


@dataclass(frozen=True)
class PruningParams:
    """AutoFLIP's mask (``pruning.*``, ALGORITHMS.md §2.2).

    ``threshold``: Tp ∈ [0, 1), the quantile of the guidance matrix G over the prunable entries
    used as the threshold τ (paper 0.30). Tp is not the sparsity: the unstructured mask prunes
    the entries with G ≤ τ (a fraction Tp), the structured part then removes whole units and
    their consumers' inputs, so the hybrid mask's density is below 1 − Tp (the summary reports
    it). ``target_density``: ``None``, or the fraction of all parameters the hybrid mask
    should keep: Tp is then found by bisection so the density is within
    :data:`DENSITY_TOLERANCE` of it (``threshold`` is ignored; the Tp chosen is logged and
    reported). ``structured``: also remove whole filters/neurons/LSTM units whose mean G ≤ τ;
    ``scope``: ``weights`` (Conv/Linear/LSTM/Embedding weights) or ``all`` (every tensor, as
    the released code did); ``compact``: train the physically smaller network. Raises
    ``ConfigError`` naming the field.
    """

    threshold: float = 0.3
    structured: bool = True
    scope: str = "weights"
    compact: bool = True
    target_density: float | None = None

    def __post_init__(self):
        check("pruning.threshold", self.threshold,
              is_number(self.threshold) and 0.0 <= self.threshold < 1.0,
              "a fraction Tp with 0 <= Tp < 1")
        check_choice("pruning.scope", self.scope, ("weights", "all"))
        check_bool("pruning.structured", self.structured)
        check_bool("pruning.compact", self.compact)
        check("pruning.target_density", self.target_density, self.target_density is None
              or (is_number(self.target_density) and 0 < self.target_density <= 1),
              "null or a density in (0, 1]")


@dataclass(frozen=True)
class ExplorationParams:
    """AutoFLIP's federated loss exploration (``exploration.*``, ALGORITHMS.md §2.1):
    ``client_fraction`` (explorers / K, in (0, 1]; paper 1.0), ``epochs`` (at most, paper 150),
    ``patience`` (early stop after this many epochs without a lower epoch-mean training loss,
    paper 40). Raises ``ConfigError`` naming the field."""

    client_fraction: float = 1.0
    epochs: int = 150
    patience: int = 40

    def __post_init__(self):
        check("exploration.client_fraction", self.client_fraction,
              is_number(self.client_fraction) and 0.0 < self.client_fraction <= 1.0,
              "a fraction in (0, 1]")
        check("exploration.epochs", self.epochs, is_int(self.epochs) and self.epochs >= 1,
              POS_INT)
        check("exploration.patience", self.patience,
              is_int(self.patience) and self.patience >= 1, POS_INT)


class AutoFLIP(Algorithm):
    """AutoFLIP (Internò et al., arXiv 2405.10271), as ALGORITHMS.md §2 decides it.

    Args:
        pruning: :class:`PruningParams` (or its config mapping, ``pruning.*``).
        exploration: :class:`ExplorationParams` (or its config mapping, ``exploration.*``).
        init_from: ``initial`` (θ = θ_0 ⊙ M, the paper, default) or ``explored`` (θ = the mean
            of the explorers' final models ⊙ M, close to the released code, which also ran
            extra dense epochs on all clients: that leaks the exploration's training into the
            start and is kept only to compare; the extra dense epochs are not reproduced).

    With ``pruning.compact`` and units removed, the global network is shrunk to the smaller
    dense network before round 1 (:meth:`flip.federation.Federation.compact`), so clients
    train and send it with the unstructured mask inside (§2.2).

    Every explorer starts from its own copy of θ_0 (the released code shared one model object
    among explorers, so its "average" was one trajectory: a bug flip does not reproduce).
    Explorers train with the round-1 client learning rate and a fresh optimizer, as one cohort
    through the executor (in waves of :data:`EXPLORATION_WAVE`); D is the unweighted mean of
    D_k = (θ_k − θ_0)² over the explorers whose training succeeded with a finite θ_k (a failed
    one is left out with a warning, as a failed client of a round is; its cost still counts).
    Raises ``ConfigError`` for out-of-range values, ``TrainingStopped`` when no explorer
    returns finite weights.
    """

    def __init__(
        self,
        name: str = "autoflip",
        pruning: PruningParams | dict | None = None,
        exploration: ExplorationParams | dict | None = None,
        init_from: str = "initial",
    ):
        super().__init__(name)
        if not isinstance(pruning, PruningParams):
            pruning = from_node(PruningParams, pruning, "pruning")
        if not isinstance(exploration, ExplorationParams):
            exploration = from_node(ExplorationParams, exploration, "exploration")
        self.pruning = pruning
        self.exploration = exploration
        self.init_from = check_choice("algorithm.init_from", init_from, ("initial", "explored"))
        self.guidance: dict[str, torch.Tensor] | None = None
        self.masks: dict[str, torch.Tensor] | None = None
        self.tau: float | None = None
        self.removal: dict[str, list[int]] = {}
        self.threshold_used = self.pruning.threshold
        self.densities: dict[str, float] = {}
        self.units_total = 0

    def explorers(self, seed: int, num_clients: int) -> list[int]:
        """The explorers: max(1, round(fraction·K)) clients drawn from the exploration stream."""
        m = max(1, int(self.exploration.client_fraction * num_clients + 0.5))
        rng = np.random.default_rng([seed, EXPLORATION])
        return sorted(int(k) for k in rng.choice(num_clients, size=m, replace=False))

    def explore(self, fed) -> tuple[dict, dict]:
        """§2.1: every explorer trains its own copy of θ_0 (one cohort through
        ``fed.executor``, early stopping on the epoch-mean loss); returns ``(mean D_k (CPU),
        mean θ_k)``, both over the explorers used. Costs each explorer
        (:meth:`flip.metrics.ledger.CostLedger.add_explorer`)."""
        theta0 = {k: p.detach().clone() for k, p in fed.net.named_parameters()}
        total = {k: torch.zeros_like(p, device="cpu") for k, p in theta0.items()}
        explored = {k: torch.zeros_like(p) for k, p in theta0.items()}
        clients = self.explorers(fed.seed, fed.dm.num_clients)
        stop = CallbackSpec("early_stopping", {"patience": self.exploration.patience})
        jobs = [
            ClientJob(k, derive_seed(fed.seed, EXPLORATION, k), self.exploration.epochs, fed.lr,
                      (stop,))
            for k in clients
        ]
        used = 0
        for start in range(0, len(jobs), EXPLORATION_WAVE):
            wave = jobs[start:start + EXPLORATION_WAVE]
            for job, update in zip(wave, fed.executor.train(fed, fed.net, None, wave),
                                   strict=True):
                if not isinstance(update, ClientUpdate):  # its training raised
                    log.warning("explorer %d left out of the guidance: training raised %s: %s",
                                job.client, type(update).__name__, update)
                    fed.ledger.add_setup(0.0, BYTES_PER_VALUE * fed.ledger.dense_params, 0)
                    continue
                fed.ledger.add_explorer(update.samples_processed)
                bad = first_nonfinite(update.params)
                if bad is not None:  # a failed client (flip.federation.failures): left out
                    log.warning("explorer %d left out of the guidance: NaN/Inf values in %s",
                                job.client, bad)
                    continue
                used += 1
                for name, d in squared_displacement(theta0, update.params).items():
                    total[name] += d
                for name, p in update.params.items():
                    explored[name] += p.to(explored[name].device) / len(clients)
                log.info("explorer %d: %d epochs", job.client, len(update.epoch_losses))
        if used == 0:
            raise TrainingStopped(
                f"exploration: all {len(clients)} explorers failed or returned NaN/Inf weights; "
                "no guidance matrix can be computed (check the data and client.lr)."
            )
        if used < len(clients):  # the mean over the explorers that were used
            explored = {k: v * (len(clients) / used) for k, v in explored.items()}
        return {k: v / used for k, v in total.items()}, explored

    def setup(self, fed) -> None:
        """Exploration (§2.1), guidance matrix, hybrid mask (§2.2), start of round 1 (§2.3),
        then the compaction of the removed units (§2.2)."""
        mean_displacement, explored = self.explore(fed)
        self.guidance = guidance_matrix(mean_displacement)
        example = fed.dm.example_input().to(next(fed.net.parameters()).device)
        p = self.pruning
        scores = unit_scores(fed.net, self.guidance, example) if p.structured else {}
        self.units_total = sum(len(s) for s in scores.values())
        if p.target_density is None:
            self.threshold_used = p.threshold
        else:
            self.threshold_used = self.search_threshold(fed.net, example, scores)
        parts = hybrid_parts(fed.net, self.guidance, self.threshold_used, example, p.structured,
                             p.scope, scores)
        self.masks, self.tau, self.removal = parts.masks, parts.tau, parts.removal
        self.densities = {"unstructured": parts.unstructured_density(),
                          "hybrid": parts.density()}
        log.info("AutoFLIP mask: Tp=%.6g, density %.4f (unstructured alone %.4f), %d of %d "
                 "units removed", self.threshold_used, self.densities["hybrid"],
                 self.densities["unstructured"], self.units_removed, self.units_total)
        if self.init_from == "explored":
            with torch.no_grad():
                for name, param in fed.net.named_parameters():
                    param.copy_(explored[name])
        fed.set_masks(self.masks)
        if p.compact and self.removal:
            fed.compact(self.removal)

    @property
    def units_removed(self) -> int:
        return sum(len(v) for v in self.removal.values())

    def search_threshold(self, net, example, scores) -> float:
        """Tp such that the hybrid mask keeps ``pruning.target_density`` of the parameters
        within :data:`DENSITY_TOLERANCE`, by bisection on Tp ∈ [0, 1) (the density does not
        increase with Tp). Raises ``TrainingStopped`` when no Tp meets it (the density jumps
        over the target, e.g. when one unit holds more than a point of the parameters)."""
        p, target = self.pruning, self.pruning.target_density
        lo, hi, seen = 0.0, 1.0, []
        for _ in range(40):
            tp = (lo + hi) / 2
            density = hybrid_parts(net, self.guidance, tp, example, p.structured, p.scope,
                                   scores).density()
            seen.append((tp, density))
            if abs(density - target) <= DENSITY_TOLERANCE:
                log.info("pruning.target_density=%g: Tp=%.6g keeps %.4f", target, tp, density)
                return tp
            lo, hi = (tp, hi) if density > target else (lo, tp)
        if target >= 1 - DENSITY_TOLERANCE:
            return 0.0
        near = ", ".join(f"Tp={t:.6g}: {d:.4f}" for t, d in sorted(seen)[-4:])
        raise TrainingStopped(
            f"pruning.target_density={target} cannot be met within {DENSITY_TOLERANCE}: the "
            f"hybrid mask's density jumps over it ({near}); choose another target or "
            "pruning.threshold."
        )

    def info(self, fed) -> dict:
        """Tp used, the target density if any, the densities of the unstructured mask alone
        and of the hybrid mask (fractions of all parameters), units removed of those scored
        (summary's ``algorithm_info``; ALGORITHMS.md §4: report densities, not Tp)."""
        return {
            "threshold": self.threshold_used,
            "target_density": self.pruning.target_density,
            "density_unstructured": self.densities.get("unstructured"),
            "density_hybrid": self.densities.get("hybrid"),
            "units_removed": self.units_removed,
            "units_total": self.units_total,
        }

    def state_dict(self) -> dict:
        """The guidance matrix G, the dense-layout mask M (bool), τ, the removed units, the Tp
        used, the densities and the units scored: all a resumed run needs (§2.2; the
        compaction itself is in the federation's state)."""
        return {"guidance": self.guidance, "masks": self.masks, "tau": self.tau,
                "removal": self.removal, "threshold_used": self.threshold_used,
                "densities": self.densities, "units_total": self.units_total}

    def load_state_dict(self, state: dict) -> None:
        self.guidance, self.masks, self.tau = state["guidance"], state["masks"], state["tau"]
        self.removal = state.get("removal", {})
        self.threshold_used = state["threshold_used"]
        self.densities = dict(state["densities"])
        self.units_total = state["units_total"]

    def save(self, out_dir: Path) -> list[Path]:
        """Writes ``guidance.pt`` (G per parameter, float32) and ``mask.pt`` (bool per
        parameter in the dense layout, plus τ and the removed units per group) into
        ``out_dir``."""
        out_dir = Path(out_dir)
        paths = [out_dir / "guidance.pt", out_dir / "mask.pt"]
        torch.save(self.guidance, paths[0])
        torch.save(
            {"tau": self.tau, "threshold": self.threshold_used, "masks": self.masks,
             "removal": self.removal},
            paths[1],
        )
        return paths
