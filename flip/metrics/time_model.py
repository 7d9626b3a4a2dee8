"""Per-parameter time of a federated round on the clients' devices (PruneFL, ALGORITHMS.md
§3.1; PR-FL's costs, ASYNC.md §3.5).

PruneFL weighs each parameter's importance against the time it adds to a round: c_l =
c_comm + E·c_comp,l seconds for one parameter of layer l, plus a fixed T0 per round. The
devices are those of the run (:class:`flip.devices.Devices`, the ``devices`` config group):
the same profiles the simulated clock uses (ASYNC.md §1: one module, not two).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor

from flip.devices import DeviceProfile, Devices
from flip.metrics.costs import BYTES_PER_VALUE, FlopsProfile


def comm_time(device: DeviceProfile) -> float:
    """c_comm of one device: seconds one kept parameter costs in a round, sent down and up as
    float32: 4 B / download bandwidth + 4 B / upload bandwidth (bytes per second)."""
    return (BYTES_PER_VALUE / device.download_bandwidth
            + BYTES_PER_VALUE / device.upload_bandwidth)


def parameter_times(
    profile: FlopsProfile,
    params: Mapping[str, Tensor],
    prunable: Iterable[str],
    samples_per_epoch: float,
    local_epochs: int,
    devices: Devices | DeviceProfile,
) -> dict[str, float]:
    """Seconds one parameter of each tensor adds to a round: c = c_comm + E·c_comp,l.

    c_comp,l = training FLOPs per parameter of layer l in one local epoch / the device's
    FLOP rate, with training FLOPs = 3 × forward FLOPs (ALGORITHMS.md §4): 3 ·
    ``profile.by_layer[l]`` / (entries of layer l's prunable tensors) · ``samples_per_epoch``.
    Tensors that are not ``prunable`` (biases, normalisation) cost c_comm only (fvcore counts
    no FLOPs for them). ``params``: every tensor of the network by name; returns the same keys
    (seconds).

    ``devices``: one profile, or the run's :class:`~flip.devices.Devices`. With several
    different profiles the time is the mean over the clients of each client's c (the cost of a
    parameter for a client drawn at random; decision, ASYNC.md §1: the masks and the greedy
    search need one cost per layer); with identical profiles it is that profile's c exactly.
    """
    if isinstance(devices, Devices):
        distinct = list(dict.fromkeys(devices.profiles))
        weights = [devices.profiles.count(d) / devices.num_clients for d in distinct]
    else:
        distinct, weights = [devices], [1.0]
    prunable = set(prunable)
    layer_numel: dict[str, int] = {}
    for name in prunable:
        layer = name.rsplit(".", 1)[0] if "." in name else ""
        layer_numel[layer] = layer_numel.get(layer, 0) + params[name].numel()
    out = {}
    for name in params:
        layer = name.rsplit(".", 1)[0] if "." in name else ""
        flops = 0.0
        if name in prunable:
            flops_per_param = profile.by_layer.get(layer, 0) / layer_numel[layer]
            flops = local_epochs * 3.0 * flops_per_param * samples_per_epoch
        times = [comm_time(d) + flops / d.flops_per_s for d in distinct]
        out[name] = times[0] if len(times) == 1 else sum(
            w * t for w, t in zip(weights, times, strict=True))
    return out
