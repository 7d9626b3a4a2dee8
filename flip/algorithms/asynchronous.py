"""Asynchronous algorithms: hooks of the asynchronous engine (ASYNC.md §2), and its two
classic baselines, FedAsync and FedBuff."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from flip.algorithms.base import Algorithm
from flip.params import check, is_int, is_number

if TYPE_CHECKING:
    from flip.federation.async_events import Arrival


class AsyncAlgorithm(Algorithm):
    """An algorithm run by :class:`flip.federation.async_engine.AsyncFederation` (``train``
    picks that engine when ``asynchronous`` is true).

    ``trigger``: ``per_arrival``, ``buffer`` (:meth:`buffer_size` updates) or ``window``
    (:meth:`window_s`); ``needs_base``: keep θ_v, the model each client started from, with its
    flight; ``needs_masks``: keep the mask it trained under; ``stopped``: set to end the run.
    Hooks, besides :class:`Algorithm`'s ``setup``/``client_callbacks``/``info``/state:
    ``client_masks(fed, k)`` (what client k trains: ``fed.net`` under these masks; ``None``
    dense), ``download_pieces(fed, clients)`` (``None``: each client downloads its own model;
    or PR-FL's residual pieces), ``on_arrival(fed, arrival)``, ``aggregate(fed, arrivals, r)``
    (updates ``fed.net``), ``on_aggregation_end(fed, r)`` and ``evaluation_extras(fed, r)``
    (extra row columns).
    """

    asynchronous = True
    trigger = "per_arrival"
    needs_base = False
    needs_masks = False

    def __init__(self, name: str):
        super().__init__(name)
        self.stopped = False

    def check_data(self, dm) -> None:
        """Refuse settings the data cannot satisfy (``ConfigError``; e.g. more than its K
        clients); called by :func:`flip.train.train` once the data module is set up, before
        anything is written, and by ``setup``."""

    def client_masks(self, fed, client: int) -> dict | None:
        return fed.masks

    def download_pieces(self, fed, clients: list[int]):
        return None

    def buffer_size(self, fed) -> int:
        raise NotImplementedError

    def window_s(self, fed) -> tuple[float, float]:
        raise NotImplementedError

    def on_arrival(self, fed, arrival: Arrival) -> None:
        pass

    def aggregate(self, fed, arrivals: list[Arrival], round_idx: int) -> None:
        raise NotImplementedError

    def on_aggregation_end(self, fed, round_idx: int) -> dict:
        return {}

    def evaluation_extras(self, fed, round_idx: int) -> dict:
        return {}


def movable_tensors(net) -> dict[str, torch.Tensor]:
    """A network's parameters and floating buffers by name (what an asynchronous aggregation
    moves); integer buffers (batch counters) are left as they are."""
    out = dict(net.named_parameters())
    out.update((n, b) for n, b in net.named_buffers() if b.is_floating_point())
    return out


def server_tensors(fed) -> dict[str, torch.Tensor]:
    """:func:`movable_tensors` of the server's model θ."""
    return movable_tensors(fed.net)


def client_tensor(arrival: Arrival, name: str) -> torch.Tensor:
    u = arrival.update
    return u.params[name] if name in u.params else u.buffers[name]


class FedAsync(AsyncAlgorithm):
    """FedAsync (Xie, Koyejo & Gupta 2019, "Asynchronous Federated Optimization"), ASYNC.md
    §2: on every arrival, θ ← (1 − α s(τ)) θ + α s(τ) θ_i, with τ the update's staleness and
    s from ``async.staleness`` (``poly``: τ^(−a), a = 0.6). ``alpha``: α, 0.6 (Xie et al.).
    Clients start again with the new model. Raises ``ConfigError`` (``fedasync.alpha``) for
    α outside (0, 1]."""

    trigger = "per_arrival"

    def __init__(self, name: str = "fedasync", alpha: float = 0.6):
        super().__init__(name)
        self.alpha = check("fedasync.alpha", alpha, is_number(alpha) and 0 < alpha <= 1,
                           "a mixing weight α in (0, 1]")

    @torch.no_grad()
    def aggregate(self, fed, arrivals, round_idx):
        for a in arrivals:  # one: per_arrival
            w = self.alpha * a.weight
            for name, t in server_tensors(fed).items():
                t.mul_(1.0 - w).add_(client_tensor(a, name).to(t), alpha=w)

    def info(self, fed) -> dict:
        return {"alpha": self.alpha, "trigger": self.trigger}


class FedBuff(AsyncAlgorithm):
    """FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
    AISTATS 2022), ASYNC.md §2: the server buffers K_b = ``buffer_size`` updates, then
    θ ← θ − η_g · (1/K_b) Σ_i s(τ_i)(θ_{v_i} − θ_i), θ_{v_i} the model client i started from
    (kept with its flight), η_g = ``server_lr``. Clients start again at once with the
    current model (``async.restart: arrival``). The buffer is summed in client order (then
    arrival order), so the result does not depend on arrival ties; with K_b = m clients that
    all start from the same model, constant staleness, η_g = 1 and equal n_k it equals a
    FedAvg round with server SGD(lr=1) (tested). Raises ``ConfigError``:
    ``fedbuff.buffer_size`` not in 1..K (:meth:`check_data`), ``fedbuff.server_lr`` ≤ 0.
    """

    trigger = "buffer"
    needs_base = True

    def __init__(self, name: str = "fedbuff", buffer_size: int = 10, server_lr: float = 1.0):
        super().__init__(name)
        self.size = check("fedbuff.buffer_size", buffer_size,
                          is_int(buffer_size) and buffer_size >= 1, "an integer in 1..K")
        self.server_lr = check("fedbuff.server_lr", server_lr,
                               is_number(server_lr) and server_lr > 0, "a learning rate > 0")

    def check_data(self, dm) -> None:
        k = dm.num_clients
        check("fedbuff.buffer_size", self.size, self.size <= k,
              f"an integer in 1..K = 1..{k} (the buffer fills from the K clients' updates)")

    def setup(self, fed) -> None:
        self.check_data(fed.dm)

    def buffer_size(self, fed) -> int:
        return self.size

    @torch.no_grad()
    def aggregate(self, fed, arrivals, round_idx):
        ordered = sorted(arrivals, key=lambda a: (a.client, a.time))
        scale = 1.0 / len(ordered)
        for name, t in server_tensors(fed).items():
            delta = torch.zeros_like(t)
            for a in ordered:
                start = a.flight.base[name].to(t)
                delta.add_(start - client_tensor(a, name).to(t), alpha=scale * a.weight)
            t.add_(delta, alpha=-self.server_lr)

    def info(self, fed) -> dict:
        return {"buffer_size": self.size, "server_lr": self.server_lr, "trigger": self.trigger}
