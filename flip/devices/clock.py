"""The simulated clock: how long transfers and local training take on the devices
(ASYNC.md §1).

* **Compute**: a local update takes its training FLOPs (3 × effective forward FLOPs per
  sample × samples processed, ALGORITHMS.md §4) / the client's FLOP rate. PR-FL measured wall
  clock here; flip simulates it so that results do not depend on the machine that ran them
  (decision, ASYNC.md §1).
* **Transfers**: bytes by ALGORITHMS.md §4, over the client's link and the server's. A
  transfer's bandwidths are the profile's × the mean of ``noise_draws`` LogNormal(0, σ) factors
  (σ = ``noise_client`` for the client's link, ``noise_server`` for the server's), drawn from a
  stream keyed by (seed, purpose, client, cycle, direction): a run is reproducible and a
  resumed run draws the same factors. σ = 0 gives the profile exactly.
* **The server's link is a FIFO queue** (one for sending, one for receiving): transfers are
  served one at a time in the order they are requested, each for bytes / server bandwidth
  seconds, while the client's own link carries the same bytes from the moment of the request:
  a transfer requested at t that the server starts at s = max(t, link free) ends at
  max(s + B / server bandwidth, t + B / client bandwidth), and the link is free again at
  s + B / server bandwidth. This is the "simple exact FIFO queue" ASYNC.md §1 allows in place
  of PR-FL's fluid model (P: ``simulate_client_to_server``); a server link of ``None`` is
  never the bottleneck.
* **Residual download** (PR-FL, ASYNC.md §3.7): nested pieces cross the server's link once
  each, in order; a client needing pieces 1..j is done when piece j has crossed and its own
  link has carried the bytes of pieces 1..j (:meth:`Clock.multicast`).
* **A synchronous round** takes, from its start, the time until its last client's update has
  arrived: every client requests its download at the start (in client order), trains, and
  uploads (:meth:`Clock.round_time`) — ASYNC.md §1's max over the round's clients of download
  + compute + upload, with the server's queue.

Times are seconds on the run's simulated clock (0 at the start of round 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flip.devices.profiles import Devices

NOISE_STREAM = 12001
"""Key of the bandwidth-noise streams (with the run seed, the client, the cycle, the
direction)."""
DOWN, UP = 0, 1


@dataclass(frozen=True)
class CycleWork:
    """One client's work in a synchronous round: bytes down, training FLOPs, bytes up
    (``None``: its training raised, nothing was uploaded)."""

    client: int
    bytes_down: int
    flops: float
    bytes_up: int | None


class Clock:
    """Transfer and compute times on ``devices`` (module docstring), with the state of the
    server's two FIFO links. ``seed``: the run seed (noise streams)."""

    def __init__(self, devices: Devices, seed: int):
        self.devices = devices
        self.seed = int(seed)
        self.free = [0.0, 0.0]  # when the server's sending (DOWN) / receiving (UP) link is free

    # ----- noise --------------------------------------------------------------------------
    def factors(self, client: int, cycle: Sequence[int], direction: int) -> tuple[float, float]:
        """The (client link, server link) bandwidth factors of one transfer: each the mean of
        ``noise_draws`` LogNormal(0, σ) draws; exactly 1.0 for σ = 0. ``client`` −1 is the
        server's own multicast (:meth:`multicast`); ``cycle``: the event's index (a client's
        update count, or the round and attempt)."""
        d = self.devices
        if d.noise_client == 0 and d.noise_server == 0:
            return 1.0, 1.0
        rng = np.random.default_rng([self.seed, NOISE_STREAM, client + 1, *cycle, direction])
        c = rng.lognormal(0.0, d.noise_client, d.noise_draws).mean() if d.noise_client else 1.0
        s = rng.lognormal(0.0, d.noise_server, d.noise_draws).mean() if d.noise_server else 1.0
        return float(c), float(s)

    # ----- the links ----------------------------------------------------------------------
    def _server_bps(self, direction: int, factor: float) -> float | None:
        mbps = self.devices.server_up_MBps if direction == DOWN else self.devices.server_down_MBps
        bps = Devices.server_bandwidth(mbps)
        return None if bps is None else bps * factor

    def transfer(
        self, t: float, client: int, cycle: Sequence[int], nbytes: int, direction: int
    ) -> float:
        """When a transfer of ``nbytes`` bytes requested at ``t`` (s) ends: ``direction``
        :data:`DOWN` (server → client) or :data:`UP`; advances the server link's queue."""
        fc, fs = self.factors(client, cycle, direction)
        profile = self.devices[client]
        client_bps = (profile.download_bandwidth if direction == DOWN
                      else profile.upload_bandwidth) * fc
        end = t + nbytes / client_bps
        server_bps = self._server_bps(direction, fs)
        if server_bps is not None:
            start = max(t, self.free[direction])
            self.free[direction] = start + nbytes / server_bps
            end = max(end, self.free[direction])
        return end

    def download(self, t: float, client: int, cycle: Sequence[int], nbytes: int) -> float:
        """End of ``client``'s download of ``nbytes`` requested at ``t``."""
        return self.transfer(t, client, cycle, nbytes, DOWN)

    def upload(self, t: float, client: int, cycle: Sequence[int], nbytes: int) -> float:
        """Arrival at the server of ``client``'s upload of ``nbytes`` requested at ``t``."""
        return self.transfer(t, client, cycle, nbytes, UP)

    def multicast(
        self, t: float, piece_bytes: Sequence[int], needs: dict[int, int],
        cycles: dict[int, Sequence[int]], window: int,
    ) -> dict[int, float]:
        """Residual download (ASYNC.md §3.7): pieces 1..P (``piece_bytes``, bytes) cross the
        server's sending link once each, in order, from ``t``; client k needs pieces
        1..``needs[k]``. Returns each client's end: max(piece needs[k] has crossed, t + bytes
        of pieces 1..needs[k] / its own noisy bandwidth (``cycles[k]`` keys its noise)).
        ``window`` keys the server link's noise. Only the pieces some client needs are sent."""
        last = max(needs.values())
        _, fs = self.factors(-1, (window,), DOWN)
        server_bps = self._server_bps(DOWN, fs)
        crossed, clock = [], max(t, self.free[DOWN]) if server_bps is not None else t
        for nbytes in piece_bytes[:last]:
            clock = clock + nbytes / server_bps if server_bps is not None else t
            crossed.append(clock)
        if server_bps is not None:
            self.free[DOWN] = crossed[-1]
        cum = np.cumsum(piece_bytes[:last]).tolist()
        out = {}
        for client, j in needs.items():
            fc, _ = self.factors(client, cycles[client], DOWN)
            own = t + cum[j - 1] / (self.devices[client].download_bandwidth * fc)
            out[client] = max(crossed[j - 1], own)
        return out

    def compute_s(self, client: int, flops: float) -> float:
        """Seconds ``client`` needs for ``flops`` training FLOPs."""
        return flops / self.devices[client].flops_per_s

    # ----- a synchronous round -----------------------------------------------------------
    def round_time(self, t0: float, cycle: Sequence[int], work: Sequence[CycleWork]) -> float:
        """Seconds from ``t0`` until the last of ``work``'s clients is done: each requests
        its download at ``t0`` (in client order through the FIFO link), trains, then uploads
        (upload requests served in the order they are made; a client without upload is done
        when its training ends). ``cycle`` keys the noise (round, attempt). 0 for no work."""
        ready = {}
        for w in sorted(work, key=lambda w: w.client):
            end = self.download(t0, w.client, cycle, w.bytes_down)
            ready[w.client] = end + self.compute_s(w.client, w.flops)
        ends = []
        for w in sorted(work, key=lambda w: (ready[w.client], w.client)):
            t = ready[w.client]
            ends.append(t if w.bytes_up is None else self.upload(t, w.client, cycle, w.bytes_up))
        return max(ends, default=t0) - t0

    # ----- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"free": list(self.free)}

    def load_state_dict(self, state: dict) -> None:
        self.free = [float(v) for v in state["free"]]
