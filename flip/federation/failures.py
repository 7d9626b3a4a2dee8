"""What the server does when clients fail or training diverges (issue 6; README "Failing
clients").

Three cases, kept apart on purpose:

* **A failed client** — its local training raised, or the update it returns (θ_k or a buffer)
  holds NaN/Inf. That is a fault of one client (bad data on its device, a numerical fault, a
  crash): the server cannot use the update, drops it from the aggregate with a warning and
  counts it in ``rounds.csv`` (``clients/failed``). If fewer than ``federation.min_clients``
  clients of the round succeed, the whole round is tried again on a fresh sample of clients
  (its own random stream, :func:`flip.federation.seeding.sample_clients` with ``attempt``), at
  most ``federation.max_round_retries`` times; then the run stops.
* **A diverging loss** — a client returns a *finite* update, but one of its epoch-mean training
  losses is non-finite or above ``federation.max_loss``. That is not one client's fault but
  training itself running away (learning rate too high for the model, a global model gone bad):
  dropping the client would hide it and waste the rest of the run, so the run stops at once,
  naming the round, the client, the local epoch and the loss. (A client whose loss became NaN
  almost always returns NaN weights too; it is then a failed client and dropped.)
* **The server step** — if θ or a buffer is non-finite after the server optimizer's step (an
  overflow), θ, the buffers and the server optimizer's state are put back as they were before the
  step and the run stops: the global model is never overwritten by a non-finite one.

Every stop raises :class:`flip.errors.TrainingStopped`; the last checkpoint holds the run as it
was before the round that stopped it.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from flip.errors import TrainingStopped

if TYPE_CHECKING:
    from flip.federation.executor import ClientUpdate

log = logging.getLogger(__name__)


@dataclass
class ClientFailure:
    """One client dropped from a round: ``attempt`` 0 is the round's first sample."""

    client: int
    attempt: int
    reason: str


@dataclass
class RoundUpdates:
    """The clients of one round as the server saw them.

    ``clients``: the sample that was aggregated (sorted); ``updates``: its successful updates, in
    client order; ``failures``: every client dropped in any attempt of the round; ``retries``:
    attempts discarded because fewer than ``min_clients`` succeeded; ``sampled``: clients sampled
    over all attempts (each was sent θ); ``returned``: every update a client returned, used or
    not (each was uploaded and trained: bytes up and training FLOPs count them);
    ``attempts``: per attempt, each sampled client with its update (``None``: its training
    raised), in client order (the round's simulated time, ASYNC.md §1).
    """

    clients: list[int]
    updates: list[ClientUpdate]
    failures: list[ClientFailure] = field(default_factory=list)
    retries: int = 0
    sampled: int = 0
    returned: list[ClientUpdate] = field(default_factory=list)
    attempts: list[list[tuple[int, ClientUpdate | None]]] = field(default_factory=list)


def first_nonfinite(tensors: Mapping[str, Tensor]) -> str | None:
    """The name of the first floating tensor holding NaN or ±Inf, or ``None``.

    One fused norm per tensor screens them (a NaN or ±Inf entry makes the norm non-finite);
    only a tensor whose norm is not finite is checked entry by entry, so a finite tensor whose
    norm overflows float32 is not reported."""
    floats = [(name, t) for name, t in tensors.items() if t.is_floating_point()]
    if not floats:
        return None
    norms = torch.stack([n.float() for n in torch._foreach_norm([t for _, t in floats])])
    if bool(torch.isfinite(norms).all()):
        return None
    for (name, t), norm in zip(floats, norms.tolist(), strict=True):
        if not math.isfinite(norm) and not bool(torch.isfinite(t).all()):
            return name
    return None


def check_loss(update: ClientUpdate, round_idx: int, max_loss: float | None) -> None:
    """Raise :class:`TrainingStopped` if an epoch-mean training loss of ``update`` is non-finite
    or above ``max_loss`` (``None``: only non-finite), naming round, client, epoch and loss."""
    for epoch, loss in enumerate(update.epoch_losses, start=1):
        if not math.isfinite(loss) or (max_loss is not None and loss > max_loss):
            raise TrainingStopped(
                f"round {round_idx}: training diverged on client {update.client}: its epoch-mean "
                f"training loss in local epoch {epoch} is {loss:.6g} (federation.max_loss="
                f"{max_loss}). The run stops; its last checkpoint holds the state before round "
                f"{round_idx}. Start again with a lower client.lr or a higher federation.max_loss."
            )


def too_few_clients(round_idx: int, min_clients: int, retries: int, failures) -> TrainingStopped:
    """The error that stops a round in which fewer than ``min_clients`` clients succeeded in
    each of its ``retries + 1`` attempts, listing up to 10 ``failures``."""
    listed = "; ".join(f"client {f.client}: {f.reason}" for f in failures[:10])
    return TrainingStopped(
        f"round {round_idx}: fewer than federation.min_clients={min_clients} clients "
        f"succeeded in each of {retries + 1} attempts "
        f"(federation.max_round_retries={retries}). Failures: {listed}. The run "
        f"stops; its last checkpoint holds the state before round {round_idx}."
    )


def dropped(
    client: int, attempt: int, round_idx: int, reason: str, exc_info=None
) -> ClientFailure:
    """Log a warning that ``client`` is dropped from round ``round_idx`` (with the traceback of
    ``exc_info``, an exception, if given) and return its :class:`ClientFailure`."""
    log.warning(
        "round %d: client %d dropped from the aggregate: %s",
        round_idx,
        client,
        reason,
        exc_info=exc_info,
    )
    return ClientFailure(client, attempt, reason)


def snapshot(net: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """θ with the buffers, and the server optimizer's state, copied before the server step."""
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return state, copy.deepcopy(optimizer.state_dict())


def keep_finite(
    net: nn.Module, optimizer: torch.optim.Optimizer, before: tuple[dict, dict], round_idx: int
) -> None:
    """After the server step: if θ or a buffer is non-finite, restore θ, the buffers and the
    server optimizer's state from ``before`` (:func:`snapshot`) and raise
    :class:`TrainingStopped`."""
    bad = first_nonfinite(dict(net.named_parameters())) or first_nonfinite(
        dict(net.named_buffers())
    )
    if bad is None:
        return
    net.load_state_dict(before[0])
    optimizer.load_state_dict(before[1])
    raise TrainingStopped(
        f"round {round_idx}: the server step made the global model non-finite (NaN/Inf in "
        f"{bad}); the global model of round {round_idx - 1} was kept and the run stops. Its last "
        "checkpoint holds the state before this round."
    )
