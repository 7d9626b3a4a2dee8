"""The asynchronous engine: clients train on the simulated clock and the server aggregates when
its trigger fires (ASYNC.md §2).

Event-driven: a priority queue of (time, client, event) (:mod:`flip.federation.async_events`).
A client requests the server's current model (version v) — its download crosses the server's
FIFO link and its own (:mod:`flip.devices.clock`) —, trains E local epochs or S local steps
(its training time = its training FLOPs / its FLOP rate), uploads, and starts again: at once
with the then-current model (``async.restart: arrival``, FedBuff) or with the model of the next
aggregation (``aggregation``, FedAsync's and PR-FL's). All K clients are active (PR-FL), or
``async.concurrency`` of them. Clients are trained only through ``fed.executor.train``, when
they start: one call per group of clients that start together from the same model and mask.

Triggers (the algorithm's ``trigger``): ``per_arrival`` (FedAsync, Xie et al. 2019),
``buffer`` with K_b updates (FedBuff, Nguyen et al. 2022), ``window`` (PR-FL: arrivals during
a window that opens at the first arrival after an aggregation; a window that caught a single
arrival is extended to the next arrival + δ). Staleness τ_i = max(1, r − v_i) is fixed when
the update arrives; s(τ) by ``async.staleness``.

Each aggregation is one row of ``rounds.csv`` (its version r in ``round``, ``sim/time_s``,
arrivals, mean and max staleness, costs of the downloads since the previous aggregation and of
every update that arrived — failed ones included, as the synchronous round counts them — and,
every ``federation.eval_every`` aggregations or ``federation.eval_every_s`` simulated seconds,
the evaluation; ``federation.val_every_s``: the validation split alone). When the simulated-time
budget ends the run, the last aggregation is evaluated if it was not (its row is rewritten: the
server model has not changed since). The run ends at ``async.max_time_s``,
``async.max_aggregations`` or when the algorithm stops it. Failing clients are dropped as in the
synchronous round (:mod:`flip.federation.failures`); the clock still advances. The whole
simulation is part of the checkpoint, so a resumed run writes the same ``rounds.csv``.
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
from torch import Tensor

from flip.errors import TrainingStopped
from flip.federation.async_events import (
    ARRIVED,
    COMPUTED,
    DOWNLOADED,
    WINDOW,
    Arrival,
    EventQueue,
    Flight,
    arrival_from,
    arrival_state,
    flight_from,
    flight_state,
)
from flip.federation.checkpoint import set_rng_state
from flip.federation.executor import EVAL_SPLITS, ClientUpdate
from flip.federation.failures import check_loss, dropped, first_nonfinite
from flip.federation.progress import RoundProgress
from flip.federation.round import client_job
from flip.federation.seeding import client_seed
from flip.federation.server import Federation
from flip.metrics.costs import effective_flops, param_counts, training_flops, transfer_bytes
from flip.params import AsyncParams
from flip.pruning import apply_masks

log = logging.getLogger(__name__)

ASYNC_SAMPLING = 12002
"""Key of the stream choosing which idle client starts (``async.concurrency``)."""
RESTARTS = {"per_arrival": "aggregation", "buffer": "arrival", "window": "aggregation"}
"""Each trigger's own restart rule (``async.restart: null``)."""


class AsyncFederation(Federation):
    """:class:`~flip.federation.Federation` run by the asynchronous engine (module docstring).

    ``asynchronous``: the engine's :class:`~flip.params.AsyncParams`; the other arguments are
    :class:`Federation`'s. The algorithm is an
    :class:`~flip.algorithms.asynchronous.AsyncAlgorithm` (``trigger``, ``client_masks``,
    ``on_arrival``, ``aggregate``, ``on_aggregation_end``, ...). ``round`` counts
    aggregations: it is the server's version r.
    """

    def __init__(self, *args, asynchronous: AsyncParams | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.async_params = asynchronous or AsyncParams()
        p = self.async_params
        self.restart = p.restart or RESTARTS[self.algorithm.trigger]
        k = self.dm.num_clients
        self.events = EventQueue()
        self.now = 0.0
        self.flights: dict[int, Flight] = {}
        self.waiting: list[int] = []  # arrived, waiting for the next aggregation
        self.arrivals: list[Arrival] = []  # since the last aggregation
        self.cycles = [0] * k
        self.window: dict = {"end": None, "extend": False}
        self.restarts = 0
        self.failed_in_a_row = 0
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.counts = {"sampled": 0, "bytes_down": 0, "bytes_up": 0, "flops": 0.0,
                       "failed": 0, "arrived": 0}

    # ----- the run ----------------------------------------------------------------------
    def fit(self, resume: dict | None = None) -> dict:
        """:meth:`setup`; the first clients start at t = 0; then aggregations until the
        budget (module docstring). Each row is written as soon as its aggregation ends, then
        the checkpoint if one is due. Returns :meth:`summary`."""
        self.setup(resume["federation"] if resume else None)
        if resume:
            set_rng_state(resume["rng"])
        else:
            self.start_clients(self.first_clients(), 0.0)
        p = self.async_params
        with RoundProgress(p.max_aggregations, enabled=self.progress, done=self.round) as bar:
            while self.round < p.max_aggregations and not self.algorithm.stopped:
                row = self.next_aggregation()
                if row is None:
                    self.evaluate_last()
                    break
                self.history.append(row)
                if self.recorder:
                    self.recorder.log_round(row)
                if self.checkpointer:
                    last = self.round == p.max_aggregations or self.algorithm.stopped
                    self.checkpointer.after_round(self, last=last)
                bar.update(row)
        return self.summary()

    def evaluate_last(self) -> None:
        """The simulated-time budget ended the run: evaluate the last aggregation's model if
        its row holds no test evaluation (nothing on the server changed since), rewrite that
        row and checkpoint."""
        if not self.history or "global/acc1" in self.history[-1]:
            return
        row = self.history[-1]
        row.update(self.executor.evaluate(self, self.net))
        row.update(self.algorithm.evaluation_extras(self, self.round))
        if self.recorder:
            self.recorder.replace_last(row)
        if self.checkpointer and self.checkpointer.every > 0:
            self.checkpointer.save(self)

    def first_clients(self) -> list[int]:
        """All K clients, or ``async.concurrency`` of them drawn uniformly (sorted)."""
        k, c = self.dm.num_clients, self.async_params.concurrency
        if c is None or c >= k:
            return list(range(k))
        rng = np.random.default_rng([self.seed, ASYNC_SAMPLING, 0])
        return sorted(int(i) for i in rng.choice(k, size=c, replace=False))

    def successor(self, client: int) -> int:
        """The client that starts when ``client`` is done: itself, or (``async.concurrency``)
        one drawn uniformly among the idle clients, ``client`` included."""
        if self.async_params.concurrency is None:
            return client
        busy = set(self.flights) | set(self.waiting)
        idle = [k for k in range(self.dm.num_clients) if k not in busy or k == client]
        self.restarts += 1
        rng = np.random.default_rng([self.seed, ASYNC_SAMPLING, self.restarts])
        return idle[int(rng.integers(len(idle)))]

    def next_aggregation(self) -> dict | None:
        """Process events until the trigger fires; returns the aggregation's row, or ``None``
        when the next event lies beyond ``async.max_time_s`` (the run ends)."""
        start = time.perf_counter()
        budget = self.async_params.max_time_s
        while True:
            t = self.events.peek_time()
            if t is None:
                raise TrainingStopped(f"aggregation {self.round + 1}: no client is training")
            if budget is not None and t > budget:
                return None
            t, _, kind, client = self.events.pop()
            self.now = t
            if kind == DOWNLOADED:
                f = self.flights[client]
                self.events.push(t + self.clock.compute_s(client, f.flops), COMPUTED, client)
            elif kind == COMPUTED:
                f = self.flights[client]
                if f.update is None:  # its training raised: nothing to upload
                    self.fail(client, t, f.failure)
                else:
                    end = self.clock.upload(t, client, (f.cycle,), f.bytes_up)
                    self.events.push(end, ARRIVED, client)
            elif kind == ARRIVED and self.arrive(client, t):
                return self.aggregate(t, start)
            elif kind == WINDOW and self.close_window():
                return self.aggregate(t, start)

    # ----- clients ----------------------------------------------------------------------
    def start_clients(self, clients: list[int], t: float) -> None:
        """``clients`` request the current model (version r) at ``t``: each is trained now
        (one executor call per group sharing a mask), priced at its mask, and its download
        scheduled through the clock (the algorithm's residual pieces when it has them)."""
        if not clients:
            return
        groups: dict[int, tuple] = {}
        for k in sorted(clients):
            masks = self.algorithm.client_masks(self, k)
            groups.setdefault(id(masks), (masks, []))[1].append(k)
        base = self._base() if self.algorithm.needs_base else None
        lr = self.client.lr_at(self.round + 1)
        for masks, members in groups.values():
            net = copy.deepcopy(self.net)
            apply_masks(net, masks)
            params = {n: p.detach() for n, p in net.named_parameters()}
            down, up = transfer_bytes(params, masks)
            flops_per_sample = effective_flops(self.ledger.flops, masks, net)
            nonzero = param_counts(params, masks)["nonzero_params"]
            jobs = []
            for k in members:
                self.cycles[k] += 1
                seed = client_seed(self.seed, self.cycles[k], k)
                jobs.append(client_job(self, self.cycles[k], k, seed, lr,
                                       self.algorithm.client_callbacks(self, self.round, k)))
            results = self.executor.train(self, net, masks, jobs)
            for k, result in zip(members, results, strict=True):
                ok = isinstance(result, ClientUpdate)
                samples = result.samples_processed if ok else 0
                self.flights[k] = Flight(
                    k, self.cycles[k], self.round, t, down, up + (result.extra_bytes_up if ok
                                                                    else 0),
                    training_flops(flops_per_sample, samples), nonzero,
                    result if ok else None,
                    None if ok else f"training raised {type(result).__name__}: {result}",
                    base, masks if self.algorithm.needs_masks else None,
                )
        ends = self._download_ends(sorted(clients), t)
        for k in sorted(clients):
            self.events.push(ends[k], DOWNLOADED, k)

    def _base(self) -> dict[str, Tensor]:
        return {n: v.detach().clone() for n, v in self.net.state_dict().items()}

    def _download_ends(self, clients: list[int], t: float) -> dict[int, float]:
        plan = self.algorithm.download_pieces(self, clients)
        self.counts["sampled"] += len(clients)
        if plan is None:
            ends = {}
            for k in clients:
                f = self.flights[k]
                ends[k] = self.clock.download(t, k, (f.cycle,), f.bytes_down)
                self.counts["bytes_down"] += f.bytes_down
            return ends
        pieces, needs = plan  # each piece crosses the server's link once (ASYNC.md §3.7)
        self.counts["bytes_down"] += sum(pieces[: max(needs.values())])
        cycles = {k: (self.flights[k].cycle,) for k in clients}
        return self.clock.multicast(t, pieces, needs, cycles, self.round)

    def restart_or_wait(self, client: int, t: float) -> None:
        if self.restart == "arrival":
            self.start_clients([self.successor(client)], t)
        else:
            self.waiting.append(client)

    def fail(self, client: int, t: float, reason: str) -> None:
        """A failed client (ASYNC.md §2): dropped, counted; it starts again as any other."""
        self.flights.pop(client)
        self.counts["failed"] += 1
        self.failed_in_a_row += 1
        dropped(client, self.cycles[client], self.round + 1, reason)
        p = self.params
        if self.failed_in_a_row > (p.max_round_retries + 1) * self.dm.num_clients:
            raise TrainingStopped(
                f"aggregation {self.round + 1}: {self.failed_in_a_row} client updates in a row "
                f"failed (more than (federation.max_round_retries + 1) × K = "
                f"{(p.max_round_retries + 1) * self.dm.num_clients}); last: client {client}: "
                f"{reason}. The run stops; its last checkpoint holds the state before."
            )
        self.restart_or_wait(client, t)

    def arrive(self, client: int, t: float) -> bool:
        """An upload arrives: costs counted, checks of the synchronous round, staleness fixed,
        the algorithm's ``on_arrival``; returns whether the trigger fires."""
        f = self.flights[client]
        self.counts["arrived"] += 1
        self.counts["bytes_up"] += f.bytes_up
        self.counts["flops"] += f.flops
        bad = first_nonfinite(f.update.params) or first_nonfinite(f.update.buffers)
        if bad is not None:
            self.fail(client, t, f"its update has NaN/Inf values in {bad}")
            return False
        check_loss(f.update, self.round + 1, self.params.max_loss)
        self.flights.pop(client)
        self.failed_in_a_row = 0
        tau = max(1, self.round - f.version)
        arrival = Arrival(client, f.version, tau, self.async_params.weight(tau), t, f.update, f)
        self.algorithm.on_arrival(self, arrival)
        self.arrivals.append(arrival)
        self.restart_or_wait(client, t)
        trigger = self.algorithm.trigger
        if trigger == "per_arrival":
            return True
        if trigger == "buffer":
            return len(self.arrivals) >= self.algorithm.buffer_size(self)
        length, delta = self.algorithm.window_s(self)
        if self.window["end"] is None:
            self.window["end"] = t + (delta if self.window["extend"] else length)
            self.events.push(self.window["end"], WINDOW)
        return False

    def close_window(self) -> bool:
        """The window closes: aggregate, unless it caught a single arrival (then it is
        extended to the next arrival + δ, ASYNC.md §2)."""
        if len(self.arrivals) <= 1 and not self.window["extend"]:
            self.window = {"end": None, "extend": True}
            return False
        return True

    # ----- the aggregation --------------------------------------------------------------
    def aggregate(self, t: float, start: float) -> dict:
        """Aggregation r = round + 1 at ``t``: the algorithm's ``aggregate`` on the arrivals,
        the row (costs since the previous aggregation, staleness, evaluation when due), the
        algorithm's ``on_aggregation_end``; then the waiting clients start with version r."""
        r = self.round + 1
        arrivals = self.arrivals
        self.algorithm.aggregate(self, arrivals, r)
        self.round, self.sim_time = r, t
        for a in arrivals:
            self.participation[a.client] += 1
        taus = [a.staleness for a in arrivals]
        n = [a.update.num_samples for a in arrivals]
        c = self.counts
        row = {
            "round": r,
            "clients/sampled": c["sampled"],
            "clients/failed": c["failed"],
            "round/retries": 0,
            "lr/client": self.client.lr_at(r),
            "train/loss": float(np.average([a.update.epoch_losses[-1] for a in arrivals],
                                           weights=n)),
            **self.ledger.add_aggregation(c["bytes_down"], c["bytes_up"], c["flops"],
                                          float(np.mean([a.flight.nonzero for a in arrivals]))),
            "sim/time_s": t,
            "clients/arrived": c["arrived"],
            "staleness/mean": float(np.mean(taus)),
            "staleness/max": max(taus),
        }
        row.update(self.algorithm.on_aggregation_end(self, r))
        splits = self.evaluation_due(r, self.async_params.max_aggregations)
        if self.algorithm.stopped:
            splits = EVAL_SPLITS
        if splits:
            row.update(self.executor.evaluate(self, self.net, splits))
        if "global" in splits:
            row.update(self.algorithm.evaluation_extras(self, r))
        self.arrivals, self.window = [], {"end": None, "extend": False}
        self._reset_counts()
        waiting, self.waiting = self.waiting, []
        self.start_clients([self.successor(k) for k in waiting], t)
        row["time/round_s"] = time.perf_counter() - start
        return row

    # ----- checkpoints ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """:meth:`Federation.state_dict` plus the simulation: events, flights (with their
        trained updates), arrivals, waiting clients, window, cycles, counts since the last
        aggregation, the time of the last event."""
        state = super().state_dict()
        state["async"] = {
            "events": self.events.state_dict(), "now": self.now,
            "flights": {k: flight_state(f) for k, f in self.flights.items()},
            "arrivals": [arrival_state(a) for a in self.arrivals],
            "waiting": list(self.waiting), "cycles": list(self.cycles),
            "window": dict(self.window), "restarts": self.restarts,
            "failed_in_a_row": self.failed_in_a_row, "counts": dict(self.counts),
        }
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        s = state["async"]
        self.events.load_state_dict(s["events"])
        self.now = float(s["now"])
        self.flights = {int(k): flight_from(f) for k, f in s["flights"].items()}
        self.arrivals = [arrival_from(a) for a in s["arrivals"]]
        self.waiting = [int(k) for k in s["waiting"]]
        self.cycles = [int(c) for c in s["cycles"]]
        self.window = dict(s["window"])
        self.restarts = int(s["restarts"])
        self.failed_in_a_row = int(s["failed_in_a_row"])
        self.counts = dict(s["counts"])
