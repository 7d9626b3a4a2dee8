"""The executor seam: where clients are trained and evaluated (ENGINES.md §1, §2).

Algorithms and the round decide *what* clients do (ALGORITHMS.md, ASYNC.md); an executor
decides *where*. One call trains a whole cohort (a round's clients, AutoFLIP's explorers, a
set-up phase) and returns, per job and in job order, the client's :class:`ClientUpdate` or the
exception its training raised, so the caller applies its own drop/retry rules. Client
callbacks cross the seam as :class:`~flip.federation.callbacks.CallbackSpec` (kind + JSON
arguments) so an executor in another process can rebuild them.

:class:`LocalExecutor` (``engine=local``, the default) trains each client as a
:class:`~flip.federation.client.ClientModule` through the run's one Lightning Trainer
configuration, one after another, in this process.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from flip.federation.callbacks import CallbackSpec, build_callback
from flip.federation.client import ClientModule
from flip.federation.evaluation import evaluate


@dataclass
class ClientUpdate:
    """What one client's local training returns to the server (ENGINES.md §1).

    ``params``: θ_k by parameter name (detached, the shapes of the network it trained);
    ``buffers``: batch-norm statistics etc.; ``num_samples``: n_k, training samples it holds
    (the FedAvg weight); ``samples_processed``: samples seen in all local epochs (training
    FLOPs; with ``ClientJob.batches``, the samples of those batches × epochs);
    ``epoch_losses``: epoch-mean training loss per local epoch; ``extras``: what the client
    callbacks report (``client_extras()``); ``extra_bytes_up``: bytes uploaded besides
    θ_k (e.g. PruneFL's importance).
    """

    client: int
    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    num_samples: int
    samples_processed: int
    epoch_losses: list[float]
    extras: dict = field(default_factory=dict)
    extra_bytes_up: int = 0


@dataclass(frozen=True)
class ClientJob:
    """One client's local training in a cohort (ENGINES.md §1).

    ``client``: its index; ``seed``: its data order and augmentations
    (:mod:`flip.federation.seeding`); ``epochs``: local epochs at most (callbacks may stop it
    earlier); ``lr``: its client learning rate; ``callbacks``: specs of its Lightning
    callbacks; ``batches``: ``None`` trains on the client's whole training set, reshuffled each
    epoch; an integer N trains every epoch on the same first N batches of its ``seed`` order
    (PruneFL's initial pruning, ALGORITHMS.md §3.1 step 1; with one epoch: N local steps on a
    fresh shuffle, ``federation.local_steps``, ASYNC.md §2).
    """

    client: int
    seed: int
    epochs: int
    lr: float
    callbacks: tuple[CallbackSpec, ...] = ()
    batches: int | None = None


EVAL_SPLITS = ("val", "global", "local")
"""What :meth:`Executor.evaluate` can evaluate: the validation split (``val/*``), the
official test split (``global/*``) and the clients' local test sets (``local/*``)."""


class Executor:
    """Where clients train. Subclasses implement :meth:`train` and :meth:`evaluate`."""

    secure_aggregation = False
    """Whether it offers ``secure_mean(fed, net, jobs, clip, clipping_range)``, the mean of
    AutoFLIP's explorers' reports by secure aggregation (``engine=flower``'s SecAgg+,
    :mod:`flip.engines.flower.secure`); ``exploration.secure_aggregation`` is refused
    elsewhere."""

    def __init__(self, name: str = "executor"):
        self.name = name  # the `engine` config option that built it

    def delegate(self, cfg) -> dict | None:
        """Run the whole experiment ``cfg`` elsewhere and return its summary, or ``None`` to
        run it in this process (the default). ``engine=flower`` without a Flower ``Grid``
        starts a Flower runtime whose ServerApp runs :func:`flip.train.train` again with a
        Grid (ENGINES.md §3); :func:`flip.train.train` calls this after validating the config
        and before reading any data."""
        return None

    def check(self, specs: Sequence[CallbackSpec]) -> None:
        """Refuse callback kinds this executor cannot rebuild (``ConfigError``), before round 1."""
        for spec in specs:
            build_callback(spec)

    def train(
        self, fed, net: nn.Module, masks: dict[str, Tensor] | None,
        jobs: Sequence[ClientJob],
    ) -> list[ClientUpdate | BaseException]:
        """Train a copy of ``net`` under ``masks`` (bool per parameter name, or ``None``) for
        each job; returns one result per job, in job order: its update or the ``Exception`` its
        training raised (never raised here)."""
        raise NotImplementedError

    def evaluate(
        self, fed, net: nn.Module, splits: Sequence[str] = EVAL_SPLITS
    ) -> dict[str, float]:
        """``val/*`` metrics of ``net`` on the validation split (when the data hold one),
        ``global/*`` on the official test split and ``local/*`` over the clients' local test
        sets (:mod:`flip.federation.evaluation`); ``splits``: which of :data:`EVAL_SPLITS`
        (PR-FL's recovery evaluates its clients' sub-models on ``val`` only, ASYNC.md §3.6)."""
        raise NotImplementedError


class LocalExecutor(Executor):
    """``engine=local`` (ENGINES.md §2): each job trains a deep copy of the network as a
    :class:`ClientModule` (loss, metrics, client optimizer, mask enforcement) through
    ``fed.trainer_factory`` (the shared Trainer configuration), sequentially, in job order.
    Evaluation: one Trainer test pass over the global test split and one over the union of the
    clients' local test sets with per-client metric states."""

    def __init__(self, name: str = "local"):
        super().__init__(name)

    def train(self, fed, net, masks, jobs):
        self.check([spec for job in jobs for spec in job.callbacks])
        out: list[ClientUpdate | BaseException] = []
        for job in jobs:
            try:
                out.append(self.train_one(fed, net, masks, job))
            except Exception as err:  # a client crash is the caller's to judge
                out.append(err)
        return out

    def train_one(self, fed, net: nn.Module, masks, job: ClientJob) -> ClientUpdate:
        """One client: a fresh client optimizer at ``job.lr`` on a copy of ``net``; its data
        order (and any augmentation) drawn from ``job.seed``."""
        dm = fed.dm
        local = copy.deepcopy(net).train()
        module = ClientModule(local, dm.num_classes, fed.client_optimizer, job.lr, masks)
        loader = dm.client_train_dataloader(job.client, job.seed)
        if job.batches is not None:  # the same first N batches every epoch
            batches = list(islice(loader, job.batches))
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            loader = DataLoader(TensorDataset(x, y), batch_size=len(batches[0][1]), shuffle=False)
        callbacks = [build_callback(spec) for spec in job.callbacks]
        torch.manual_seed(job.seed)
        trainer = fed.trainer_factory(max_epochs=job.epochs, callbacks=callbacks)
        trainer.fit(module, train_dataloaders=loader)
        extras = {}
        for cb in callbacks:
            if hasattr(cb, "client_extras"):
                extras.update(cb.client_extras(module))
        n = dm.client_num_train(job.client)
        per_epoch = n if job.batches is None else len(y)
        return ClientUpdate(
            client=job.client,
            params={k: v.detach() for k, v in local.named_parameters()},
            buffers={k: v.detach() for k, v in local.named_buffers()},
            num_samples=n,
            samples_processed=per_epoch * len(module.epoch_losses),
            epoch_losses=module.epoch_losses,
            extras=extras,
        )

    def evaluate(self, fed, net, splits=EVAL_SPLITS):
        return evaluate(fed, net, splits)
