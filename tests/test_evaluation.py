"""Batched local evaluation: one pass with per-client metric states gives the numbers of K
separate evaluations (issue 10 item 9)."""

import numpy as np
import torch
import torch.nn.functional as F
from federation_helpers import tiny_federation
from torchmetrics.classification import MulticlassF1Score

from flip.algorithms import FedAvg
from flip.federation.client import ClientModule
from flip.federation.evaluation import PerClientScores, evaluate_local


def test_per_client_scores_hand_computed():
    """Client 0: 3 samples, 2 right; client 1: 2 samples over two batches, 1 right; client 2:
    no sample (scores 0)."""
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0],
                           [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 1, 0, 0, 2])
    m = PerClientScores(num_clients=3, num_classes=3)
    m.update(logits[:3], target[:3], 0)
    m.update(logits[3:], target[3:], torch.tensor([1, 1]))  # a batch with each sample's client
    out = m.compute()
    assert out["acc1"].tolist() == [float(torch.tensor(2 / 3)), 0.5, 0.0]  # float32
    # client 0: class 0 has support 2 (tp 1, fn 1), class 1 support 1 (tp 1), class 2 fp 1:
    # F1 = (2·(2/3) + 1·1) / 3
    assert abs(float(out["f1"][0]) - (2 * (2 / 3) + 1) / 3) < 1e-6
    # client 1: class 0 F1 = 1 (support 1), class 2 F1 = 0 (support 1): 0.5
    assert abs(float(out["f1"][1]) - 0.5) < 1e-6 and float(out["f1"][2]) == 0.0
    per_sample = F.cross_entropy(logits, target, reduction="none").double()
    for k, (a, b) in enumerate([(0, 3), (3, 5)]):  # the mean per-sample loss, in float64
        assert float(out["loss"][k]) == float(per_sample[a:b].sum()) / (b - a)
    assert float(out["loss"][2]) == 0.0
    # torchmetrics' own weighted F1 on client 0's samples
    f1 = MulticlassF1Score(num_classes=3, average="weighted")
    assert float(f1(logits[:3], target[:3])) == float(out["f1"][0])


def test_batched_local_evaluation_equals_one_trainer_test_per_client(tmp_path):
    """After a FedAvg round on tiny MNIST, evaluate_local (batches spanning clients) equals the
    K Trainer.test calls the round used to make (ClientModule per client, sample-weighted
    mean, mean and std): accuracy and F1 exactly, the loss (a batch mean there, per-sample
    sums here) to float rounding."""
    fed = tiny_federation(tmp_path, FedAvg(), rounds=1)
    fed.setup()
    fed.run_round(1)
    row = evaluate_local(fed, fed.net)
    per_client = []
    for k in range(fed.dm.num_clients):
        module = ClientModule(fed.net, fed.dm.num_classes, fed.client_optimizer, 0.0)
        fed.trainer_factory(max_epochs=1).test(module, dataloaders=fed.dm.client_test_dataloader(k),
                                               verbose=False)
        per_client.append(module.test_results)
    n = np.array([fed.dm.client_num_test(k) for k in range(fed.dm.num_clients)], float)
    for key in ("acc1", "f1", "loss"):
        vals = np.array([r[key] for r in per_client])
        want = float((vals * n).sum() / n.sum())
        if key == "loss":
            assert abs(row["local/loss_weighted"] - want) <= 1e-6 * want
            continue
        assert row[f"local/{key}_weighted"] == want
        assert row[f"local/{key}_mean"] == float(vals.mean())
        assert row[f"local/{key}_std"] == float(vals.std())
