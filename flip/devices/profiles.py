"""Client device profiles and the server's link: what every simulated time in flip is made of
(ASYNC.md §1).

A :class:`Devices` holds one :class:`DeviceProfile` per client (download and upload bandwidth,
compute rate), the server's link (upload and download bandwidth; ``None``: not a bottleneck)
and the noise of the transfers (σ of the log-normal factors, ASYNC.md §1). It is built from the
``devices`` config group: a named preset (:data:`PRESETS`, e.g. ``prfl10``, PR-FL's ten
clients) whose lists are cycled over the K clients, with any field overridden by the config
(an explicit list must then name exactly K clients, or one value for all). Units: bandwidths in
MB/s (1 MB = 10^6 B) as configured, bytes per second in the properties; compute in FLOP/s
(fvcore FLOPs, one multiply-add = 1, ALGORITHMS.md §4).

PruneFL's per-parameter time (:func:`flip.metrics.time_model.parameter_times`), PR-FL's costs
and the simulated clock (:mod:`flip.devices.clock`) all read these profiles: one module, not
two (ASYNC.md §1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flip.params import check, check_choice, is_int, is_number

MB = 1e6
"""Bytes in a megabyte (10^6, ASYNC.md §1)."""

PRESETS: dict[str, dict] = {
    # flip's default device (the former ``device`` group): one mid-range phone-class device on
    # a consumer link (20 Mbit/s down, 10 up), 1e10 FLOP/s; the server is no bottleneck and
    # there is no noise, so PruneFL's times and every synchronous result stay as they were.
    "default": {
        "download_MBps": [2.5], "upload_MBps": [1.25], "flops_per_s": [1.0e10],
        "server_up_MBps": None, "server_down_MBps": None,
        "noise_client": 0.0, "noise_server": 0.0,
    },
    # PR-FL (configs/femnist.py, configs/cifar10.py; P: get_internet_speed): ten clients
    # from 20 down / 5 up to 1.5 / 0.4 MB/s, server 10 up / 50 down, σ 0.3 clients, 0.1 server.
    # PR-FL timed every client's training on one GPU (computerlr = 1 for all): one compute rate.
    "prfl10": {
        "download_MBps": [20.0, 18.0, 12.0, 10.0, 6.0, 4.0, 2.5, 2.0, 2.0, 1.5],
        "upload_MBps": [5.0, 4.0, 3.0, 2.5, 1.5, 1.0, 0.6, 0.5, 0.5, 0.4],
        "flops_per_s": [1.0e10],
        "server_up_MBps": 10.0, "server_down_MBps": 50.0,
        "noise_client": 0.3, "noise_server": 0.1,
    },
    # Three tiers, links and compute together (fast, medium, slow; cycled), PR-FL's server.
    "tiers": {
        "download_MBps": [20.0, 5.0, 1.25], "upload_MBps": [5.0, 1.25, 0.3],
        "flops_per_s": [4.0e10, 1.0e10, 2.5e9],
        "server_up_MBps": 10.0, "server_down_MBps": 50.0,
        "noise_client": 0.3, "noise_server": 0.1,
    },
    # Equal fast links, compute rates spread 16× (cycled): stragglers by computation only.
    "compute_bound": {
        "download_MBps": [20.0], "upload_MBps": [5.0],
        "flops_per_s": [8.0e10, 4.0e10, 2.0e10, 1.0e10, 5.0e9],
        "server_up_MBps": None, "server_down_MBps": None,
        "noise_client": 0.0, "noise_server": 0.0,
    },
}
"""Named device presets (``devices.preset``): per-client lists, cycled over the K clients."""

PER_CLIENT = ("download_MBps", "upload_MBps", "flops_per_s")
SERVER = ("server_up_MBps", "server_down_MBps")
NOISE = ("noise_client", "noise_server")


@dataclass(frozen=True)
class DeviceProfile:
    """One client's device: ``download_MBps`` / ``upload_MBps`` (MB/s, 10^6 B/s) and
    ``flops_per_s`` (sustained training throughput, fvcore FLOPs per second). Raises
    ``ConfigError`` naming ``devices.<field>`` for a value that is not a number > 0."""

    download_MBps: float
    upload_MBps: float
    flops_per_s: float

    def __post_init__(self):
        for key in PER_CLIENT:
            value = getattr(self, key)
            check(f"devices.{key}", value, is_number(value) and value > 0, "numbers > 0")

    @property
    def download_bandwidth(self) -> float:
        """Bytes per second down."""
        return self.download_MBps * MB

    @property
    def upload_bandwidth(self) -> float:
        """Bytes per second up."""
        return self.upload_MBps * MB


@dataclass(frozen=True)
class Devices:
    """The K clients' devices and the server's link (ASYNC.md §1).

    ``profiles``: one :class:`DeviceProfile` per client, in client order; ``server_up_MBps``
    (the server sending: every download crosses it) and ``server_down_MBps`` (receiving:
    every upload), MB/s, ``None`` for a link that is never the bottleneck; ``noise_client`` /
    ``noise_server``: σ of the LogNormal(0, σ) factors of a transfer's bandwidth (0: the
    profile exactly); ``noise_draws``: how many factors are averaged per transfer (20, P:
    ``get_internet_speed``); ``round_overhead_s``: T0, PruneFL's fixed time of a round
    (seconds, ALGORITHMS.md §3.1); ``preset``: the preset it was built from.
    """

    profiles: tuple[DeviceProfile, ...]
    server_up_MBps: float | None = None
    server_down_MBps: float | None = None
    noise_client: float = 0.0
    noise_server: float = 0.0
    noise_draws: int = 20
    round_overhead_s: float = 1.0
    preset: str = "default"

    def __post_init__(self):
        for key in SERVER:
            value = getattr(self, key)
            check(f"devices.{key}", value, value is None or (is_number(value) and value > 0),
                  "null (no bottleneck) or a number of MB/s > 0")
        for key in NOISE:
            value = getattr(self, key)
            check(f"devices.{key}", value, is_number(value) and value >= 0, "a σ >= 0")
        check("devices.noise_draws", self.noise_draws,
              is_int(self.noise_draws) and self.noise_draws >= 1, "an integer >= 1")
        check("devices.round_overhead_s", self.round_overhead_s,
              is_number(self.round_overhead_s) and self.round_overhead_s > 0,
              "a number of seconds > 0")

    @property
    def num_clients(self) -> int:
        return len(self.profiles)

    def __getitem__(self, client: int) -> DeviceProfile:
        return self.profiles[client]

    @property
    def uniform(self) -> bool:
        """Whether every client has the same profile."""
        return len(set(self.profiles)) == 1

    @staticmethod
    def server_bandwidth(mbps: float | None) -> float | None:
        """Bytes per second of a server link given in MB/s (``None`` stays ``None``)."""
        return None if mbps is None else mbps * MB


DEVICE_KEYS = ("preset", *PER_CLIENT, *SERVER, *NOISE, "noise_draws", "round_overhead_s")


def _per_client(key: str, value, num_clients: int, from_preset: bool) -> list[float]:
    """K values of a per-client field: a preset's list cycled; an explicit list of K values or
    of one value for all; a single number for all."""
    if is_number(value):
        return [value] * num_clients
    check(f"devices.{key}", value, isinstance(value, Sequence) and not isinstance(value, str)
          and len(value) > 0, "a number or a list of numbers")
    if not from_preset:
        check(f"devices.{key}", list(value), len(value) in (1, num_clients),
              f"one value per client (K={num_clients} values) or one value for all",
              hint="Presets are cycled over K; a list given in the config is not.")
    return [value[k % len(value)] for k in range(num_clients)]


def build_devices(node: Mapping | None, num_clients: int) -> Devices:
    """The :class:`Devices` of ``node`` (the ``devices`` config node as a dict) for K =
    ``num_clients`` clients: the preset ``node["preset"]``, each field that ``node`` sets
    (not null) replacing the preset's.

    Raises:
        ConfigError: an unknown preset (``devices.preset``, listing :data:`PRESETS`), an
            unknown key, a per-client list whose length is neither 1 nor K, a bandwidth or
            rate ≤ 0, a negative σ.
    """
    node = {k: v for k, v in dict(node or {}).items() if k != "_target_"}
    for key in node:
        check(f"devices.{key}", node[key], key in DEVICE_KEYS,
              "one of the keys " + ", ".join(DEVICE_KEYS))
    preset = check_choice("devices.preset", node.get("preset", "default"), tuple(PRESETS))
    values = dict(PRESETS[preset])
    explicit = {k for k, v in node.items() if v is not None and k != "preset"}
    values.update({k: node[k] for k in explicit})
    lists = {k: _per_client(k, values[k], num_clients, k not in explicit) for k in PER_CLIENT}
    profiles = tuple(
        DeviceProfile(*(lists[key][k] for key in PER_CLIENT)) for k in range(num_clients)
    )
    extra = {k: values[k] for k in ("noise_draws", "round_overhead_s") if k in values}
    return Devices(
        profiles, values["server_up_MBps"], values["server_down_MBps"],
        values["noise_client"], values["noise_server"], preset=preset, **extra,
    )
