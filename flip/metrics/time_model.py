"""Per-parameter time of a federated round on a device profile (PruneFL, ALGORITHMS.md §3.1).

PruneFL weighs each parameter's importance against the time it adds to a round: c_l =
c_comm + E·c_comp,l seconds for one parameter of layer l, plus a fixed T0 per round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from torch import Tensor

from flip.errors import ConfigError
from flip.metrics.costs import BYTES_PER_VALUE, FlopsProfile


@dataclass(frozen=True)
class DeviceProfile:
    """A client device (config group ``device``).

    ``download_bandwidth`` / ``upload_bandwidth``: bytes per second; ``flops_per_s``: sustained
    training throughput in fvcore FLOPs (one multiply-add = 1) per second;
    ``round_overhead_s``: T0, the time of a round that no parameter adds (seconds).
    Raises ``ConfigError`` (field ``device.<name>``) for a value ≤ 0.
    """

    download_bandwidth: float
    upload_bandwidth: float
    flops_per_s: float
    round_overhead_s: float
    name: str = "default"

    def __post_init__(self):
        for key in ("download_bandwidth", "upload_bandwidth", "flops_per_s", "round_overhead_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"device.{key}", getattr(self, key), "a number > 0")

    @property
    def comm_time(self) -> float:
        """c_comm: seconds one kept parameter costs in a round, sent down and up as float32:
        4 B / download bandwidth + 4 B / upload bandwidth."""
        return BYTES_PER_VALUE / self.download_bandwidth + BYTES_PER_VALUE / self.upload_bandwidth


def parameter_times(
    profile: FlopsProfile,
    params: Mapping[str, Tensor],
    prunable: Iterable[str],
    samples_per_epoch: float,
    local_epochs: int,
    device: DeviceProfile,
) -> dict[str, float]:
    """Seconds one parameter of each tensor adds to a round: c = c_comm + E·c_comp,l.

    c_comp,l = training FLOPs per parameter of layer l in one local epoch / ``flops_per_s``,
    with training FLOPs = 3 × forward FLOPs (ALGORITHMS.md §4): 3 · ``profile.by_layer[l]`` /
    (entries of layer l's prunable tensors) · ``samples_per_epoch``. Tensors that are not
    ``prunable`` (biases, normalisation) cost c_comm only (fvcore counts no FLOPs for them).
    ``params``: every tensor of the network by name; returns the same keys (seconds).
    """
    prunable = set(prunable)
    layer_numel: dict[str, int] = {}
    for name in prunable:
        layer = name.rsplit(".", 1)[0] if "." in name else ""
        layer_numel[layer] = layer_numel.get(layer, 0) + params[name].numel()
    out = {}
    for name in params:
        c = device.comm_time
        if name in prunable:
            layer = name.rsplit(".", 1)[0] if "." in name else ""
            flops_per_param = profile.by_layer.get(layer, 0) / layer_numel[layer]
            c += local_epochs * 3.0 * flops_per_param * samples_per_epoch / device.flops_per_s
        out[name] = c
    return out
