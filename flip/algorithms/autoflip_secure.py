"""AutoFLIP's exploration under secure aggregation (``exploration.secure_aggregation``,
docs/robust-guidance.md): the explorers' D_k are summed by the engine's SecAgg+
(:meth:`flip.engines.flower.FlowerExecutor.secure_mean`), so the server gets D, the mean of
ALGORITHMS.md §2.1, without seeing any D_k or θ_k."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from flip.errors import TrainingStopped
from flip.federation.executor import ClientJob
from flip.federation.seeding import derive_seed
from flip.metrics.costs import BYTES_PER_VALUE
from flip.params import check
from flip.pruning.guidance_robust import add_gaussian_noise

log = logging.getLogger(__name__)


def check_secure_settings(exploration, pruning, init_from: str) -> None:
    """With ``exploration.secure_aggregation``, refuse (``ConfigError`` naming the field)
    ``pruning.adaptive: per_round`` (each round's mask needs each client's own report) and
    ``init_from: explored`` (needs the explorers' θ_k, which would reveal their D_k)."""
    if not exploration.secure_aggregation:
        return
    check("exploration.secure_aggregation", True, pruning.adaptive == "none",
          "false (with pruning.adaptive=per_round)",
          "per_round masks need each client's own report, which SecAgg+ hides.")
    check("exploration.secure_aggregation", True, init_from == "initial",
          "false (with algorithm.init_from=explored)",
          "init_from=explored needs the explorers' models, which would reveal D_k.")


def check_secure_engine(exploration, executor) -> None:
    """``exploration.secure_aggregation`` needs an executor with SecAgg+
    (``Executor.secure_aggregation``: ``engine=flower``); ``ConfigError`` naming the field
    otherwise. :func:`flip.train.train` calls it before any data is read."""
    if exploration.secure_aggregation:
        check("exploration.secure_aggregation", True,
              getattr(executor, "secure_aggregation", False),
              f"false (with engine={executor.name})",
              "SecAgg+ is Flower's: run with engine=flower (docs/robust-guidance.md).")


GUIDANCE_NOISE_STREAM = 4004
"""Stream key of private guidance's Gaussian noise (docs/robust-guidance.md)."""


def released_mean(total: dict[str, Tensor], used: int, privacy, seed: int) -> dict[str, Tensor]:
    """D = (Σ_k D_k + N(0, σ²C²)) / n, the one release of the guidance, by parameter name
    (float32): ``total`` the sum over the ``used`` = n explorers, noise only when ``privacy``
    (:class:`~flip.algorithms.autoflip_params.PrivacyParams`) is enabled, drawn from the run
    ``seed``'s :data:`GUIDANCE_NOISE_STREAM` (docs/robust-guidance.md). Shared by the plain
    and the secure exploration."""
    if privacy.enabled:
        gen = torch.Generator().manual_seed(derive_seed(seed, GUIDANCE_NOISE_STREAM))
        total = add_gaussian_noise(total, privacy.noise_multiplier, privacy.clip, gen)
    return {k: v / used for k, v in total.items()}


def secure_displacement(fed, jobs: list[ClientJob], exploration) -> dict[str, Tensor]:
    """D = (Σ_k D_k [+ N(0, σ²C²)]) / n over the n explorers whose masked report entered the
    secure sum, by parameter name (float32, CPU). Each explorer is costed as without secure
    aggregation (:meth:`flip.metrics.ledger.CostLedger.add_explorer`; one that dropped out
    costs its download); private guidance clips each D_k on its client and adds the noise here,
    to the sum (:func:`released_mean`, as without SecAgg+).

    Raises:
        TrainingStopped: no explorer's report entered the sum.
    """
    ex = exploration
    clip = ex.privacy.clip if ex.privacy.enabled else None
    result = fed.executor.secure_mean(fed, fed.net, jobs, clip, ex.secure_range)
    for client, reason in sorted(result.failed.items()):
        log.warning("explorer %d left out of the guidance: %s", client, reason)
        fed.ledger.add_setup(0.0, BYTES_PER_VALUE * fed.ledger.dense_params, 0)
    for client, report in sorted(result.reports.items()):
        fed.ledger.add_explorer(report["samples_processed"])
        log.info("explorer %d: %d epochs (report masked by SecAgg+)", client, report["epochs"])
        if report["over_range"]:
            log.warning("explorer %d: %d entries of D_k above exploration.secure_clipping_range"
                        "=%g were clipped to it by SecAgg+; raise it", client,
                        report["over_range"], ex.secure_range)
    used = len(result.reports)
    if used == 0:
        raise TrainingStopped(f"exploration: none of the {len(jobs)} explorers' reports entered "
                              "the secure sum; no guidance matrix can be computed")
    if not ex.privacy.enabled:
        return result.mean
    return released_mean({k: v * used for k, v in result.mean.items()}, used, ex.privacy,
                         fed.seed)
