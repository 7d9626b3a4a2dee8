"""The client LightningModule: masks hold through training, metrics are right (§1, §2.3)."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from flip.federation import ClientModule
from flip.models import TwoCNN


def _trainer(epochs):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_masked_entries_stay_zero_and_adam_state_stays_clean():
    torch.manual_seed(0)
    net = TwoCNN(1, 10, 4)
    masks = {n: torch.rand_like(p) > 0.5 for n, p in net.named_parameters()}
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    module = ClientModule(net, 10, lambda p, lr: torch.optim.Adam(p, lr=lr), 1e-2, masks)
    _trainer(3).fit(module, DataLoader(TensorDataset(x, y), batch_size=16))
    assert len(module.epoch_losses) == 3
    opt = module.trainer.optimizers[0]
    for n, p in net.named_parameters():
        assert not p[~masks[n]].any(), n  # pruned: exactly zero
        assert not torch.equal(p[masks[n]], before[n][masks[n]]), n  # kept: trained
        assert not opt.state[p]["exp_avg"][~masks[n]].any(), n  # no momentum on pruned entries


def test_test_metrics_match_hand_count():
    """A fixed linear 'network' whose predictions are known: 3 of 4 right."""
    net = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [2.0, 0.1]])
    y = torch.tensor([0, 1, 2, 1])  # the last is predicted 0
    module = ClientModule(net, 3, torch.optim.SGD, 0.0)
    _trainer(1).test(module, DataLoader(TensorDataset(x, y), batch_size=2), verbose=False)
    res = module.test_results
    assert res["acc1"] == 0.75
    assert res["acc5"] == 1.0  # top-min(5, 3) = top-3 of 3 classes
    # weighted recall = accuracy; loss is the mean cross-entropy over the 4 samples
    assert abs(res["recall"] - 0.75) < 1e-6
    expected = torch.nn.functional.cross_entropy(net(x), y).item()
    assert abs(res["loss"] - expected) < 1e-6
