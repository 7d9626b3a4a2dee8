"""What the asynchronous engine keeps between events (ASYNC.md §2): the event queue, each
client's update in flight, the updates that arrived, and their checkpoint form.

Everything here converts to and from plain containers and tensors
(:func:`flight_state`/:func:`flight_from`, :meth:`EventQueue.state_dict`), so a checkpoint
holds the whole simulation: a resumed run replays the same events in the same order.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from torch import Tensor

from flip.federation.executor import ClientUpdate

DOWNLOADED, COMPUTED, ARRIVED, WINDOW = 0, 1, 2, 3
"""Event kinds: a client's download ended (it trains), its training ended (it uploads), its
upload arrived at the server, the server's aggregation window closes."""


class EventQueue:
    """A priority queue of ``(time, sequence, kind, client)``: the earliest event first, ties
    in the order events were scheduled (``sequence``), so the order never depends on
    floating-point ties or dict order."""

    def __init__(self):
        self.heap: list[tuple[float, int, int, int]] = []
        self.sequence = 0

    def push(self, time: float, kind: int, client: int = -1) -> None:
        heapq.heappush(self.heap, (float(time), self.sequence, kind, client))
        self.sequence += 1

    def peek_time(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def pop(self) -> tuple[float, int, int, int]:
        return heapq.heappop(self.heap)

    def __len__(self) -> int:
        return len(self.heap)

    def state_dict(self) -> dict:
        return {"heap": [list(e) for e in self.heap], "sequence": self.sequence}

    def load_state_dict(self, state: dict) -> None:
        self.heap = [(float(t), int(s), int(k), int(c)) for t, s, k, c in state["heap"]]
        heapq.heapify(self.heap)
        self.sequence = int(state["sequence"])


@dataclass
class Flight:
    """One client's update from its download request to its arrival (ASYNC.md §2).

    ``cycle``: the client's update count (1-based; keys its data order and its noise);
    ``version``: the server version v it downloaded; ``start``: simulated time of the
    request (s); ``bytes_down`` / ``bytes_up`` (B) and ``flops`` (training FLOPs) priced at
    its mask (ALGORITHMS.md §4); ``nonzero``: parameters its sub-model keeps; ``update``: the
    trained update (``None`` when its training raised, ``failure`` says why); ``base``: θ_v
    by name (kept only where the algorithm needs it, FedBuff); ``masks``: the masks it
    trained under (kept only where the algorithm needs them)."""

    client: int
    cycle: int
    version: int
    start: float
    bytes_down: int
    bytes_up: int
    flops: float
    nonzero: int
    update: ClientUpdate | None
    failure: str | None = None
    base: dict[str, Tensor] | None = None
    masks: dict[str, Tensor] | None = None


@dataclass
class Arrival:
    """An update that arrived and passed the checks: its client, version v_i, staleness
    τ_i = max(1, r − v_i) fixed at arrival, weight s(τ_i) (ASYNC.md §2), arrival time (s), the
    update and its flight."""

    client: int
    version: int
    staleness: int
    weight: float
    time: float
    update: ClientUpdate
    flight: Flight


def update_state(u: ClientUpdate) -> dict:
    return {"client": u.client, "params": u.params, "buffers": u.buffers,
            "num_samples": u.num_samples, "samples_processed": u.samples_processed,
            "epoch_losses": list(u.epoch_losses), "extras": u.extras,
            "extra_bytes_up": u.extra_bytes_up}


def update_from(state: dict) -> ClientUpdate:
    return ClientUpdate(**{**state, "epoch_losses": list(state["epoch_losses"])})


def flight_state(f: Flight) -> dict:
    """A :class:`Flight` as plain containers and tensors (for a checkpoint)."""
    out = dict(vars(f))
    out["update"] = update_state(f.update) if f.update is not None else None
    return out


def flight_from(state: dict) -> Flight:
    state = dict(state)
    if state["update"] is not None:
        state["update"] = update_from(state["update"])
    return Flight(**state)


def arrival_state(a: Arrival) -> dict:
    return {"client": a.client, "version": a.version, "staleness": a.staleness,
            "weight": a.weight, "time": a.time, "flight": flight_state(a.flight)}


def arrival_from(state: dict) -> Arrival:
    flight = flight_from(state["flight"])
    return Arrival(state["client"], state["version"], state["staleness"], state["weight"],
                   state["time"], flight.update, flight)
