"""An algorithm is a small class overriding a few hooks of the shared round (ALGORITHMS.md §1)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from flip.federation.callbacks import CallbackSpec
    from flip.federation.executor import ClientUpdate
    from flip.federation.server import Federation


class Algorithm:
    """Hooks of :class:`flip.federation.Federation`. The base class is FedAvg: no mask, no
    set-up, every round exactly ALGORITHMS.md §1.

    ``check_engine(executor)`` refuses settings the engine cannot serve (``ConfigError``, e.g.
    AutoFLIP's secure aggregation with ``engine=local``); :func:`flip.train.train` calls it
    before any data is read;
    ``check_data(dm)`` refuses settings the data module cannot satisfy (``ConfigError``, e.g.
    more than its K clients); :func:`flip.train.train` calls it once the data is set up,
    before anything is written or trained;
    ``setup(fed)`` runs once before round 1 (it may train clients through
    ``fed.executor.train``, set ``fed.set_masks``, replace ``fed.net``'s values and count
    costs with ``fed.ledger.add_setup``);
    ``client_model(fed, r)`` returns what the clients of round ``r`` train: a network and its
    mask (default: the global network and ``fed.masks``; EFLPrune: a smaller sub-model);
    ``client_callbacks(fed, r, k)`` gives client ``k`` extra Lightning callbacks as
    :class:`~flip.federation.callbacks.CallbackSpec` (their ``client_extras()`` land in its
    update); ``on_client_update(fed, r, update)`` sees each
    update as the server receives it and returns it in the global network's shapes;
    ``on_round_end(fed, r)`` runs after the server step of round ``r``; ``save(out_dir)`` writes
    the algorithm's artifacts with the run; ``info(fed)`` gives the summary's
    ``algorithm_info``.
    ``state_dict()`` / ``load_state_dict(state)`` carry whatever the algorithm holds across
    rounds into a checkpoint and back (a resumed run skips ``setup``). States hold tensors,
    numbers, strings, lists and dicts only (they are loaded with ``weights_only=True``).
    """

    def __init__(self, name: str = "fedavg"):
        self.name = name

    def check_engine(self, executor) -> None:
        pass

    def check_data(self, dm) -> None:
        pass

    def setup(self, fed: Federation) -> None:
        pass

    def client_model(self, fed: Federation, round_idx: int) -> tuple[nn.Module, dict | None]:
        return fed.net, fed.masks

    def client_callbacks(self, fed: Federation, round_idx: int, client: int) -> list[CallbackSpec]:
        return []

    def on_client_update(
        self, fed: Federation, round_idx: int, update: ClientUpdate
    ) -> ClientUpdate:
        return update

    def on_round_end(self, fed: Federation, round_idx: int) -> None:
        pass

    def save(self, out_dir: Path) -> list[Path]:
        return []

    def info(self, fed: Federation) -> dict:
        """Algorithm-specific facts for the summary's ``algorithm_info`` (JSON values)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FedAvg(Algorithm):
    """FedAvg (McMahan et al. 2017) with the configured server optimizer (ALGORITHMS.md §1)."""
