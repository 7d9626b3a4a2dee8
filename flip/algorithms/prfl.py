"""PR-FL: asynchronous FL with nested per-client masks, a staleness-weighted buffer and density
recovery (Ma et al., "Federated Learning based on Pruning and Recovery", arXiv 2403.15439),
as ASYNC.md §3 decides it; also its ablations and the HeteroFL-style baseline."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import torch

from flip.algorithms.asynchronous import AsyncAlgorithm, movable_tensors, server_tensors
from flip.algorithms.prfl_parts import (
    LAST_GRADIENT,
    Importance,
    buffer_average,
    first_stage_densities,
    mask_fedavg,
)
from flip.federation.callbacks import CallbackSpec
from flip.metrics.costs import transfer_bytes
from flip.metrics.time_model import parameter_times
from flip.params import POS_INT, check, check_bool, is_int, is_number
from flip.pruning import apply_masks, prunable_names
from flip.pruning.nested import nested_masks, piece_bytes, residual_pieces

log = logging.getLogger(__name__)

PRFL_DENSITIES = (1.0, 1.0, 0.6, 0.6, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1)
"""PR-FL's initial densities for its ten clients (C: ``client_density``), cycled over K."""


@dataclass(frozen=True)
class PRFLParams:
    """PR-FL's knobs (``prfl.*``, ASYNC.md §3): ``densities`` (initial ρ_i, cycled over K),
    ``min_density`` ρ_min (``-md``), ``increment`` Δρ, ``patience`` (evaluations without
    improvement before a recovery), ``interval`` I (aggregations between control intervals),
    ``core`` κ (magnitude core per layer), ``window_s`` δ (seconds), and the parts that the
    ablations switch off: ``recovery``, ``first_stage``, ``residual`` (download),
    ``buffer`` (false: aggregate the window's arrivals only), ``sync`` (synchronous windows:
    the server waits for all K clients). Raises ``ConfigError`` naming the field."""

    densities: tuple = PRFL_DENSITIES
    min_density: float = 0.08
    increment: float = 0.2
    patience: int = 10
    interval: int = 50
    core: float = 0.05
    window_s: float = 0.5
    recovery: bool = True
    first_stage: bool = True
    residual: bool = True
    buffer: bool = True
    sync: bool = False

    def __post_init__(self):
        d = self.densities
        check("prfl.densities", d, isinstance(d, list | tuple) and len(d) > 0
              and all(is_number(x) and 0 < x <= 1 for x in d),
              "a list of densities in (0, 1] (cycled over the K clients)")
        check("prfl.min_density", self.min_density,
              is_number(self.min_density) and 0 < self.min_density <= 1, "a density in (0, 1]")
        check("prfl.increment", self.increment,
              is_number(self.increment) and 0 < self.increment <= 1,
              "Δρ in (0, 1] (recovery raises densities by it)")
        for key in ("patience", "interval"):
            value = getattr(self, key)
            check(f"prfl.{key}", value, is_int(value) and value >= 1, POS_INT)
        check("prfl.core", self.core, is_number(self.core) and 0 <= self.core < 1,
              "a fraction κ in [0, 1)")
        check("prfl.window_s", self.window_s, is_number(self.window_s) and self.window_s > 0,
              "seconds δ > 0")
        for key in ("recovery", "first_stage", "residual", "buffer", "sync"):
            check_bool(f"prfl.{key}", getattr(self, key))


class PRFL(AsyncAlgorithm):
    """PR-FL (ASYNC.md §3), the released code's ``buff_mask_fed_avg`` run with ``-ch asyn
    -stal poly -re -Res``, with the bugs ASYNC.md names fixed:

    1. Start: one dense θ_0; every client's first update trains it densely.
    2. Densities ρ_i = ``densities`` (cycled, clipped to [ρ_min, 1]); once, at the first
       control interval, ρ_i = clip(min_j t̄_j / t̄_i, ρ_min, 1) from the inter-arrival times
       (:func:`~flip.algorithms.prfl_parts.first_stage_densities`, the paper's formula).
    3. Window trigger (δ = ``window_s``; length max(δ, S/server up + 0.1 s), S the largest
       sub-model sent). B_i: a copy of client i's latest upload, made on arrival (the code
       aliased live tensors); c_i = s_i / Σ_j s_j over the clients with a buffer; MaskFedAvg
       (:func:`~flip.algorithms.prfl_parts.mask_fedavg`) with w_i = c_i n_i; no server lr.
    4. Importance A from arrived updates only (:class:`~flip.algorithms.prfl_parts.Importance`).
    5. Every I = ``interval`` aggregations (and when ρ changes) masks are recomputed: a
       magnitude core of κ = ``core`` per layer plus one ranking by A/c_l, c_l from the run's
       devices (:func:`flip.metrics.time_model.parameter_times`), cut at each ρ_i: nested
       (:func:`flip.pruning.nested.nested_masks`). Biases are never pruned. Client i trains
       W ⊙ m_i.
    6. Recovery (``recovery``): every I aggregations the server model and each client's
       sub-model are evaluated on the validation split (ALGORITHMS.md §5; decision: PR-FL
       used its test set); a client whose sub-model has not improved for ``patience``
       evaluations gets ρ_i ← min(ρ_i + Δρ, 1); a global plateau rolls the server (W and its
       buffers) back to its best evaluation, raises ρ_min by Δρ and clamps every ρ_i ≥ ρ_min
       (the code forgot the clients); at ρ_min = 1 training stops. Recovered weights start
       from the server's current values: the server keeps W dense, clients get W ⊙ m_i.
    7. Residual download (``residual``): the window's sub-models sorted by ρ are sent as
       pieces, each crossing the server link once (:meth:`flip.devices.Clock.multicast`);
       bytes down count the pieces. The numbers trained do not change.
    8. Rows report W (``global/*``) and the buffer average Σ c_i n_i B_i / Σ c_i n_i
       (``buffer/*``, on the test split), and ρ_min and the mean ρ_i (``prfl/*``).

    Ablations: ``recovery=false``, ``sync=true`` (the server waits for all K clients, which
    start again together), ``residual=false``, ``buffer=false`` (MaskFedAvg over the window's
    arrivals only). With ``recovery=false, first_stage=false`` it is the HeteroFL-style
    baseline (fixed nested importance masks; ``algorithm=heterofl``).
    Raises ``ConfigError`` naming the ``prfl.*`` field; ``data.val_fraction`` must be > 0
    for the recovery (:meth:`check_data`).
    """

    trigger = "window"
    needs_masks = True  # the residual download reads the mask each flight trained under

    def __init__(self, name: str = "prfl", **options):
        super().__init__(name)
        if "densities" in options:
            options["densities"] = tuple(options["densities"])
        self.params = PRFLParams(**options)
        if self.params.sync:
            self.trigger, self.restart = "buffer", "aggregation"
        self.history: list[dict] = []

    # ----- set-up -------------------------------------------------------------------------
    def check_data(self, dm) -> None:
        """The recovery evaluates on the validation split: ``data.val_fraction`` > 0."""
        if self.params.recovery:
            check("data.val_fraction", getattr(dm, "val_fraction", 0),
                  getattr(dm, "has_validation", False),
                  "> 0 (PR-FL's recovery evaluates on the validation split)")

    def setup(self, fed) -> None:
        p = self.params
        k = fed.dm.num_clients
        self.check_data(fed.dm)
        self.rho = [min(1.0, max(p.densities[i % len(p.densities)], p.min_density))
                    for i in range(k)]
        self.rho_min = p.min_density
        params = dict(fed.net.named_parameters())
        self.names = prunable_names(fed.net)
        steps = fed.params.local_steps
        samples = (steps * fed.dm.batch_size if steps else
                   fed.params.local_epochs * sum(fed.dm.client_num_train(i) for i in range(k)) / k)
        self.costs = parameter_times(fed.ledger.flops, params, self.names, samples, 1,
                                     fed.devices)
        self.importance = Importance({n: params[n] for n in self.names})
        self.buffers: dict[int, dict] = {}  # B_i, s_i, n_i of the latest upload of client i
        self.arrival_times: list[list[float]] = [[] for _ in range(k)]
        self.best: dict = {"acc": -math.inf}
        self.client_best = [-math.inf] * k
        self.client_wait = [0] * k
        self.global_wait = 0
        self.first_done = False
        self.weights_used: list = []
        self.recompute_masks(fed)
        self.largest = transfer_bytes(params, None)[0]  # the first updates are dense

    def recompute_masks(self, fed) -> None:
        """Nested masks for the current ρ_i from W and A (ASYNC.md §3.5); S, the largest
        sub-model's download, for the window length."""
        weights = {n: p.detach() for n, p in fed.net.named_parameters() if n in self.names}
        made = nested_masks(weights, self.importance.values(weights),
                            {n: self.costs[n] for n in self.names}, self.rho, self.params.core)
        self.client_mask = made
        params = {n: p.detach() for n, p in fed.net.named_parameters()}
        self.largest = max(transfer_bytes(params, m)[0] for m in made)

    def client_masks(self, fed, client: int):
        return None if fed.cycles[client] == 0 else self.client_mask[client]

    def client_callbacks(self, fed, round_idx: int, client: int) -> list[CallbackSpec]:
        return [CallbackSpec(LAST_GRADIENT)]

    def buffer_size(self, fed) -> int:  # sync windows: all K clients
        return fed.dm.num_clients

    def window_s(self, fed) -> tuple[float, float]:
        delta = self.params.window_s
        up = fed.devices.server_bandwidth(fed.devices.server_up_MBps)
        return (delta if up is None else max(delta, self.largest / up + 0.1)), delta

    def download_pieces(self, fed, clients: list[int]):
        """Residual download (ASYNC.md §3.7): the distinct masks of ``clients`` sorted by
        density (a first, dense update counts as density 1), their pieces' bytes, and which
        pieces each client needs; ``None`` without ``residual``."""
        if not self.params.residual:
            return None
        params = {n: p.detach() for n, p in fed.net.named_parameters()}
        dense = {n: torch.ones_like(params[n], dtype=torch.bool) for n in self.names}
        masks = {k: fed.flights[k].masks or dense for k in clients}
        kept = {k: sum(int(m.sum()) for m in masks[k].values()) for k in clients}
        order = sorted({kept[k]: masks[k] for k in clients}.items())  # nested: by size
        pieces = residual_pieces([m for _, m in order])
        rank = {size: i + 1 for i, (size, _) in enumerate(order)}
        return piece_bytes(params, pieces), {k: rank[kept[k]] for k in clients}

    # ----- arrivals and aggregation -----------------------------------------------------
    def on_arrival(self, fed, arrival) -> None:
        u = arrival.update
        self.importance.add(u.extras.pop("last_grad_sq", {}), u.samples_processed)
        self.arrival_times[arrival.client].append(arrival.time)
        if self.params.buffer:  # a copy made on arrival (the code aliased live tensors)
            state = {n: t.detach().clone() for n, t in u.params.items()}
            state.update((n, b.detach().clone()) for n, b in u.buffers.items()
                         if b.is_floating_point())
            self.buffers[arrival.client] = {"state": state, "s": arrival.weight,
                                            "n": u.samples_processed}

    def aggregate(self, fed, arrivals, round_idx: int) -> None:
        """MaskFedAvg over the buffers of all clients (or, without ``buffer``, over this
        window's arrivals in client order), w_i = c_i n_i (ASYNC.md §3.3)."""
        if self.params.buffer:
            entries = [self.buffers[k] for k in sorted(self.buffers)]
        else:
            entries = [{"state": {**a.update.params, **{n: b for n, b in a.update.buffers.items()
                                                         if b.is_floating_point()}},
                        "s": a.weight, "n": a.update.samples_processed}
                       for a in sorted(arrivals, key=lambda a: (a.client, a.time))]
        total = sum(e["s"] for e in entries)
        weights = [e["s"] / total * e["n"] for e in entries]
        mask_fedavg(server_tensors(fed), [e["state"] for e in entries], weights)
        self.weights_used = [(e["state"], w) for e, w in zip(entries, weights, strict=True)]

    def on_aggregation_end(self, fed, round_idx: int) -> dict:
        if round_idx % self.params.interval == 0:
            self.control(fed, round_idx)
        return {"prfl/density_min": self.rho_min,
                "prfl/density_mean": sum(self.rho) / len(self.rho)}

    def evaluation_extras(self, fed, round_idx: int) -> dict:
        """``buffer/*``: the buffer average Σ c_i n_i B_i / Σ c_i n_i on the test split."""
        if not self.weights_used:
            return {}
        net = copy.deepcopy(fed.net)
        avg = buffer_average([s for s, _ in self.weights_used], [w for _, w in self.weights_used])
        with torch.no_grad():
            for name, t in movable_tensors(net).items():
                t.copy_(avg[name])
        got = fed.executor.evaluate(fed, net, ("global",))
        return {f"buffer/{k}": got[f"global/{k}"] for k in ("loss", "acc1", "acc5")}

    # ----- control intervals (ASYNC.md §3.2, §3.4–3.6) ----------------------------------
    def control(self, fed, r: int) -> None:
        p = self.params
        self.importance.refresh()
        entry = {"round": r}
        if p.first_stage and not self.first_done:
            self.rho = first_stage_densities(self.arrival_times, p.interval, self.rho_min)
            self.first_done = True
            entry["first_stage"] = list(self.rho)
        if p.recovery:
            entry.update(self.recover(fed))
        self.recompute_masks(fed)
        entry["densities"] = list(self.rho)
        self.history.append(entry)

    def _val_acc(self, fed, net) -> float:
        return fed.executor.evaluate(fed, net, ("val",))["val/acc1"]

    def recover(self, fed) -> dict:
        """Per-client and global recovery with rollback (ASYNC.md §3.6)."""
        p, out = self.params, {}
        acc = self._val_acc(fed, fed.net)
        if acc > self.best["acc"]:
            self.best = {"acc": acc, "net": copy.deepcopy(fed.net.state_dict()),
                         "buffers": copy.deepcopy(self.buffers)}
            self.global_wait = 0
        else:
            self.global_wait += 1
        by_rho = {}
        for rho, mask in sorted({r: m for r, m in zip(self.rho, self.client_mask,
                                                      strict=True)}.items()):
            sub = copy.deepcopy(fed.net)
            apply_masks(sub, mask)
            by_rho[rho] = self._val_acc(fed, sub)
        raised = []
        for k, rho in enumerate(self.rho):
            if by_rho[rho] > self.client_best[k]:
                self.client_best[k], self.client_wait[k] = by_rho[rho], 0
            else:
                self.client_wait[k] += 1
            if self.client_wait[k] >= p.patience and rho < 1:
                self.rho[k], self.client_wait[k] = min(rho + p.increment, 1.0), 0
                raised.append(k)
        out.update(val_acc=acc, recovered=raised)
        if self.global_wait >= p.patience:
            fed.net.load_state_dict(self.best["net"])
            self.buffers = copy.deepcopy(self.best["buffers"])
            self.rho_min = min(self.rho_min + p.increment, 1.0)
            self.rho = [max(rho, self.rho_min) for rho in self.rho]
            self.global_wait = 0
            self.stopped = self.rho_min >= 1.0
            out.update(rollback=True, density_min=self.rho_min)
            log.info("PR-FL: global plateau, rolled back; ρ_min %.2f", self.rho_min)
        return out

    # ----- reporting and checkpoints ------------------------------------------------------
    def info(self, fed) -> dict:
        return {"trigger": self.trigger, "densities": list(self.rho), "density_min": self.rho_min,
                "recoveries": sum(len(h.get("recovered", [])) for h in self.history),
                "rollbacks": sum(bool(h.get("rollback")) for h in self.history),
                "options": {k: getattr(self.params, k) for k in
                            ("recovery", "first_stage", "residual", "buffer", "sync")},
                "control": self.history}

    def state_dict(self) -> dict:
        masks = {}
        for rho, m in zip(self.rho, self.client_mask, strict=True):
            masks.setdefault(repr(rho), m)
        return {
            "rho": list(self.rho), "rho_min": self.rho_min, "names": list(self.names),
            "costs": dict(self.costs), "importance": self.importance.state_dict(),
            "buffers": self.buffers, "arrival_times": self.arrival_times, "best": self.best,
            "client_best": list(self.client_best), "client_wait": list(self.client_wait),
            "global_wait": self.global_wait, "first_done": self.first_done,
            "stopped": self.stopped, "history": self.history, "masks": masks,
            "largest": self.largest, "weights_used": self.weights_used,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rho = [float(r) for r in state["rho"]]
        self.rho_min = float(state["rho_min"])
        self.names = list(state["names"])
        self.costs = dict(state["costs"])
        self.importance = Importance({})
        self.importance.load_state_dict(state["importance"])
        for key in ("buffers", "arrival_times", "best", "client_best", "client_wait",
                    "global_wait", "first_done", "stopped", "history", "largest"):
            setattr(self, key, state[key])
        self.buffers = {int(k): v for k, v in self.buffers.items()}
        self.client_mask = [state["masks"][repr(r)] for r in self.rho]
        self.weights_used = [tuple(x) for x in state["weights_used"]]
