"""The client: a LightningModule owning loss, metrics and client optimizer (ALGORITHMS.md §1)."""

from collections.abc import Callable, Mapping

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from flip.pruning import apply_masks


def classification_metrics(num_classes: int) -> MetricCollection:
    """top-1 and top-5 accuracy (micro), F1, precision and recall (``weighted`` average).

    Keys: ``acc1``, ``acc5``, ``f1``, ``precision``, ``recall``; each a fraction in [0, 1].
    top-5 becomes top-min(5, num_classes). F1, precision and recall share one state (the
    same per-class stat scores).
    """
    kw = {"num_classes": num_classes}
    return MetricCollection(
        {
            "acc1": MulticlassAccuracy(top_k=1, average="micro", **kw),
            "acc5": MulticlassAccuracy(top_k=min(5, num_classes), average="micro", **kw),
            "f1": MulticlassF1Score(average="weighted", **kw),
            "precision": MulticlassPrecision(average="weighted", **kw),
            "recall": MulticlassRecall(average="weighted", **kw),
        },
        # Explicit groups: automatic detection merges metrics whose states are equal after
        # the first batch, e.g. top-1 and top-5 accuracy when every first prediction is right.
        compute_groups=[["acc1"], ["acc5"], ["f1", "precision", "recall"]],
    )


class ClientModule(L.LightningModule):
    """One client's local training and any evaluation of a model (ALGORITHMS.md §1, step 2).

    ``net``: the client's copy of the global network, logits ``(B, num_classes)``.
    ``optimizer``: a partial ``torch.optim`` constructor taking ``(params, lr=...)`` (Hydra
    ``_partial_``). ``lr``: this round's client learning rate. ``masks``: ``{param name: bool
    tensor}``; masked gradients are zeroed before and masked entries re-zeroed after every
    optimizer step, so they stay exactly 0 (§2.3). Logs ``train/loss`` once per epoch, the
    mean over the epoch's samples (also kept in ``epoch_losses``): each step adds its loss ×
    batch size to a float64 sum on the device, read once at the epoch's end, so a step does no
    host synchronisation. In ``test``: ``loss`` plus :func:`classification_metrics`.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr: float,
        masks: Mapping[str, Tensor] | None = None,
    ):
        super().__init__()
        self.net = net
        self.optimizer_fn = optimizer
        self.lr = lr
        self.masks = dict(masks) if masks else None
        self.loss_fn = nn.CrossEntropyLoss()
        self.num_classes = num_classes
        self.metrics: MetricCollection | None = None  # built by the first test
        self.epoch_losses: list[float] = []
        self._reset_loss()

    def _reset_loss(self) -> None:
        self._loss_sum: Tensor | float = 0.0  # a float64 tensor on the device once a step ran
        self._count = 0

    def _add_loss(self, loss: Tensor, n: int) -> None:
        """Σ loss·n in float64 (float32 where the device has no float64: MPS), on the device."""
        dtype = torch.float32 if loss.device.type == "mps" else torch.float64
        self._loss_sum = self._loss_sum + loss.detach().to(dtype) * n
        self._count += n

    def _mean_loss(self) -> float:
        return float(self._loss_sum) / max(self._count, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        self._add_loss(loss, len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        mean = self._mean_loss()
        self.epoch_losses.append(mean)
        self.log("train/loss", mean)  # read by EarlyStopping (it runs after this hook)
        self._reset_loss()

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.masks:
            for n, p in self.net.named_parameters():
                m = self.masks.get(n)
                if m is not None and p.grad is not None:
                    p.grad.mul_(m.to(device=p.device, dtype=p.dtype))

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        apply_masks(self.net, self.masks)

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self._add_loss(self.loss_fn(logits, y), len(y))
        self.metrics.update(logits, y)

    def on_test_epoch_start(self) -> None:
        if self.metrics is None:
            self.metrics = classification_metrics(self.num_classes).to(self.device)
        self.metrics.reset()
        self._reset_loss()

    def on_test_epoch_end(self) -> None:
        out = {k: float(v) for k, v in self.metrics.compute().items()}
        out["loss"] = self._mean_loss()
        self.test_results = out
        self._reset_loss()

    def configure_optimizers(self):
        return self.optimizer_fn(self.net.parameters(), lr=self.lr)
