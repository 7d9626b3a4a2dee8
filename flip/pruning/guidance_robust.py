"""Robust, private and attacked guidance: what the server does with the explorers' D_k before
the guidance matrix (ALGORITHMS.md §2.1; docs/robust-guidance.md).

§2.1 averages the explorers' reports D_k = (θ_k − θ_0)² and normalises the mean into G. This
module holds the pure functions that replace or wrap that mean:

- :func:`aggregate_displacements`: the coordinate-wise ``mean``, ``median`` or
  ``trimmed_mean`` of the D_k (Yin, Chen, Ramchandran & Bartlett, "Byzantine-robust
  distributed learning: towards optimal statistical rates", ICML 2018, §3: the median and the
  β-trimmed mean, coordinate by coordinate).
- :func:`clip_displacement`, :func:`add_gaussian_noise`, :func:`gaussian_epsilon`: the
  Gaussian mechanism on the sum of the clipped D_k (one release; Dwork & Roth, "The
  algorithmic foundations of differential privacy", 2014, §3.5.3; ε from Google's
  ``dp-accounting`` RDP accountant, Mironov, "Rényi differential privacy", CSF 2017).
- :func:`attack_displacement`: what a malicious explorer reports instead of its D_k
  (``scaled``, ``inverted``, ``random``), simulated on the server after the report arrives.

A report is a mapping from parameter names to float tensors of the parameters' shapes (one
entry per parameter entry), as :func:`flip.pruning.guidance.squared_displacement` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from flip.errors import ConfigError

AGGREGATES = ("mean", "median", "trimmed_mean")
"""``exploration.aggregate``: how the server combines the explorers' D_k."""
ATTACKS = ("none", "scaled", "inverted", "random")
"""``exploration.attack``: what a malicious explorer reports instead of its D_k."""


def trimmed_count(n: int, trim: float) -> int:
    """b = ⌊trim·n⌋, the reports dropped from EACH end of every coordinate's sorted values by
    the trimmed mean (Yin et al. 2018, §3: the β-trimmed mean with β = ``trim``). With
    0 ≤ trim < 0.5, n − 2b ≥ 1 reports always remain."""
    return math.floor(trim * n)


def aggregate_displacements(
    reports: Sequence[Mapping[str, Tensor]], how: str = "mean", trim: float = 0.0
) -> dict[str, Tensor]:
    """The coordinate-wise aggregate of the explorers' reports (ALGORITHMS.md §2.1's D).

    Args:
        reports: n ≥ 1 reports D_k, each ``{name: tensor of the parameter's shape}``, all with
            the same names and shapes.
        how: ``mean`` (D = (1/n) Σ_k D_k, §2.1), ``median`` (per entry, the median of the n
            values; for even n the mean of the two middle ones) or ``trimmed_mean`` (per entry,
            sort the n values, drop b = ⌊trim·n⌋ from each end, average the n − 2b left;
            Yin et al., ICML 2018, §3).
        trim: the fraction β dropped from each end by ``trimmed_mean``, 0 ≤ β < 0.5 (ignored
            otherwise). β with ⌊β·n⌋ = 0 gives the mean.

    Returns:
        ``{name: tensor}`` with the reports' names and shapes, float32.

    Raises:
        ValueError: no reports, or reports whose names or shapes differ.
        ConfigError: ``how`` not one of :data:`AGGREGATES` (field ``exploration.aggregate``),
            ``trim`` outside [0, 0.5) (field ``exploration.trim``).
    """
    if how not in AGGREGATES:
        raise ConfigError("exploration.aggregate", how, ", ".join(AGGREGATES))
    if not 0.0 <= trim < 0.5:
        raise ConfigError("exploration.trim", trim, "a fraction with 0 <= trim < 0.5")
    if not reports:
        raise ValueError("aggregate_displacements: no reports to aggregate")
    names = list(reports[0])
    for k, report in enumerate(reports):
        if list(report) != names:
            raise ValueError(f"report {k} has the tensors {sorted(report)}, not {sorted(names)}")
    n = len(reports)
    out = {}
    for name in names:
        shapes = {tuple(r[name].shape) for r in reports}
        if len(shapes) != 1:
            raise ValueError(f"reports disagree on the shape of {name}: {sorted(shapes)}")
        stack = torch.stack([r[name].detach().float().cpu() for r in reports])  # (n, *shape)
        if how == "mean":
            out[name] = stack.mean(0)
            continue
        ordered = stack.sort(dim=0).values
        if how == "median":
            mid = n // 2
            out[name] = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        else:
            b = trimmed_count(n, trim)
            out[name] = ordered[b:n - b].mean(0)
    return out


def displacement_norm(report: Mapping[str, Tensor]) -> float:
    """‖D_k‖₂ over all the report's tensors flattened into one vector (float64 sum)."""
    return math.sqrt(sum(float((t.detach().double() ** 2).sum()) for t in report.values()))


def clip_displacement(report: Mapping[str, Tensor], clip: float) -> dict[str, Tensor]:
    """D_k scaled by min(1, C / ‖D_k‖₂), ‖·‖₂ over all its tensors flattened together, so the
    result's L2 norm is at most C = ``clip`` (the sensitivity bound of the Gaussian mechanism
    on Σ_k D_k: adding or removing one explorer moves the sum by at most C). Same names and
    shapes; a report with norm ≤ C is returned unchanged (as new tensors). Raises
    ``ConfigError`` (field ``exploration.privacy.clip``) unless C > 0."""
    if not (isinstance(clip, int | float) and math.isfinite(clip) and clip > 0):
        raise ConfigError("exploration.privacy.clip", clip, "a norm C > 0")
    norm = displacement_norm(report)
    factor = clip / norm if norm > clip else 1.0
    return {name: t * factor for name, t in report.items()}


def add_gaussian_noise(
    total: Mapping[str, Tensor], noise_multiplier: float, clip: float, generator: torch.Generator
) -> dict[str, Tensor]:
    """Σ_k clip(D_k) + N(0, σ²C²) i.i.d. per entry: the Gaussian mechanism, noise added ONCE to
    the sum of the clipped reports (σ = ``noise_multiplier``, C = ``clip``). ``total`` maps
    names to tensors (any shapes); the result has the same names and shapes, float32. The
    noise is drawn from ``generator`` (a CPU ``torch.Generator``) tensor by tensor in the
    order of ``total``. σ = 0 returns the sum unchanged (as new tensors). Raises
    ``ConfigError`` for σ < 0 (``exploration.privacy.noise_multiplier``) or C ≤ 0
    (``exploration.privacy.clip``)."""
    if not (isinstance(noise_multiplier, int | float) and noise_multiplier >= 0):
        raise ConfigError("exploration.privacy.noise_multiplier", noise_multiplier,
                          "a noise multiplier sigma >= 0")
    if noise_multiplier == 0:
        return {name: t.clone() for name, t in total.items()}
    if not (isinstance(clip, int | float) and math.isfinite(clip) and clip > 0):
        raise ConfigError("exploration.privacy.clip", clip, "a norm C > 0")
    std = float(noise_multiplier) * float(clip)
    out = {}
    for name, t in total.items():
        noise = torch.randn(t.shape, generator=generator, dtype=torch.float32) * std
        out[name] = t.float().cpu() + noise
    return out


def gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """ε of one release of the Gaussian mechanism with noise multiplier σ (noise std σ·C on a
    sum of sensitivity C), at δ, from ``dp-accounting``'s RDP accountant (one
    ``GaussianDpEvent``; add-or-remove-one neighbouring, its default). σ = 0: ``inf``.
    Raises ``ConfigError`` for σ < 0 or δ outside (0, 1)."""
    if not (isinstance(noise_multiplier, int | float) and noise_multiplier >= 0):
        raise ConfigError("exploration.privacy.noise_multiplier", noise_multiplier,
                          "a noise multiplier sigma >= 0")
    if not (isinstance(delta, int | float) and 0 < delta < 1):
        raise ConfigError("exploration.privacy.delta", delta, "a probability 0 < delta < 1")
    if noise_multiplier == 0:
        return math.inf
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    accountant = RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(float(noise_multiplier)))
    return float(accountant.get_epsilon(float(delta)))


def attack_displacement(
    report: Mapping[str, Tensor], kind: str, scale: float = 1e6,
    rng: np.random.Generator | None = None,
) -> dict[str, Tensor]:
    """What a malicious explorer reports instead of its honest D_k (a simulation: the server
    replaces the report after it arrives; docs/robust-guidance.md).

    Per tensor t of the honest report:
        - ``scaled``: D_t × ``scale`` (a huge report that dominates the mean, keeping the
          attacker's own large entries).
        - ``inverted``: max(D_t) − D_t: the order of the entries reversed (the honest
          report's largest entries become 0), so after the per-tensor min-max of §2.1 the
          attacker's G is 1 − G_honest: what the honest report keeps it pushes to be pruned.
        - ``random``: i.i.d. draws from a Gamma distribution with the honest D_t's mean m and
          (population) standard deviation s (shape (m/s)², scale s²/m): non-negative like a
          D_k and indistinguishable from it by its first two moments, but carrying no
          information about the loss landscape. s = 0 (or m = 0) gives the constant m.
        - ``none``: the honest report (as new tensors).

    Args:
        report: ``{name: tensor}``, the honest D_k.
        kind: one of :data:`ATTACKS`.
        scale: the factor of ``scaled`` (> 0).
        rng: NumPy generator of the ``random`` draws (required for it).

    Returns:
        ``{name: float32 tensor}`` of the report's names and shapes (CPU).

    Raises:
        ConfigError: ``kind`` not one of :data:`ATTACKS` (``exploration.attack``), ``scale``
            not a finite number > 0 (``exploration.attack_scale``).
        ValueError: ``random`` without ``rng``.
    """
    if kind not in ATTACKS:
        raise ConfigError("exploration.attack", kind, ", ".join(ATTACKS))
    if kind == "scaled" and not (isinstance(scale, int | float) and math.isfinite(scale)
                                 and scale > 0):
        raise ConfigError("exploration.attack_scale", scale, "a finite factor > 0")
    if kind == "random" and rng is None:
        raise ValueError("attack_displacement: the random attack needs a NumPy generator")
    out = {}
    for name, t in report.items():
        d = t.detach().float().cpu()
        if kind == "none":
            out[name] = d.clone()
        elif kind == "scaled":
            out[name] = d * scale
        elif kind == "inverted":
            out[name] = d.max() - d
        else:
            m, s = float(d.double().mean()), float(d.double().std(unbiased=False))
            if s == 0 or m <= 0:
                out[name] = torch.full_like(d, m)
            else:
                draw = rng.gamma((m / s) ** 2, s * s / m, size=tuple(d.shape))
                out[name] = torch.from_numpy(np.asarray(draw, dtype=np.float32)).reshape(d.shape)
    return out


def malicious_explorers(explorers: Sequence[int], fraction: float,
                        rng: np.random.Generator) -> list[int]:
    """The malicious explorers: ⌊fraction·n + 0.5⌋ (round half up) of the n ``explorers``,
    drawn uniformly without replacement from ``rng``, sorted. Raises ``ConfigError``
    (``exploration.attack_fraction``) unless 0 ≤ fraction ≤ 1."""
    if not (isinstance(fraction, int | float) and 0.0 <= fraction <= 1.0):
        raise ConfigError("exploration.attack_fraction", fraction, "a fraction in [0, 1]")
    count = math.floor(fraction * len(explorers) + 0.5)
    if count == 0:
        return []
    return sorted(int(k) for k in rng.choice(np.asarray(explorers), size=count, replace=False))
