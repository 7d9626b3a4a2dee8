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
from flip.federation.seeding import client_seed, sample_clients

if TYPE_CHECKING:
    from flip.federation.server import ClientUpdate, Federation

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
    not (each was uploaded and trained: bytes up and training FLOPs count them).
    """

    clients: list[int]
    updates: list[ClientUpdate]
    failures: list[ClientFailure] = field(default_factory=list)
    retries: int = 0
    sampled: int = 0
    returned: list[ClientUpdate] = field(default_factory=list)


def first_nonfinite(tensors: Mapping[str, Tensor]) -> str | None:
    """The name of the first floating tensor holding NaN or ±Inf, or ``None``."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
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


def _failure(
    client: int, attempt: int, round_idx: int, reason: str, exc_info: bool = False
) -> ClientFailure:
    log.warning(
        "round %d: client %d dropped from the aggregate: %s",
        round_idx,
        client,
        reason,
        exc_info=exc_info,
    )
    return ClientFailure(client, attempt, reason)


def collect_updates(
    fed: Federation, round_idx: int, lr: float, net: nn.Module, masks: dict | None
) -> RoundUpdates:
    """Sample and train the clients of round ``round_idx``, dropping failed clients and retrying
    the round when fewer than ``fed.min_clients`` succeed (module docstring).

    Clients train ``net`` under ``masks`` (the algorithm's ``client_model``) with the
    algorithm's ``client_callbacks``; each update that passes the checks goes through the
    algorithm's ``on_client_update`` (back to the global network's shapes) before it is kept.

    Raises:
        TrainingStopped: a client's loss diverged, or still too few clients succeeded after
            ``fed.max_round_retries`` retries (the message lists the failures).
    """
    out = RoundUpdates(clients=[], updates=[])
    for attempt in range(fed.max_round_retries + 1):
        clients = sample_clients(
            fed.seed, round_idx, fed.dm.num_clients, fed.participation, attempt
        )
        out.sampled += len(clients)
        updates = []
        for k in clients:
            try:
                update = fed.train_client(
                    k,
                    net,
                    fed.local_epochs,
                    lr,
                    client_seed(fed.seed, round_idx, k, attempt),
                    masks,
                    fed.algorithm.client_callbacks(fed, round_idx, k),
                )
            except Exception as err:  # a client crash must not end the federation
                reason = f"training raised {type(err).__name__}: {err}"
                out.failures.append(_failure(k, attempt, round_idx, reason, exc_info=True))
                continue
            out.returned.append(update)
            bad = first_nonfinite(update.params) or first_nonfinite(update.buffers)
            if bad is not None:
                out.failures.append(
                    _failure(k, attempt, round_idx, f"its update has NaN/Inf values in {bad}")
                )
                continue
            check_loss(update, round_idx, fed.max_loss)
            updates.append(fed.algorithm.on_client_update(fed, round_idx, update))
        if len(updates) >= fed.min_clients:
            out.clients, out.updates, out.retries = clients, updates, attempt
            return out
        log.warning(
            "round %d: %d of %d sampled clients succeeded, fewer than federation.min_clients=%d "
            "(attempt %d of %d)",
            round_idx,
            len(updates),
            len(clients),
            fed.min_clients,
            attempt + 1,
            fed.max_round_retries + 1,
        )
    listed = "; ".join(f"client {f.client}: {f.reason}" for f in out.failures[:10])
    raise TrainingStopped(
        f"round {round_idx}: fewer than federation.min_clients={fed.min_clients} clients "
        f"succeeded in each of {fed.max_round_retries + 1} attempts "
        f"(federation.max_round_retries={fed.max_round_retries}). Failures: {listed}. The run "
        f"stops; its last checkpoint holds the state before round {round_idx}."
    )


def snapshot(fed: Federation) -> tuple[dict, dict]:
    """θ with the buffers, and the server optimizer's state, copied before the server step."""
    net = {k: v.detach().clone() for k, v in fed.net.state_dict().items()}
    return net, copy.deepcopy(fed.server_opt.state_dict())


def keep_finite(fed: Federation, before: tuple[dict, dict], round_idx: int) -> None:
    """After the server step: if θ or a buffer is non-finite, restore θ, the buffers and the
    server optimizer's state from ``before`` (:func:`snapshot`) and raise
    :class:`TrainingStopped`."""
    bad = first_nonfinite(dict(fed.net.named_parameters())) or first_nonfinite(
        dict(fed.net.named_buffers())
    )
    if bad is None:
        return
    fed.net.load_state_dict(before[0])
    fed.server_opt.load_state_dict(before[1])
    raise TrainingStopped(
        f"round {round_idx}: the server step made the global model non-finite (NaN/Inf in "
        f"{bad}); the global model of round {round_idx - 1} was kept and the run stops. Its last "
        "checkpoint holds the state before this round."
    )
