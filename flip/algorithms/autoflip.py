"""AutoFLIP: federated loss exploration, guidance matrix, hybrid mask (ALGORITHMS.md §2)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from flip.algorithms.autoflip_adaptive import AdaptiveMasks
from flip.algorithms.autoflip_params import ExplorationParams, PruningParams
from flip.algorithms.autoflip_secure import (  # noqa: F401  (GUIDANCE_NOISE_STREAM: public)
    GUIDANCE_NOISE_STREAM,
    check_secure_engine,
    check_secure_settings,
    released_mean,
    secure_displacement,
)
from flip.algorithms.base import Algorithm
from flip.errors import TrainingStopped
from flip.federation.callbacks import CallbackSpec
from flip.federation.executor import ClientJob, ClientUpdate
from flip.federation.failures import first_nonfinite
from flip.federation.seeding import EXPLORATION, derive_seed
from flip.metrics.costs import BYTES_PER_VALUE
from flip.params import check, check_choice, from_node
from flip.pruning import guidance_matrix, squared_displacement
from flip.pruning.guidance_robust import (
    aggregate_displacements,
    attack_displacement,
    clip_displacement,
    gaussian_epsilon,
    malicious_explorers,
    trimmed_count,
)
from flip.pruning.masks import hybrid_parts, mask_jaccard
from flip.pruning.structured import unit_scores
from flip.pruning.target_density import threshold_for_density

log = logging.getLogger(__name__)

GUIDANCE_ATTACK_STREAM = 4003
"""Stream key of the malicious explorers' choice and of the ``random`` attack's draws."""

EXPLORATION_WAVE = 32
"""Explorers trained per executor call: the explorers are one cohort, sent in waves of this
size so that no more than this many explorers' weights are held at once (FEMNIST has ~3,500)."""


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
    train and send it with the unstructured mask inside (§2.2). With ``pruning.adaptive:
    per_round`` the global network stays dense and each round's clients train under that
    round's mask (§2.4, :class:`flip.algorithms.autoflip_adaptive.AdaptiveMasks`).

    Every explorer starts from its own copy of θ_0 (the released code shared one model object
    among explorers, so its "average" was one trajectory: a bug flip does not reproduce).
    Explorers train with the round-1 client learning rate and a fresh optimizer, as one cohort
    through the executor (in waves of :data:`EXPLORATION_WAVE`); D is the unweighted mean of
    D_k = (θ_k − θ_0)² over the explorers whose training succeeded with a finite θ_k (a failed
    one is left out with a warning, as a failed client of a round is; its cost still counts).
    Raises ``ConfigError`` for out-of-range values (and ``pruning.adaptive: per_round`` with
    ``exploration.client_fraction`` < 1 or private guidance), ``TrainingStopped`` when no
    explorer returns finite weights.
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
        self.adaptive: AdaptiveMasks | None = None
        self.clean_displacement: dict[str, torch.Tensor] | None = None
        self.jaccard_clean: float | None = None
        if pruning.adaptive == "per_round":
            check("pruning.adaptive", pruning.adaptive, exploration.client_fraction == 1.0,
                  f"none (with exploration.client_fraction={exploration.client_fraction})",
                  "per_round masks need every client's report: exploration.client_fraction=1.")
            check("pruning.adaptive", pruning.adaptive, not exploration.privacy.enabled,
                  "none (with exploration.privacy.noise_multiplier > 0)",
                  "Each round's mask would be a new release of the reports; its privacy is "
                  "not accounted.")
            self.adaptive = AdaptiveMasks(exploration.aggregate, exploration.trim)
        check_secure_settings(exploration, pruning, self.init_from)

    def check_engine(self, executor) -> None:
        """Refuse secure aggregation on an engine without SecAgg+
        (:func:`flip.algorithms.autoflip_secure.check_secure_engine`)."""
        check_secure_engine(self.exploration, executor)

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
        mean, float operation for float operation. With an attack, the same aggregate of the
        honest reports (clipped when private, without noise) is kept as
        :attr:`clean_displacement`, the mask the run would have had without the attack. With
        ``exploration.secure_aggregation`` the explorers are one SecAgg+ run instead
        (:func:`flip.algorithms.autoflip_secure.secure_displacement`) and the mean θ_k is not
        known (``{}``)."""
        ex = self.exploration
        theta0 = {k: p.detach().clone() for k, p in fed.net.named_parameters()}
        total = {k: torch.zeros_like(p, device="cpu") for k, p in theta0.items()}
        reports: list[dict] = []
        attacked = ex.attack != "none" and ex.attack_fraction > 0
        clean_total = {k: torch.zeros_like(v) for k, v in total.items()} if attacked else None
        clean_reports: list[dict] = []
        explored = {k: torch.zeros_like(p) for k, p in theta0.items()}
        clients = self.explorers(fed.seed, fed.dm.num_clients)
        self.malicious = self.attackers(fed.seed, clients)
        stop = CallbackSpec("early_stopping", {"patience": ex.patience})
        jobs = [
            ClientJob(k, derive_seed(fed.seed, EXPLORATION, k), ex.epochs, fed.lr, (stop,))
            for k in clients
        ]
        if ex.secure_aggregation:  # SecAgg+: the server learns the sum of the D_k alone
            return secure_displacement(fed, jobs, ex), {}
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
                report = honest = squared_displacement(theta0, update.params)
                if job.client in self.malicious:
                    rng = np.random.default_rng([fed.seed, GUIDANCE_ATTACK_STREAM, job.client])
                    report = attack_displacement(report, ex.attack, ex.attack_scale, rng)
                if ex.privacy.enabled:
                    report = clip_displacement(report, ex.privacy.clip)
                    honest = clip_displacement(honest, ex.privacy.clip)
                if attacked and ex.aggregate == "mean":
                    for name, d in honest.items():
                        clean_total[name] += d
                elif attacked:
                    clean_reports.append(honest)
                if self.adaptive is not None:
                    self.adaptive.reports[job.client] = report
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
            if attacked:
                self.clean_displacement = aggregate_displacements(clean_reports, ex.aggregate,
                                                                  ex.trim)
            return aggregate_displacements(reports, ex.aggregate, ex.trim), explored
        if attacked:
            self.clean_displacement = {k: v / used for k, v in clean_total.items()}
        return released_mean(total, used, ex.privacy, fed.seed), explored

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
            self.threshold_used = threshold_for_density(fed.net, self.guidance, p.target_density,
                                                        example, p.structured, p.scope, scores)
        parts = hybrid_parts(fed.net, self.guidance, self.threshold_used, example, p.structured,
                             p.scope, scores)
        self.masks, self.tau, self.removal = parts.masks, parts.tau, parts.removal
        self.densities = {"unstructured": parts.unstructured_density(),
                          "hybrid": parts.density()}
        if self.clean_displacement is not None:  # how far the attack moved the mask
            clean = hybrid_parts(fed.net, guidance_matrix(self.clean_displacement),
                                 self.threshold_used, example, p.structured, p.scope)
            self.jaccard_clean = mask_jaccard(parts.masks, clean.masks)
            self.clean_displacement = None
        log.info("AutoFLIP mask%s: Tp=%.6g, density %.4f (unstructured alone %.4f), %d of %d "
                 "units removed", " of all explorers (per_round: each round its own)"
                 if self.adaptive is not None else "", self.threshold_used,
                 self.densities["hybrid"], self.densities["unstructured"], self.units_removed,
                 self.units_total)
        if self.init_from == "explored":
            with torch.no_grad():
                for name, param in fed.net.named_parameters():
                    param.copy_(explored[name])
        if self.adaptive is not None:  # θ stays dense; each round brings its own mask (§2.4)
            return
        fed.set_masks(self.masks)
        if p.compact and self.removal:
            fed.compact(self.removal)

    def client_model(self, fed, round_idx: int):
        """The global network and the fixed mask; with ``pruning.adaptive: per_round`` round
        ``round_idx``'s masked (and compacted) copy, :meth:`AdaptiveMasks.client_model`."""
        if self.adaptive is None:
            return fed.net, fed.masks
        return self.adaptive.client_model(fed, round_idx, self.pruning)

    def on_client_update(self, fed, round_idx: int, update):
        return update if self.adaptive is None else self.adaptive.on_client_update(fed, update)

    def on_round_end(self, fed, round_idx: int) -> None:
        if self.adaptive is not None:
            self.adaptive.on_round_end(fed)

    @property
    def units_removed(self) -> int:
        return sum(len(v) for v in self.removal.values())

    def info(self, fed) -> dict:
        """Tp used, the target density if any, the densities of the unstructured mask alone
        and of the hybrid mask (fractions of all parameters), units removed of those scored
        (summary's ``algorithm_info``; ALGORITHMS.md §4: report densities, not Tp), and how the
        guidance was made (docs/robust-guidance.md): ``guidance_aggregate``,
        ``guidance_trim`` (null unless trimmed_mean), ``guidance_attack``,
        ``guidance_attack_fraction``, ``guidance_malicious`` (the malicious explorers' client
        ids), ``guidance_noise_multiplier``, ``guidance_clip``, ``guidance_delta`` and
        ``guidance_epsilon`` (ε at δ from ``dp-accounting``'s RDP accountant for the one
        release; null without privacy, where ε is infinite), ``guidance_jaccard_clean`` (with
        an attack: the Jaccard index of the mask's kept entries against the mask the honest
        reports give, :func:`flip.pruning.masks.mask_jaccard`; null without an attack),
        ``guidance_secure_aggregation`` (the D_k summed by SecAgg+). With
        ``pruning.adaptive: per_round`` the densities and units removed are means over the
        rounds' masks, and ``density_hybrid_fixed`` is the density of the one mask all
        explorers give."""
        ex, dp = self.exploration, self.exploration.privacy
        out = {
            "adaptive": self.pruning.adaptive,
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
            "guidance_jaccard_clean": self.jaccard_clean,
            "guidance_secure_aggregation": ex.secure_aggregation,
        }
        if self.adaptive is not None:
            out["density_hybrid_fixed"] = out["density_hybrid"]
            out.update(self.adaptive.summary())
        return out

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
                "malicious": list(self.malicious), "jaccard_clean": self.jaccard_clean,
                **({"adaptive": self.adaptive.state_dict()} if self.adaptive else {})}

    def load_state_dict(self, state: dict) -> None:
        self.guidance, self.masks, self.tau = state["guidance"], state["masks"], state["tau"]
        self.removal = state.get("removal", {})
        self.threshold_used = state["threshold_used"]
        self.densities = dict(state["densities"])
        self.units_total = state["units_total"]
        self.malicious = list(state.get("malicious", []))
        self.jaccard_clean = state.get("jaccard_clean")
        if self.adaptive is not None:
            self.adaptive.load_state_dict(state["adaptive"])

    def save(self, out_dir: Path) -> list[Path]:
        """Writes ``guidance.pt`` (G per parameter, float32) and ``mask.pt`` (bool per
        parameter in the dense layout, plus τ and the removed units per group) into
        ``out_dir``; with ``pruning.adaptive: per_round`` G is all explorers' and the mask the
        last round's, and ``adaptive_masks.json`` lists each round's participants, densities
        and units removed."""
        out_dir = Path(out_dir)
        paths = [out_dir / "guidance.pt", out_dir / "mask.pt"]
        torch.save(self.guidance, paths[0])
        last = self.adaptive.parts if self.adaptive is not None else None
        torch.save(
            {"tau": last.tau if last else self.tau, "threshold": self.threshold_used,
             "masks": last.masks if last else self.masks,
             "removal": last.removal if last else self.removal},
            paths[1],
        )
        if self.adaptive is not None:
            paths.append(out_dir / "adaptive_masks.json")
            paths[-1].write_text(json.dumps(self.adaptive.history, indent=2) + "\n")
        return paths
