"""The run's cost accounting: set-up costs, per-round costs, totals and the summary's ``cost``
block, all by ALGORITHMS.md §4's conventions (:mod:`flip.metrics.costs`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from flip.metrics.costs import (
    BYTES_PER_VALUE,
    GB,
    FlopsProfile,
    effective_flops,
    param_counts,
    profile_flops,
    training_flops,
    transfer_bytes,
)


class CostLedger:
    """FLOPs and bytes of one run.

    ``dense_flops`` (fvcore profile of θ_0, FLOPs per sample) and ``dense_params`` are fixed at
    construction; ``flops`` is the profile of the global network as clients train it (the
    compact network after :meth:`reprofile`). ``setup``: work before round 1 (AutoFLIP's
    exploration, PruneFL's initial pruning: FLOPs, bytes, samples, clients), included in every
    cumulative figure; ``totals``: FLOPs and bytes of the rounds. ``counts`` and
    ``flops_per_sample``: what the latest round (or the set-up) sent, from :meth:`price`.

    Args:
        net: θ_0, the dense global network.
        example_input: one input batch ``(1, *input_shape)`` for fvcore (any device).
    """

    def __init__(self, net: nn.Module, example_input: Tensor):
        self.example_input = example_input
        self.dense_flops = self.flops = profile_flops(net, example_input)
        self.dense_params = sum(p.numel() for p in net.parameters())
        self.setup = {"flops": 0.0, "bytes": 0, "samples": 0, "clients": 0}
        self.totals = {"flops": 0.0, "bytes": 0, "bytes_extra_up": 0}
        self.counts: dict[str, float] = {}
        self.flops_per_sample = 0.0

    def reprofile(self, net: nn.Module) -> None:
        """Profile the global network again (after compaction, ALGORITHMS.md §2.2)."""
        self.flops = profile_flops(net, self.example_input)

    def price(
        self, net: nn.Module, masks: dict[str, Tensor] | None, profile: FlopsProfile | None = None
    ) -> tuple[int, int]:
        """Costs of sending ``net`` under ``masks`` to one client; returns ``(download bytes,
        upload bytes)`` and sets :attr:`counts` (:func:`param_counts`, with ``params``,
        ``density`` and ``compression_ratio`` relative to the dense global network) and
        :attr:`flops_per_sample` (effective forward FLOPs per sample). ``profile``: fvcore
        profile of ``net``, profiled here when ``None`` and ``net`` is not the global network
        (``profile=self.flops`` for the global network)."""
        profile = profile or profile_flops(net, self.example_input)
        params = {k: p.detach() for k, p in net.named_parameters()}
        counts = param_counts(params, masks)
        kept = counts["nonzero_params"]
        counts.update(
            params=self.dense_params,
            density=kept / self.dense_params,
            sparsity=1.0 - kept / self.dense_params,
            compression_ratio=self.dense_params / kept if kept else math.inf,
        )
        self.counts = counts
        self.flops_per_sample = effective_flops(profile, masks, net)
        return transfer_bytes(params, masks)

    def add_setup(self, flops: float, nbytes: int, samples: int, clients: int = 1) -> None:
        """Count work done before round 1: FLOPs, bytes, samples processed, clients involved
        (reported as ``*_exploration`` in the summary, ALGORITHMS.md §4)."""
        self.setup["flops"] += flops
        self.setup["bytes"] += int(nbytes)
        self.setup["samples"] += int(samples)
        self.setup["clients"] += clients

    def add_explorer(self, samples_processed: int) -> None:
        """One AutoFLIP explorer: dense model down, D_k up (4 B per entry each), training FLOPs
        of the dense model over the samples it processed (ALGORITHMS.md §2.1, §4)."""
        flops = training_flops(self.dense_flops.total, samples_processed)
        self.add_setup(flops, 2 * BYTES_PER_VALUE * self.dense_params, samples_processed)

    def add_round(
        self, down: int, up: int, sampled: int, returned: Sequence, aggregated: Sequence
    ) -> dict:
        """Count one round: every sampled client was sent the model (``down`` bytes each),
        every returned update was trained (training FLOPs at :attr:`flops_per_sample`) and sent
        up (``up`` bytes each), the aggregated ones with their ``extra_bytes_up`` (uploads
        besides the model, e.g. PruneFL's importance: ``cost/bytes_extra_up_round``). Returns
        the round's ``model/*`` and ``cost/*`` columns."""
        flops = training_flops(self.flops_per_sample, sum(u.samples_processed for u in returned))
        extra = sum(u.extra_bytes_up for u in aggregated)
        bytes_up = up * len(returned) + extra
        self.totals["flops"] += flops
        self.totals["bytes_extra_up"] = self.totals.get("bytes_extra_up", 0) + extra
        self.totals["bytes"] += down * sampled + bytes_up
        cum_bytes = self.totals["bytes"] + self.setup["bytes"]
        return {
            "model/nonzero_params": self.counts["nonzero_params"],
            "model/density": self.counts["density"],
            "cost/flops_train_round": flops,
            "cost/flops_train_cum": self.totals["flops"] + self.setup["flops"],
            "cost/bytes_down_round": down * sampled,
            "cost/bytes_up_round": bytes_up,
            "cost/bytes_extra_up_round": extra,
            "cost/bytes_cum": cum_bytes,
            "cost/gb_cum": cum_bytes / GB,
        }

    def add_aggregation(
        self, bytes_down: int, bytes_up: int, flops: float, nonzero: float
    ) -> dict:
        """Count one asynchronous aggregation (ASYNC.md §2): ``bytes_down`` sent to the clients
        that started since the previous one, ``bytes_up`` and training ``flops`` of every
        update that arrived (each priced at its own mask, ALGORITHMS.md §4); ``nonzero``: the
        mean nonzero parameter count of the sub-models those updates trained (sets
        :attr:`counts`). Returns the ``model/*`` and ``cost/*`` columns, as :meth:`add_round`."""
        self.totals["flops"] += flops
        self.totals["bytes"] += int(bytes_down) + int(bytes_up)
        kept = int(round(nonzero))
        self.counts.update(
            nonzero_params=kept, density=kept / self.dense_params,
            sparsity=1.0 - kept / self.dense_params,
            compression_ratio=self.dense_params / kept if kept else math.inf,
        )
        cum_bytes = self.totals["bytes"] + self.setup["bytes"]
        return {
            "model/nonzero_params": kept,
            "model/density": kept / self.dense_params,
            "cost/flops_train_round": flops,
            "cost/flops_train_cum": self.totals["flops"] + self.setup["flops"],
            "cost/bytes_down_round": int(bytes_down),
            "cost/bytes_up_round": int(bytes_up),
            "cost/bytes_extra_up_round": 0,
            "cost/bytes_cum": cum_bytes,
            "cost/gb_cum": cum_bytes / GB,
        }

    def summary(self) -> dict:
        """The summary's ``cost`` block: parameter counts, FLOPs per sample (dense, compact
        network, effective), training FLOPs and bytes of the rounds, of the set-up and in
        total, GB, set-up clients and samples."""
        setup, totals = self.setup, self.totals
        return {
            **self.counts,
            "flops_per_sample_dense": self.dense_flops.total,
            "flops_per_sample_structured": self.flops.total,
            "flops_per_sample": self.flops_per_sample,
            "train_flops_rounds": totals["flops"],
            "train_flops_exploration": setup["flops"],
            "train_flops_total": totals["flops"] + setup["flops"],
            "bytes_rounds": totals["bytes"],
            "bytes_extra_up": totals.get("bytes_extra_up", 0),
            "bytes_exploration": setup["bytes"],
            "bytes_total": totals["bytes"] + setup["bytes"],
            "gb_total": (totals["bytes"] + setup["bytes"]) / GB,
            "exploration_clients": setup["clients"],
            "exploration_samples": setup["samples"],
        }

    def state_dict(self) -> dict:
        """Totals, set-up costs, counts and effective FLOPs per sample (for a checkpoint)."""
        return {
            "totals": dict(self.totals),
            "exploration": dict(self.setup),
            "counts": dict(self.counts),
            "flops_per_sample": self.flops_per_sample,
        }

    def load_state_dict(self, state: dict) -> None:
        self.totals = dict(state["totals"])
        self.setup = dict(state["exploration"])
        self.counts = dict(state["counts"])
        self.flops_per_sample = state["flops_per_sample"]
