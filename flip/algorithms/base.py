"""An algorithm is a small class overriding a few hooks of the shared round (ALGORITHMS.md §1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flip.federation.server import Federation


class Algorithm:
    """Hooks of :class:`flip.federation.Federation`. The base class is FedAvg: no mask, no
    set-up, every round exactly ALGORITHMS.md §1.

    ``setup(fed)`` runs once before round 1 (it may train clients, set ``fed.set_masks``,
    replace ``fed.net``'s values and count costs); ``on_round_end(fed, r)`` after the server
    step of round ``r``; ``save(out_dir)`` writes the algorithm's artifacts with the run;
    ``state_dict()`` / ``load_state_dict(state)`` carry whatever the algorithm holds across
    rounds into a checkpoint and back (a resumed run skips ``setup``). States hold tensors,
    numbers, strings, lists and dicts only (they are loaded with ``weights_only=True``).
    """

    def __init__(self, name: str = "fedavg"):
        self.name = name

    def setup(self, fed: Federation) -> None:
        pass

    def on_round_end(self, fed: Federation, round_idx: int) -> None:
        pass

    def save(self, out_dir: Path) -> list[Path]:
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FedAvg(Algorithm):
    """FedAvg (McMahan et al. 2017) with the configured server optimizer (ALGORITHMS.md §1)."""
