"""EFLPrune: each round a physically smaller sub-model by L1 unit ranking (ALGORITHMS.md §3.2)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from flip.algorithms.base import Algorithm
from flip.params import check, is_number
from flip.pruning import extract_submodel, kept_positions, scatter_submodel
from flip.pruning.compaction import float_tensors


class EFLPrune(Algorithm):
    """EFLPrune, flip's reading of a name no source we could read pins down (ALGORITHMS.md
    §3.2). It follows the best-supported candidate: Wu, Song & Zeng, "Efficient federated
    learning on resource-constrained edge devices based on model pruning", Complex &
    Intelligent Systems 9 (2023).

    Every round the server ranks the units (Conv filters, Linear neurons) of each layer by the
    L1 norm of their fan-in weights, keeps the ``keep_ratio`` strongest (at least one; the
    output layer keeps all) and sends the physically smaller sub-model
    (:func:`flip.pruning.extract_submodel`, built with Torch-Pruning's dependency graph).
    Clients train it through the same round as every algorithm. The server writes the
    returned weights back into the full model (:func:`flip.pruning.scatter_submodel`), and
    the units it did not send keep their previous global values (parameter reuse): their
    pseudo-gradient is 0 and they are restored after the server step, so even a server
    optimizer with momentum leaves them unchanged. The round's FLOPs are the sub-model's
    (fvcore), its bytes 4 B per sub-model entry each way, its density sub-model entries /
    full-model entries. The global model evaluated is the full one.
    Raises ``ConfigError`` (field ``eflprune.keep_ratio``) unless 0 < keep_ratio ≤ 1.
    """

    def __init__(self, name: str = "eflprune", keep_ratio: float = 0.7):
        super().__init__(name)
        self.keep_ratio = check("eflprune.keep_ratio", keep_ratio,
                                is_number(keep_ratio) and 0.0 < keep_ratio <= 1.0,
                                "a fraction in (0, 1]")
        self.history: list[dict] = []

    def client_model(self, fed, round_idx: int):
        example = fed.dm.example_input().to(next(fed.net.parameters()).device)
        sub, self.index, removed = extract_submodel(fed.net, self.keep_ratio, example)
        self.before = {n: t.detach().clone() for n, t in float_tensors(fed.net).items()}
        self.history.append(
            {
                "round": round_idx,
                "removed_units": {k: len(v) for k, v in removed.items()},
                "params": sum(p.numel() for p in sub.parameters()),
            }
        )
        return sub, None

    def on_client_update(self, fed, round_idx: int, update):
        update.params = scatter_submodel(
            {n: p.detach() for n, p in fed.net.named_parameters()}, update.params, self.index
        )
        update.buffers = scatter_submodel(dict(fed.net.named_buffers()), update.buffers, self.index)
        return update

    @torch.no_grad()
    def on_round_end(self, fed, round_idx: int) -> None:
        """Parameter reuse: entries outside the sub-model get their pre-round values back."""
        for name, t in float_tensors(fed.net).items():
            dropped = ~kept_positions(t.shape, self.index[name].to(t.device))
            t[dropped] = self.before[name][dropped]
        self.before = {}

    def save(self, out_dir: Path) -> list[Path]:
        """``eflprune.json``: per round, the units removed per layer group and the sub-model's
        parameter count."""
        path = Path(out_dir) / "eflprune.json"
        path.write_text(json.dumps(self.history, indent=2) + "\n")
        return [path]

    def state_dict(self) -> dict:
        """The per-round history; the sub-model is rebuilt from θ every round (nothing else
        carries over between rounds)."""
        return {"history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
