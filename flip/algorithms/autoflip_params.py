"""AutoFLIP's knobs as validated parameter dataclasses: ``pruning.*``, ``exploration.*`` and
``exploration.privacy.*`` of ``configs/algorithm/autoflip.yaml`` (ALGORITHMS.md §2; issue 14's
robust and private guidance: docs/robust-guidance.md). Each refuses a bad value with a
``ConfigError`` naming the field and what it accepts, before any data is read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flip.params import POS_INT, check, check_bool, check_choice, from_node, is_int, is_number
from flip.pruning.guidance_robust import AGGREGATES, ATTACKS


@dataclass(frozen=True)
class PruningParams:
    """AutoFLIP's mask (``pruning.*``, ALGORITHMS.md §2.2).

    ``threshold``: Tp ∈ [0, 1), the quantile of the guidance matrix G over the prunable entries
    used as the threshold τ (paper 0.30). Tp is not the sparsity: the unstructured mask prunes
    the entries with G ≤ τ (a fraction Tp), the structured part then removes whole units and
    their consumers' inputs, so the hybrid mask's density is below 1 − Tp (the summary reports
    it). ``target_density``: ``None``, or the fraction of all parameters the hybrid mask
    should keep: Tp is then found by bisection so the density is within
    :data:`flip.pruning.target_density.DENSITY_TOLERANCE` of it (``threshold`` is ignored; the Tp
    chosen is logged and reported). ``structured``: also remove whole filters/neurons/LSTM
    units whose mean G ≤ τ;
    ``scope``: ``weights`` (Conv/Linear/LSTM/Embedding weights) or ``all`` (every tensor, as
    the released code did); ``compact``: train the physically smaller network; ``adaptive``:
    ``none`` (one mask, fixed, §2.2) or ``per_round`` (each round's mask from the reports of
    that round's participants, §2.4; :mod:`flip.algorithms.autoflip_adaptive`), which needs
    every client to explore and a fixed ``threshold`` (no ``target_density``). Raises
    ``ConfigError`` naming the field.
    """

    threshold: float = 0.3
    structured: bool = True
    scope: str = "weights"
    compact: bool = True
    target_density: float | None = None
    adaptive: str = "none"

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
        check_choice("pruning.adaptive", self.adaptive, ("none", "per_round"))
        check("pruning.adaptive", self.adaptive,
              self.adaptive == "none" or self.target_density is None,
              "none (with pruning.target_density set)",
              "per_round masks use pruning.threshold; set pruning.target_density=null.")


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
    malicious (simulated on the server), ``attack_scale`` the factor of ``scaled``;
    ``secure_aggregation`` (``engine=flower`` only): the explorers send their D_k masked by
    Flower's SecAgg+, so the server learns their sum and nothing else, quantised over
    [0, ``secure_clipping_range``] (default: the privacy clip C; :meth:`check_secure`).

    Raises ``ConfigError`` naming the field: out-of-range values, an unknown aggregate or
    attack, privacy with another aggregate than the mean, an ``attack_fraction`` > 0 with
    ``attack: none``, secure aggregation with what it cannot go with. Median, trimmed mean
    and secure aggregation need at least two explorers: checked once K is known
    (:meth:`check_explorers`)."""

    client_fraction: float = 1.0
    epochs: int = 150
    patience: int = 40
    aggregate: str = "mean"
    trim: float = 0.1
    privacy: PrivacyParams | dict | None = None
    attack: str = "none"
    attack_fraction: float = 0.0
    attack_scale: float = 1e6
    secure_aggregation: bool = False
    secure_clipping_range: float | None = None

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
        check_bool("exploration.secure_aggregation", self.secure_aggregation)
        check("exploration.secure_clipping_range", self.secure_clipping_range,
              self.secure_clipping_range is None
              or (is_number(self.secure_clipping_range) and self.secure_clipping_range > 0),
              "null (the privacy clip C) or the largest D_k entry SecAgg+ represents, > 0")
        if self.secure_aggregation:
            self.check_secure()

    def check_secure(self) -> None:
        """What secure aggregation of the D_k (Flower's SecAgg+, docs/robust-guidance.md)
        cannot go with, each a ``ConfigError`` naming the field: another aggregate than the
        mean (SecAgg+ releases a sum only), an attack (simulated on the server, which never
        sees a report), no range for the quantisation (``secure_clipping_range``, or the
        privacy clip C)."""
        check("exploration.aggregate", self.aggregate, self.aggregate == "mean",
              "mean (with exploration.secure_aggregation=true)",
              "Secure aggregation gives the server the sum of the D_k only; a median or a "
              "trimmed mean needs every report.")
        check("exploration.attack", self.attack, self.attack == "none",
              "none (with exploration.secure_aggregation=true)",
              "Attacks are simulated on the server, which never sees a report under SecAgg+.")
        check("exploration.secure_clipping_range", self.secure_clipping_range,
              self.secure_clipping_range is not None or self.privacy.enabled,
              "the largest D_k entry SecAgg+ represents, > 0 (required without "
              "exploration.privacy, whose clip C is the default)")

    @property
    def secure_range(self) -> float:
        """SecAgg+'s clipping range for the D_k entries: ``secure_clipping_range``, else
        the privacy clip C (no entry of a D_k clipped to L2 norm C exceeds C)."""
        if self.secure_clipping_range is not None:
            return float(self.secure_clipping_range)
        return float(self.privacy.clip)

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
        check("exploration.secure_aggregation", self.secure_aggregation,
              not self.secure_aggregation or n >= 2,
              f"false (with {n} explorer: exploration.client_fraction={self.client_fraction} "
              f"of K={num_clients} clients)",
              "A secure sum of one report is that report; SecAgg+ needs at least 2 explorers.")
