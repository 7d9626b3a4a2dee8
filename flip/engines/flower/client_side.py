"""What a ClientApp process holds for a run: the data module, the Trainer configuration, the
client optimizer and the networks it has rebuilt (ENGINES.md §3).

A :class:`ClientSide` is built once per process and run config (:func:`client_side` caches
it) from the flip config the run ships (:mod:`flip.engines.flower.runconfig`), exactly as
:func:`flip.train.train` builds the server's: the same data module (loaded, partitioned and
split from the same seed), the same partial ``lightning.Trainer``, the same client optimizer.
It offers the attributes :meth:`flip.federation.executor.LocalExecutor.train_one` reads from a
federation (``dm``, ``trainer_factory``, ``client_optimizer``), so a Flower client trains a job
with ``engine=local``'s own code, not a second implementation.
"""

from __future__ import annotations

import copy
import importlib
import json

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from flip.federation.executor import ClientJob, ClientUpdate, LocalExecutor
from flip.params import ClientParams, from_node, optimizer_factory
from flip.pruning import compact
from flip.train import build, build_datamodule, quiet_lightning, to_dict


class ClientSide:
    """A ClientApp process's view of the run ``cfg`` (module docstring).

    ``dm``: the set-up data module (``cfg.data`` with the partition and seed);
    ``trainer_factory``: ``cfg.trainer`` instantiated (a partial Trainer);
    ``client_optimizer``: the ``client.optimizer`` constructor; ``device``: the Trainer's
    root device (the data module places its tensors there, as on the server).
    """

    def __init__(self, cfg: DictConfig):
        quiet_lightning()
        target = cfg.algorithm.get("_target_", "")
        if "." in target:  # an algorithm module may register its own callback kinds
            importlib.import_module(target.rpartition(".")[0])
        self.cfg = cfg
        self.dm = build_datamodule(cfg)
        self.trainer_factory = instantiate(cfg.trainer)
        self.client_optimizer = optimizer_factory(
            from_node(ClientParams, to_dict(cfg.client), "client").optimizer)
        self.device = self.trainer_factory(max_epochs=1).strategy.root_device
        if hasattr(self.dm, "use_device"):
            self.dm.use_device(self.device)
        self.networks: dict[str, nn.Module] = {}

    def network(self, removals: list[dict], state: dict[str, Tensor]) -> nn.Module:
        """The network of ``removals`` (:func:`flip.pruning.removal_chain`: the run's model,
        ``cfg.model.net`` with the data's in_channels/num_classes, then each removal replayed
        with :func:`flip.pruning.compact`) holding ``state``. Architectures are cached.

        Raises:
            ValueError: ``state`` does not fit the rebuilt architecture (names or shapes), i.e.
                server and client disagree on the model.
        """
        key = json.dumps(removals, sort_keys=True)
        if key not in self.networks:
            net = build(self.cfg.model.net, **self.dm.model_kwargs())
            example = self.dm.example_input()
            for removal in removals:
                net, _ = compact(net, removal, example)
            self.networks[key] = net.to(self.device)
        net = self.networks[key]
        own = net.state_dict()
        bad = sorted(set(own) ^ set(state)) or [
            k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
        if bad:
            raise ValueError(f"the model sent does not fit this client's rebuilt model "
                             f"(tensors {bad[:5]}): server and client run different configs")
        net.load_state_dict(state)
        return net

    def train(self, state: dict[str, Tensor], masks: dict[str, Tensor] | None,
              job: ClientJob, removals: list[dict]) -> ClientUpdate:
        """Train ``job`` on the network of ``removals`` holding ``state`` under ``masks`` with
        :meth:`LocalExecutor.train_one` (a deep copy of the network, as ``engine=local``)."""
        masks = {k: m.to(self.device) for k, m in masks.items()} if masks is not None else None
        return LocalExecutor().train_one(self, self.network(removals, state), masks, job)


_SIDES: dict[str, ClientSide] = {}


def client_side(cfg: DictConfig) -> ClientSide:
    """The process's :class:`ClientSide` for ``cfg`` (built on first use; one run at a time:
    a new config replaces the old one, so a process never holds two data sets)."""
    key = OmegaConf.to_yaml(cfg)
    if key not in _SIDES:
        _SIDES.clear()
        _SIDES[key] = ClientSide(copy.deepcopy(cfg))
    return _SIDES[key]
