"""AutoFLIP's adaptive masks (``pruning.adaptive: per_round``, ALGORITHMS.md §2.4).

Every client explores once (§2.1) and the server keeps each explorer's report D_k. Round r's
mask comes from the reports of that round's participants S_r only: D_r = the configured
aggregate of {D_k : k ∈ S_r} (for ``mean``: Σ D_k / |S_r| summed in client order, the same
float operations as the fixed mask's D, so with every client in every round M_r is the fixed
mask bit for bit), G_r = minmax(D_r), M_r by the same Tp rule (§2.2). The clients of round r
train θ ⊙ M_r: the round's removed units physically gone (a compact sub-model, as EFLPrune's,
written back into the dense θ), the other pruned entries zero and held at zero. The server
keeps the dense θ: what M_r prunes keeps its last global value (restored after the server
step, so a server optimizer with momentum does not move it either), and an entry pruned in
round r and kept in round r + 1 is sent with that value. Costs follow M_r (the ledger prices
what is sent). A retried round (too few clients succeeded) keeps the mask of its first sample.

The released code recomputed the mask the same way each round but its global model did not
stay masked (ALGORITHMS.md §2.4); that is not reproduced.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from flip.federation.seeding import sample_clients
from flip.pruning import apply_masks, guidance_matrix, kept_positions, scatter_submodel
from flip.pruning.compaction import compact, compact_masks, float_tensors
from flip.pruning.guidance_robust import aggregate_displacements
from flip.pruning.masks import HybridMask, hybrid_parts


def mean_reports(reports: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """(Σ_k D_k) / n, accumulated in the order given from zeros (float32, like the reports):
    the operation order of :meth:`flip.algorithms.autoflip.AutoFLIP.explore`'s mean."""
    total = {k: torch.zeros_like(v) for k, v in reports[0].items()}
    for report in reports:
        for name, d in report.items():
            total[name] += d
    return {k: v / len(reports) for k, v in total.items()}


class AdaptiveMasks:
    """The per-round state of ``pruning.adaptive: per_round``: the explorers' reports
    (``reports[k]``: client k's D_k after any simulated attack, CPU float32 tensors of the
    parameters' shapes), the mask of the round in progress and its compaction index, θ's
    values before the round, and per round the participants, densities and units removed
    (``history``, the summary's and ``adaptive_masks.json``'s record)."""

    def __init__(self, aggregate: str = "mean", trim: float = 0.0):
        self.aggregate, self.trim = aggregate, trim
        self.reports: dict[int, dict[str, Tensor]] = {}
        self.history: list[dict] = []
        self.parts: HybridMask | None = None
        self.index: dict[str, Tensor] | None = None
        self.before: dict[str, Tensor] = {}

    def displacement(self, clients: Sequence[int]) -> dict[str, Tensor]:
        """D_r over the reports of ``clients`` that explored successfully (all reports when
        none of them did, with the fixed mask's D as the fallback)."""
        chosen = [self.reports[k] for k in sorted(clients) if k in self.reports]
        chosen = chosen or [self.reports[k] for k in sorted(self.reports)]
        if self.aggregate == "mean":
            return mean_reports(chosen)
        return aggregate_displacements(chosen, self.aggregate, self.trim)

    def client_model(self, fed, r: int, pruning) -> tuple[nn.Module, dict[str, Tensor]]:
        """Round ``r``'s mask M_r from its participants (``federation.participation`` of K,
        :func:`flip.federation.seeding.sample_clients`'s first sample) and what its clients
        train: a masked copy of θ, compacted when units are removed and ``pruning.compact``.
        Returns ``(network, mask in its layout)``."""
        clients = sample_clients(fed.seed, r, fed.dm.num_clients, fed.params.participation)
        example = fed.dm.example_input().to(next(fed.net.parameters()).device)
        guidance = guidance_matrix(self.displacement(clients))
        self.parts = hybrid_parts(fed.net, guidance, pruning.threshold, example,
                                  pruning.structured, pruning.scope)
        self.before = {n: t.detach().clone() for n, t in float_tensors(fed.net).items()}
        self.history.append({
            "round": r, "clients": clients, "density": self.parts.density(),
            "density_unstructured": self.parts.unstructured_density(),
            "units_removed": sum(len(v) for v in self.parts.removal.values()),
        })
        if pruning.compact and self.parts.removal:
            sub, self.index = compact(fed.net, self.parts.removal, example)
            masks = compact_masks(self.parts.masks, self.index)
        else:
            sub, self.index, masks = copy.deepcopy(fed.net), None, self.parts.masks
        apply_masks(sub, masks)
        return sub, masks

    def on_client_update(self, fed, update):
        """A compact update written back into θ's shapes (entries it does not hold: θ's)."""
        if self.index is not None:
            update.params = scatter_submodel(
                {n: p.detach() for n, p in fed.net.named_parameters()}, update.params, self.index)
            update.buffers = scatter_submodel(dict(fed.net.named_buffers()), update.buffers,
                                              self.index)
        return update

    @torch.no_grad()
    def on_round_end(self, fed) -> None:
        """Entries M_r pruned (and removed units' buffers) get their pre-round values back."""
        for name, t in float_tensors(fed.net).items():
            trained = torch.ones_like(t, dtype=torch.bool)
            if self.index is not None:
                trained = kept_positions(t.shape, self.index[name].to(t.device))
            if name in self.parts.masks:
                trained &= self.parts.masks[name].to(t.device)
            t[~trained] = self.before[name].to(t.device)[~trained]
        self.before = {}  # the round's mask and index stay readable until the next round

    def summary(self) -> dict:
        """Means over the rounds so far: ``density_hybrid``, ``density_unstructured``,
        ``units_removed`` (None before round 1)."""
        if not self.history:
            return {"density_hybrid": None, "density_unstructured": None, "units_removed": None}
        n = len(self.history)
        return {"density_hybrid": sum(h["density"] for h in self.history) / n,
                "density_unstructured": sum(h["density_unstructured"] for h in self.history) / n,
                "units_removed": sum(h["units_removed"] for h in self.history) / n}

    def state_dict(self) -> dict:
        return {"reports": {str(k): v for k, v in self.reports.items()},
                "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.reports = {int(k): dict(v) for k, v in state["reports"].items()}
        self.history = list(state["history"])
