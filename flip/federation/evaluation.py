"""Evaluation of the global model: the official test split, and every client's local test set
in one batched pass with per-client metric states (ENGINES.md §1; issue 10 item 9).

``global/*``: loss and :func:`~flip.federation.client.classification_metrics` of the network on
the data set's official test split. ``local/*``: the same network on each client's local test
set (DATA.md "Partitions"), summarised across clients: sample-weighted mean, plain mean and std
of top-1 accuracy and weighted F1, and the sample-weighted mean loss.

The local pass is one Lightning ``Trainer.test`` over the union of the local test sets packed
into full batches that may span clients (``dm.local_test_dataloader()``, with each sample's
client), so K = 1000 clients of six test images cost about what 20 clients of 300 do;
:class:`PerClientScores` keeps per-client states (stat scores per class, loss sum, count),
adds each sample to its client's, and reduces them with torchmetrics' own formulas. Accuracy
and F1 equal those of K separate evaluations, the loss up to float rounding (tested), at the
cost of one pass over the data instead of K + 1 Trainer runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.functional.classification.f_beta import _fbeta_reduce
from torchmetrics.utilities.compute import _safe_divide

from flip.federation.client import ClientModule


class PerClientScores(Metric):
    """Top-1 accuracy, weighted F1 and mean cross-entropy of K clients, each from its own
    states: ``tp``, ``fp``, ``fn`` (K, C) int64 per class (top-1 predictions), ``loss_sum``
    (K,) float64 (Σ of the per-sample cross-entropies),
    ``count`` (K,) int64.

    ``update(logits (B, C), target (B,), client)`` adds a batch: ``client`` is the client of
    every sample (an int) or of each sample (int64 ``(B,)``). ``compute()`` returns
    ``{"acc1": (K,), "f1": (K,), "loss": (K,)}``: accuracy tp/n (float32, as torchmetrics'
    micro accuracy), F1 weighted by class support (torchmetrics' ``_fbeta_reduce`` on each
    client's row), mean cross-entropy loss_sum / max(n, 1) (float64); a client without test
    samples scores 0.
    """

    full_state_update = False

    def __init__(self, num_clients: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        shape = (num_clients, num_classes)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(shape, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("loss_sum", torch.zeros(num_clients, dtype=torch.float64), "sum")
        self.add_state("count", torch.zeros(num_clients, dtype=torch.long), "sum")

    def update(self, logits: Tensor, target: Tensor, client: int | Tensor) -> None:
        owner = torch.as_tensor(client, dtype=torch.long, device=self.tp.device)
        owner = owner.expand(len(target)) if owner.dim() == 0 else owner
        correct = (logits.argmax(1) == target).unsqueeze(1)
        truth = F.one_hot(target, self.num_classes)
        pred = F.one_hot(logits.argmax(1), self.num_classes)
        self.tp.index_add_(0, owner, truth * correct)
        self.fn.index_add_(0, owner, truth * ~correct)
        self.fp.index_add_(0, owner, pred * ~correct)
        loss = F.cross_entropy(logits, target, reduction="none").double()
        self.loss_sum.index_add_(0, owner, loss)
        self.count.index_add_(0, owner, torch.ones_like(owner))

    def compute(self) -> dict[str, Tensor]:
        tp, fp, fn = self.tp, self.fp, self.fn
        rows = [
            _fbeta_reduce(tp[k], fp[k], torch.zeros_like(tp[k]), fn[k], 1.0, average="weighted")
            for k in range(len(tp))
        ]
        return {
            "acc1": _safe_divide(tp.sum(1), (tp + fn).sum(1)),
            "f1": torch.stack(rows) if rows else tp.new_zeros(0, dtype=torch.float32),
            "loss": self.loss_sum / self.count.clamp(min=1),
        }


class _LocalTests:
    """``dm.local_test_dataloader()`` with each batch's clients: ``(x, y, client (B,))``."""

    def __init__(self, dm):
        self.loader, self.owners = dm.local_test_dataloader()

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        start = 0
        for x, y in self.loader:
            yield x, y, torch.from_numpy(self.owners[start:start + len(y)])
            start += len(y)


class LocalTestModule(L.LightningModule):
    """One ``Trainer.test`` pass of ``net`` over :class:`_LocalTests`, feeding
    :class:`PerClientScores`; results in ``scores`` (lists of K Python floats)."""

    def __init__(self, net: nn.Module, num_clients: int, num_classes: int):
        super().__init__()
        self.net = net
        self.metric = PerClientScores(num_clients, num_classes)

    def test_step(self, batch, batch_idx):
        x, y, client = batch
        self.metric.update(self.net(x), y, client)

    def on_test_epoch_end(self) -> None:
        self.scores = {k: v.tolist() for k, v in self.metric.compute().items()}


def evaluate_global(fed, net: nn.Module, loader=None) -> dict[str, float]:
    """Loss and :func:`~flip.federation.client.classification_metrics` of ``net`` on
    ``loader`` (default: the official test split, ``fed.dm.test_dataloader()``), through the
    run's Trainer config."""
    module = ClientModule(net, fed.dm.num_classes, fed.client_optimizer, 0.0)
    loader = fed.dm.test_dataloader() if loader is None else loader
    fed.trainer_factory(max_epochs=1).test(module, dataloaders=loader, verbose=False)
    return module.test_results


VAL_METRICS = ("loss", "acc1", "acc5", "f1")
"""The ``val/*`` columns: what "best" and "to target" are picked on (ALGORITHMS.md §5)."""


def evaluate_validation(fed, net: nn.Module) -> dict[str, float]:
    """``val/{loss,acc1,acc5,f1}`` of ``net`` on the validation split (the union of the
    clients' validation sets, ``fed.dm.val_dataloader()``); empty when the data hold none."""
    if not getattr(fed.dm, "has_validation", False):
        return {}
    metrics = evaluate_global(fed, net, fed.dm.val_dataloader())
    return {f"val/{k}": metrics[k] for k in VAL_METRICS}


def evaluate_local(fed, net: nn.Module) -> dict[str, float]:
    """``local/{acc1,f1}_{weighted,mean,std}`` and ``local/loss_weighted`` of ``net`` over the
    K clients' local test sets, in one pass (module docstring); weights are the clients'
    local test sizes."""
    dm = fed.dm
    module = LocalTestModule(net, dm.num_clients, dm.num_classes)
    fed.trainer_factory(max_epochs=1).test(module, dataloaders=_LocalTests(dm), verbose=False)
    n = np.array([dm.client_num_test(k) for k in range(dm.num_clients)], float)
    row = {}
    for key in ("acc1", "f1", "loss"):
        vals = np.array(module.scores[key])
        row[f"local/{key}_weighted"] = float((vals * n).sum() / n.sum())
        if key != "loss":
            row[f"local/{key}_mean"] = float(vals.mean())
            row[f"local/{key}_std"] = float(vals.std())
    return row


def evaluate(fed, net: nn.Module, splits=("val", "global", "local")) -> dict[str, float]:
    """The evaluation row of a round over ``splits``: ``val/*`` (:func:`evaluate_validation`,
    when the data hold a validation split), ``global/*`` (:func:`evaluate_global`, prefixed)
    and ``local/*`` (:func:`evaluate_local`); what :meth:`Executor.evaluate
    <flip.federation.executor.Executor.evaluate>` returns on the engines that evaluate where
    the server runs (``local``, ``flower``)."""
    row = evaluate_validation(fed, net) if "val" in splits else {}
    if "global" in splits:
        row.update({f"global/{k}": v for k, v in evaluate_global(fed, net).items()})
    if "local" in splits:
        row.update(evaluate_local(fed, net))
    return row
