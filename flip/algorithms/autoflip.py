"""AutoFLIP: federated loss exploration, guidance matrix, hybrid mask (ALGORITHMS.md §2)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
from flip.pruning.guidance_robust import (
    AGGREGATES,
    ATTACKS,
    add_gaussian_noise,
    aggregate_displacements,
    attack_displacement,
    clip_displacement,
    gaussian_epsilon,
    malicious_explorers,
    trimmed_count,
)
from flip.pruning.masks import hybrid_parts
from flip.pruning.structured import unit_scores

log = logging.getLogger(__name__)

DENSITY_TOLERANCE = 0.005
"""How close ``pruning.target_density`` must be met (half a percentage point)."""

GUIDANCE_ATTACK_STREAM = 4003
"""Stream key of the malicious explorers' choice and of the ``random`` attack's draws."""
GUIDANCE_NOISE_STREAM = 4004
"""Stream key of private guidance's Gaussian noise (docs/robust-guidance.md)."""

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
class PrivacyParams:
    """Private guidance (``exploration.privacy.*``; docs/robust-guidance.md): the Gaussian
    mechanism on the sum of the explorers' reports (Dwork & Roth 2014, §3.5.3).

    ``noise_multiplier`` σ ≥ 0 (0: off, the exact non-private guidance of ALGORITHMS.md §2.1);
    ``clip`` C > 0, the L2 norm each explorer's D_k (flattened over all guided tensors) is
    clipped to, required when σ > 0 (D_k's scale depends on the model and the data, so there
    is no default); ``delta`` δ ∈ (0, 1) at which ε is reported (from ``dp-accounting``'s
    RDP accountant, :func:`flip.pruning.guidance_robust.gaussian_epsilon`). Raises
    ``ConfigError`` naming the field."""

    noise_multiplier: float = 0.0
    clip: float | None = None
    delta: float = 1e-5

    def __post_init__(self):
        check("exploration.privacy.noise_multiplier", self.noise_multiplier,
              is_number(self.noise_multiplier) and self.noise_multiplier >= 0,
              "a noise multiplier sigma >= 0 (0: no noise, no clipping)")
        if self.enabled:
            check("exploration.privacy.clip", self.clip,
                  is_number(self.clip) and self.clip > 0,
                  "an L2 norm C > 0 (required when exploration.privacy.noise_multiplier > 0)")
        else:
            check("exploration.privacy.clip", self.clip,
                  self.clip is None or (is_number(self.clip) and self.clip > 0),
                  "null or an L2 norm C > 0")
        check("exploration.privacy.delta", self.delta,
              is_number(self.delta) and 0 < self.delta < 1, "a probability 0 < delta < 1")

    @property
    def enabled(self) -> bool:
        return self.noise_multiplier > 0


@dataclass(frozen=True)
class ExplorationParams:
    """AutoFLIP's federated loss exploration (``exploration.*``, ALGORITHMS.md §2.1):
    ``client_fraction`` (explorers / K, in (0, 1]; paper 1.0), ``epochs`` (at most, paper 150),
    ``patience`` (early stop after this many epochs without a lower epoch-mean training loss,
    paper 40).

    What the server makes of the explorers' D_k (docs/robust-guidance.md;
    :mod:`flip.pruning.guidance_robust`): ``aggregate`` ``mean`` (§2.1, default),
    ``median`` or ``trimmed_mean`` (coordinate-wise, Yin et al., ICML 2018) with ``trim`` the
    fraction dropped from each end (0 ≤ trim < 0.5); ``privacy`` (:class:`PrivacyParams` or
    its mapping): clipping and Gaussian noise on the sum, which needs ``aggregate: mean``
    (the sensitivity C of a sum of clipped reports is what the noise is calibrated to; a
    median's or trimmed mean's is not bounded by C alone); ``attack`` ``none``, ``scaled``,
    ``inverted`` or ``random`` for the ``attack_fraction`` of the explorers that are
    malicious (simulated on the server), ``attack_scale`` the factor of ``scaled``.

    Raises ``ConfigError`` naming the field: out-of-range values, an unknown aggregate or
    attack, privacy with another aggregate than the mean, an ``attack_fraction`` > 0 with
    ``attack: none``. Median and trimmed mean need at least two explorers: checked once K is
    known (:meth:`check_explorers`)."""

    client_fraction: float = 1.0
    epochs: int = 150
    patience: int = 40
    aggregate: str = "mean"
    trim: float = 0.1
    privacy: PrivacyParams | dict | None = None
    attack: str = "none"
    attack_fraction: float = 0.0
    attack_scale: float = 1e6

    def __post_init__(self):
        check("exploration.client_fraction", self.client_fraction,
              is_number(self.client_fraction) and 0.0 < self.client_fraction <= 1.0,
              "a fraction in (0, 1]")
        check("exploration.epochs", self.epochs, is_int(self.epochs) and self.epochs >= 1,
              POS_INT)
        check("exploration.patience", self.patience,
              is_int(self.patience) and self.patience >= 1, POS_INT)
        check_choice("exploration.aggregate", self.aggregate, AGGREGATES)
        check("exploration.trim", self.trim, is_number(self.trim) and 0.0 <= self.trim < 0.5,
              "a fraction trimmed from each end, 0 <= trim < 0.5")
        if not isinstance(self.privacy, PrivacyParams):
            check("exploration.privacy", self.privacy,
                  self.privacy is None or isinstance(self.privacy, Mapping),
                  "a mapping with the keys noise_multiplier, clip, delta")
            object.__setattr__(self, "privacy",
                               from_node(PrivacyParams, self.privacy, "exploration.privacy"))
        if self.privacy.enabled:
            check("exploration.aggregate", self.aggregate, self.aggregate == "mean",
                  "mean (when exploration.privacy.noise_multiplier > 0)",
                  "The noise is calibrated to the sum of the clipped reports (sensitivity C); "
                  "a median's or trimmed mean's sensitivity is not bounded by C.")
        check_choice("exploration.attack", self.attack, ATTACKS)
        check("exploration.attack_fraction", self.attack_fraction,
              is_number(self.attack_fraction) and 0.0 <= self.attack_fraction <= 1.0,
              "a fraction of the explorers in [0, 1]")
        check("exploration.attack", self.attack,
              self.attack != "none" or self.attack_fraction == 0,
              ", ".join(a for a in ATTACKS if a != "none")
              + f" (exploration.attack_fraction={self.attack_fraction} > 0)",
              "Set exploration.attack_fraction=0 for a run without malicious explorers.")
        check("exploration.attack_scale", self.attack_scale,
              is_number(self.attack_scale) and self.attack_scale > 0, "a finite factor > 0")

    def explorer_count(self, num_clients: int) -> int:
        """max(1, round(client_fraction · K)), round half up (§2.1)."""
        return max(1, int(self.client_fraction * num_clients + 0.5))

    def check_explorers(self, num_clients: int) -> None:
        """Refuse ``median``/``trimmed_mean`` with a single explorer (``ConfigError`` naming
        ``exploration.aggregate``): one report has no majority to be robust with."""
        n = self.explorer_count(num_clients)
        check("exploration.aggregate", self.aggregate, self.aggregate == "mean" or n >= 2,
              f"mean (with {n} explorer: exploration.client_fraction={self.client_fraction} "
              f"of K={num_clients} clients)",
              "median and trimmed_mean need at least 2 explorers.")


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
        self.malicious: list[int] = []

    def explorers(self, seed: int, num_clients: int) -> list[int]:
        """The explorers: max(1, round(fraction·K)) clients drawn from the exploration stream."""
        m = self.exploration.explorer_count(num_clients)
        rng = np.random.default_rng([seed, EXPLORATION])
        return sorted(int(k) for k in rng.choice(num_clients, size=m, replace=False))

    def attackers(self, seed: int, explorers: list[int]) -> list[int]:
        """The malicious explorers (``exploration.attack_fraction`` of them, round half up),
        drawn from their own stream of the run seed (:data:`GUIDANCE_ATTACK_STREAM`), so the
        same seed picks the same ones whatever the aggregate; none when ``attack: none``."""
        ex = self.exploration
        if ex.attack == "none":
            return []
        chosen = malicious_explorers(explorers, ex.attack_fraction,
                                     np.random.default_rng([seed, GUIDANCE_ATTACK_STREAM]))
        if ex.attack_fraction > 0 and not chosen:
            log.warning("exploration.attack_fraction=%g of %d explorers rounds to no malicious "
                        "explorer", ex.attack_fraction, len(explorers))
        return chosen

    def check_data(self, dm) -> None:
        """Refuse settings the data's K cannot satisfy (``ConfigError``): ``median`` or
        ``trimmed_mean`` with a single explorer. Called by :func:`flip.train.train` once the
        data module is set up, before anything is written, and by :meth:`setup`."""
        self.exploration.check_explorers(dm.num_clients)

    def explore(self, fed) -> tuple[dict, dict]:
        """§2.1: every explorer trains its own copy of θ_0 (one cohort through
        ``fed.executor``, early stopping on the epoch-mean loss); returns ``(D (CPU), mean
        θ_k)``, both over the explorers used. Costs each explorer
        (:meth:`flip.metrics.ledger.CostLedger.add_explorer`).

        D is the aggregate of the reports D_k (docs/robust-guidance.md,
        :mod:`flip.pruning.guidance_robust`): each report of a malicious explorer
        (:meth:`attackers`) is first replaced by its attack (a simulation on the server:
        the explorer trained honestly; its θ_k still enters the mean θ_k of
        ``init_from: explored``), then, with privacy on, clipped to L2 norm C; ``mean``
        accumulates the reports' sum (one model in memory however many explorers), adds the
        Gaussian noise N(0, σ²C²) once to it (privacy on) and divides by the number of
        explorers used (a count the server is treated as knowing: it follows from the config
        and from which explorers failed, not from their data); ``median`` and
        ``trimmed_mean`` keep every report (n models in memory) and combine them coordinate
        by coordinate. With the defaults (mean, no privacy, no attack) D is exactly §2.1's
        mean, float operation for float operation."""
        ex = self.exploration
        theta0 = {k: p.detach().clone() for k, p in fed.net.named_parameters()}
        total = {k: torch.zeros_like(p, device="cpu") for k, p in theta0.items()}
        reports: list[dict] = []
        explored = {k: torch.zeros_like(p) for k, p in theta0.items()}
        clients = self.explorers(fed.seed, fed.dm.num_clients)
        self.malicious = self.attackers(fed.seed, clients)
        stop = CallbackSpec("early_stopping", {"patience": ex.patience})
        jobs = [
            ClientJob(k, derive_seed(fed.seed, EXPLORATION, k), ex.epochs, fed.lr, (stop,))
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
                report = squared_displacement(theta0, update.params)
                if job.client in self.malicious:
                    rng = np.random.default_rng([fed.seed, GUIDANCE_ATTACK_STREAM, job.client])
                    report = attack_displacement(report, ex.attack, ex.attack_scale, rng)
                if ex.privacy.enabled:
                    report = clip_displacement(report, ex.privacy.clip)
                if ex.aggregate == "mean":
                    for name, d in report.items():
                        total[name] += d
                else:
                    reports.append(report)
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
        if ex.aggregate != "mean":
            if used < 2:
                log.warning("exploration.aggregate=%s over a single explorer's report",
                            ex.aggregate)
            elif ex.aggregate == "trimmed_mean" and trimmed_count(used, ex.trim) == 0:
                log.warning("exploration.trim=%g of %d explorers trims none: the trimmed mean "
                            "is the mean", ex.trim, used)
            return aggregate_displacements(reports, ex.aggregate, ex.trim), explored
        if ex.privacy.enabled:
            gen = torch.Generator().manual_seed(derive_seed(fed.seed, GUIDANCE_NOISE_STREAM))
            total = add_gaussian_noise(total, ex.privacy.noise_multiplier, ex.privacy.clip, gen)
        return {k: v / used for k, v in total.items()}, explored

    def setup(self, fed) -> None:
        """Exploration (§2.1), guidance matrix, hybrid mask (§2.2), start of round 1 (§2.3),
        then the compaction of the removed units (§2.2)."""
        self.check_data(fed.dm)
        displacement, explored = self.explore(fed)
        self.guidance = guidance_matrix(displacement)
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
        (summary's ``algorithm_info``; ALGORITHMS.md §4: report densities, not Tp), and how the
        guidance was made (docs/robust-guidance.md): ``guidance_aggregate``,
        ``guidance_trim`` (null unless trimmed_mean), ``guidance_attack``,
        ``guidance_attack_fraction``, ``guidance_malicious`` (the malicious explorers' client
        ids), ``guidance_noise_multiplier``, ``guidance_clip``, ``guidance_delta`` and
        ``guidance_epsilon`` (ε at δ from ``dp-accounting``'s RDP accountant for the one
        release; null without privacy, where ε is infinite)."""
        ex, dp = self.exploration, self.exploration.privacy
        return {
            "threshold": self.threshold_used,
            "target_density": self.pruning.target_density,
            "density_unstructured": self.densities.get("unstructured"),
            "density_hybrid": self.densities.get("hybrid"),
            "units_removed": self.units_removed,
            "units_total": self.units_total,
            "guidance_aggregate": ex.aggregate,
            "guidance_trim": ex.trim if ex.aggregate == "trimmed_mean" else None,
            "guidance_attack": ex.attack,
            "guidance_attack_fraction": ex.attack_fraction,
            "guidance_malicious": list(self.malicious),
            "guidance_noise_multiplier": dp.noise_multiplier,
            "guidance_clip": dp.clip if dp.enabled else None,
            "guidance_delta": dp.delta if dp.enabled else None,
            "guidance_epsilon": self.epsilon,
        }

    @property
    def epsilon(self) -> float | None:
        """ε of the private guidance at ``exploration.privacy.delta`` (one Gaussian release,
        :func:`flip.pruning.guidance_robust.gaussian_epsilon`); ``None`` without privacy."""
        dp = self.exploration.privacy
        return gaussian_epsilon(dp.noise_multiplier, dp.delta) if dp.enabled else None

    def state_dict(self) -> dict:
        """The guidance matrix G, the dense-layout mask M (bool), τ, the removed units, the Tp
        used, the densities and the units scored: all a resumed run needs (§2.2; the
        compaction itself is in the federation's state), and the malicious explorers."""
        return {"guidance": self.guidance, "masks": self.masks, "tau": self.tau,
                "removal": self.removal, "threshold_used": self.threshold_used,
                "densities": self.densities, "units_total": self.units_total,
                "malicious": list(self.malicious)}

    def load_state_dict(self, state: dict) -> None:
        self.guidance, self.masks, self.tau = state["guidance"], state["masks"], state["tau"]
        self.removal = state.get("removal", {})
        self.threshold_used = state["threshold_used"]
        self.densities = dict(state["densities"])
        self.units_total = state["units_total"]
        self.malicious = list(state.get("malicious", []))

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
