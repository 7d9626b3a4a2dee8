"""One round of ALGORITHMS.md §1, every algorithm hook in the order the round calls it.

Read top to bottom, :func:`run_round` is the round:

1. ``algorithm.client_model(fed, r)``: what the round's clients train (the global network and
   its mask, or a smaller sub-model), priced by the cost ledger;
2. :func:`collect_updates`: sample m clients (:func:`flip.federation.seeding.sample_clients`),
   ``algorithm.client_callbacks(fed, r, k)`` for each, one cohort through the executor
   (:mod:`flip.federation.executor`), the guards of :mod:`flip.federation.failures` on each
   result, ``algorithm.on_client_update(fed, r, update)`` on each update kept; the round is
   re-sampled when fewer than ``federation.min_clients`` succeed;
3. :func:`server_step`: pseudo-gradient Δ = Σ n_k/n (θ − θ_k), the server optimizer's step,
   the mask re-applied, batch-norm buffers averaged, a non-finite result undone;
4. ``algorithm.on_round_end(fed, r)``;
5. the round's costs (:class:`flip.metrics.ledger.CostLedger`), its simulated time
   (:func:`round_time`, ASYNC.md §1) and, when due, the evaluation through the executor.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from flip.devices import CycleWork
from flip.federation.aggregation import average_buffers, client_weights, pseudo_gradient
from flip.federation.executor import ClientJob, ClientUpdate
from flip.federation.failures import (
    RoundUpdates,
    check_loss,
    dropped,
    first_nonfinite,
    keep_finite,
    snapshot,
    too_few_clients,
)
from flip.federation.seeding import client_seed, sample_clients
from flip.metrics.costs import training_flops
from flip.pruning import apply_masks

log = logging.getLogger(__name__)


def run_round(fed, r: int) -> dict:
    """Round ``r`` (1-based) of ALGORITHMS.md §1 on ``fed``; returns its ``rounds.csv`` row
    (with ``time/round_s``, the wall time, and ``sim/time_s``, the simulated time at the
    round's end, ASYNC.md §1). The FLOPs, bytes, ``model/density`` and
    ``model/nonzero_params`` are those of what was sent this round, so they follow masks that
    change between rounds. The round is evaluated when :meth:`Federation.evaluation_due`."""
    start = time.perf_counter()
    lr = fed.client.lr_at(r)
    net, masks = fed.algorithm.client_model(fed, r)
    profile = fed.ledger.flops if net is fed.net else None
    down, up = fed.ledger.price(net, masks, profile)
    got = collect_updates(fed, r, lr, net, masks)
    del net
    weights = client_weights([u.num_samples for u in got.updates])
    server_step(fed, got.updates, weights, r)
    fed.algorithm.on_round_end(fed, r)
    for u in got.updates:
        fed.participation[u.client] += 1
    fed.sim_time += round_time(fed, r, got, down, up)
    row = {
        "round": r,
        "clients/sampled": len(got.clients),
        "clients/failed": len(got.failures),
        "round/retries": got.retries,
        "lr/client": lr,
        "train/loss": float(np.average([u.epoch_losses[-1] for u in got.updates],
                                       weights=weights)),
        **fed.ledger.add_round(down, up, got.sampled, got.returned, got.updates),
        "sim/time_s": fed.sim_time,
    }
    splits = fed.evaluation_due(r, fed.params.rounds)
    if splits:
        row.update(fed.executor.evaluate(fed, fed.net, splits))
    row["time/round_s"] = time.perf_counter() - start
    return row


def planned_samples(fed, client: int) -> int:
    """Samples a client trains on in one update: E epochs over its training set, or
    ``federation.local_steps`` mini-batches (what its training time is priced at when it
    returns nothing)."""
    p = fed.params
    if p.local_steps is None:
        return fed.dm.client_num_train(client) * p.local_epochs
    return min(p.local_steps * fed.dm.batch_size, fed.dm.client_num_train(client))


def round_time(fed, r: int, got: RoundUpdates, down: int, up: int) -> float:
    """Simulated seconds of round ``r`` (ASYNC.md §1): each attempt's clients download
    ``down`` bytes at the attempt's start, train (their training FLOPs at the ledger's
    effective FLOPs per sample over the samples they processed) and upload ``up`` bytes plus
    their ``extra_bytes_up`` (nothing for a client whose training raised); an attempt lasts
    until its last client is done (:meth:`flip.devices.Clock.round_time`), attempts follow
    one another."""
    total = 0.0
    for attempt, results in enumerate(got.attempts):
        work = [
            CycleWork(
                k, down,
                training_flops(fed.ledger.flops_per_sample,
                               planned_samples(fed, k) if u is None else u.samples_processed),
                None if u is None else up + u.extra_bytes_up,
            )
            for k, u in results
        ]
        total += fed.clock.round_time(fed.sim_time + total, (r, attempt), work)
    return total


def client_job(fed, r: int, client: int, seed: int, lr: float, callbacks) -> ClientJob:
    """Client ``client``'s job: E local epochs, or ``federation.local_steps`` mini-batches of
    a fresh shuffle in one epoch (ASYNC.md §2)."""
    steps = fed.params.local_steps
    if steps is None:
        return ClientJob(client, seed, fed.params.local_epochs, lr, tuple(callbacks))
    return ClientJob(client, seed, 1, lr, tuple(callbacks), batches=steps)


def collect_updates(fed, r: int, lr: float, net, masks) -> RoundUpdates:
    """Sample and train the clients of round ``r``, dropping failed clients and retrying the
    round when fewer than ``federation.min_clients`` succeed (:mod:`flip.federation.failures`).

    Clients train ``net`` under ``masks`` with the algorithm's ``client_callbacks``; each
    update that passes the checks goes through the algorithm's ``on_client_update`` (back to
    the global network's shapes) before it is kept, in client order.

    Raises:
        TrainingStopped: a client's loss diverged, or still too few clients succeeded after
            ``federation.max_round_retries`` retries (the message lists the failures).
    """
    p = fed.params
    out = RoundUpdates(clients=[], updates=[])
    for attempt in range(p.max_round_retries + 1):
        clients = sample_clients(fed.seed, r, fed.dm.num_clients, p.participation, attempt)
        out.sampled += len(clients)
        jobs = [
            client_job(fed, r, k, client_seed(fed.seed, r, k, attempt), lr,
                       fed.algorithm.client_callbacks(fed, r, k))
            for k in clients
        ]
        updates = []
        out.attempts.append([])
        for k, result in zip(clients, fed.executor.train(fed, net, masks, jobs), strict=True):
            if not isinstance(result, ClientUpdate):  # its training raised
                reason = f"training raised {type(result).__name__}: {result}"
                out.failures.append(dropped(k, attempt, r, reason, exc_info=result))
                out.attempts[-1].append((k, None))
                continue
            out.attempts[-1].append((k, result))
            out.returned.append(result)
            bad = first_nonfinite(result.params) or first_nonfinite(result.buffers)
            if bad is not None:
                reason = f"its update has NaN/Inf values in {bad}"
                out.failures.append(dropped(k, attempt, r, reason))
                continue
            check_loss(result, r, p.max_loss)
            updates.append(fed.algorithm.on_client_update(fed, r, result))
        if len(updates) >= p.min_clients:
            out.clients, out.updates, out.retries = clients, updates, attempt
            return out
        log.warning(
            "round %d: %d of %d sampled clients succeeded, fewer than federation.min_clients=%d "
            "(attempt %d of %d)", r, len(updates), len(clients), p.min_clients, attempt + 1,
            p.max_round_retries + 1,
        )
    raise too_few_clients(r, p.min_clients, p.max_round_retries, out.failures)


def stepped_tensors(net, buffers: str) -> dict:
    """What the server optimizer steps on: θ's parameters, plus the floating buffers when
    ``federation.buffers`` is ``server_optimizer`` (ALGORITHMS.md §5)."""
    out = dict(net.named_parameters())
    if buffers == "server_optimizer":
        out.update((n, b) for n, b in net.named_buffers() if b.is_floating_point())
    return out


def server_step(fed, updates: list[ClientUpdate], weights: list[float], r: int):
    """ALGORITHMS.md §1 steps 3–4: Δ = Σ_k w_k (θ − θ_k), one step of the server optimizer
    with Δ as θ's gradient, θ ← θ ⊙ M. Floating buffers (batch-norm statistics): with
    ``federation.buffers=average`` the weighted mean of the clients'; with
    ``server_optimizer`` their Δ goes through the same step (§5). Integer buffers (batch
    counters) take the clients' maximum. A step that leaves θ or a buffer non-finite is undone
    and stops the run (:func:`flip.federation.failures.keep_finite`)."""
    stepped = stepped_tensors(fed.net, fed.params.buffers)
    client_values = [{**u.params, **u.buffers} for u in updates]
    delta = pseudo_gradient({k: t.detach() for k, t in stepped.items()}, client_values, weights)
    before = snapshot(fed.net, fed.server_opt)
    fed.server_opt.zero_grad(set_to_none=False)
    for name, t in stepped.items():
        t.grad = delta[name]
    fed.server_opt.step()
    fed.server_opt.zero_grad(set_to_none=True)
    apply_masks(fed.net, fed.masks)
    if updates[0].buffers:
        with torch.no_grad():
            for name, b in average_buffers([u.buffers for u in updates], weights).items():
                if name not in stepped:
                    fed.net.get_buffer(name).copy_(b)
    keep_finite(fed.net, fed.server_opt, before, r)
