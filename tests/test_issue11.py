"""Results a reviewer can trust (issue 11): PruneFL's importance upload policy, the validation
split and picks on it, densities instead of Tp, buffers through the server optimizer, a GPU
trainer refused on a machine without one."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from federation_helpers import tiny_federation
from fixtures_data import write_tiny_mnist
from torch import nn

from flip.algorithms import AutoFLIP, FedAvg, PruneFL
from flip.data import FederatedDataModule
from flip.errors import ConfigError
from flip.federation.server import Federation


# ------------------------------------------------------------------ PruneFL's upload
def run_prunefl(tmp_path, policy: str, rounds: int = 3) -> tuple[PruneFL, list[dict]]:
    algo = PruneFL(interval=2, initial={"enabled": False}, importance_upload=policy)
    fed = tiny_federation(tmp_path, algo, rounds=rounds)
    fed.setup()
    rows = [fed.run_round(r) for r in range(1, rounds + 1)]
    return algo, rows


def test_prunefl_sends_importance_only_in_reconfiguration_rounds(tmp_path):
    """PruneFL's own policy (ALGORITHMS.md §3.1 step 2): rounds 1 and 3 upload no importance,
    round 2 (a reconfiguration) one importance tensor per sampled client; every_round uploads
    it in each round."""
    algo, rows = run_prunefl(tmp_path / "a", "reconfiguration")
    numel = sum(z.numel() for z in algo.importance.values())
    extra = [r["cost/bytes_extra_up_round"] for r in rows]
    assert extra == [0, 4 * numel * rows[1]["clients/sampled"], 0]
    assert algo.info(None) == {"importance_upload": "reconfiguration",
                               "bytes_importance": sum(extra)}
    assert set(algo.pending) and all(k not in algo.pending for k in [])  # round 3 clients hold z
    every, rows_every = run_prunefl(tmp_path / "b", "every_round")
    assert [r["cost/bytes_extra_up_round"] for r in rows_every] == [
        4 * numel * r["clients/sampled"] for r in rows_every]
    assert not every.pending
    assert rows[0]["cost/bytes_up_round"] < rows_every[0]["cost/bytes_up_round"]


def test_prunefl_reconfiguration_uses_the_importance_clients_held(tmp_path):
    """Under the reconfiguration policy a client sampled in round 1 and in the reconfiguration
    round 2 sends both rounds' importance; one sampled in round 1 only keeps holding it."""
    algo = PruneFL(interval=2, initial={"enabled": False})
    fed = tiny_federation(tmp_path, algo, rounds=2)
    fed.setup()
    seen = {}
    original = algo.on_client_update

    def spy(fed_, r, update):
        seen.setdefault(r, {})[update.client] = {
            n: update.num_samples * g.clone() ** 2 for n, g in update.extras["grad_sum"].items()}
        return original(fed_, r, update)

    algo.on_client_update = spy
    algo.on_round_end = lambda fed_, r: None  # keep z to look at it
    fed.run_round(1)
    fed.run_round(2)
    sent = [k for k in seen[2]]
    expected = {n: torch.zeros_like(z) for n, z in algo.importance.items()}
    for r in (1, 2):
        for k, contribution in seen[r].items():
            if k in sent:
                for n, c in contribution.items():
                    expected[n] += c
    for n, z in algo.importance.items():
        torch.testing.assert_close(z, expected[n])
    assert set(algo.pending) == set(seen[1]) - set(sent)


def test_bad_upload_policy_is_refused():
    with pytest.raises(ConfigError, match="prunefl.importance_upload"):
        PruneFL(importance_upload="sometimes")


# ------------------------------------------------------------------ validation split
def test_validation_is_held_out_of_each_clients_training_data(tmp_path):
    root = write_tiny_mnist(tmp_path / "data", per_class_train=20, per_class_test=4)
    kw = dict(root=str(root), download=False, num_clients=4, partition="iid", seed=3)
    plain = FederatedDataModule("mnist", **kw)
    held = FederatedDataModule("mnist", val_fraction=0.25, **kw)
    for dm in (plain, held):
        dm.setup()
    for a, b in zip(plain.partition_indices, held.partition_indices, strict=True):
        assert np.array_equal(a["test"], b["test"])  # the local test sets do not change
        assert np.array_equal(np.sort(np.concatenate([b["train"], b["val"]])), a["train"])
        assert len(b["val"]) == round(0.25 * len(a["train"])) and not len(a["val"])
    assert held.has_validation and not plain.has_validation
    x, y = next(iter(held.val_dataloader()))
    assert len(y) == sum(held.client_num_val(k) for k in range(4))
    with pytest.raises(ConfigError, match="data.val_fraction"):
        FederatedDataModule("mnist", val_fraction=1.0, **kw)


def test_best_is_picked_on_validation_and_test_best_is_labelled_optimistic():
    """Round 2 has the best validation accuracy, round 3 the best test accuracy: "best"
    reports the test accuracy of round 2."""
    fed = Federation.__new__(Federation)
    fed.algorithm, fed.ledger = FedAvg(), type("L", (), {"summary": lambda self: {}})()
    fed.sim_time, fed.participation = 0.0, []  # the simulated clock (ASYNC.md §1)
    fed.history = [
        {"round": 1, "val/acc1": 0.50, "global/acc1": 0.40, "global/acc5": 0.8},
        {"round": 2, "val/acc1": 0.70, "global/acc1": 0.55, "global/acc5": 0.9},
        {"round": 3, "val/acc1": 0.60, "global/acc1": 0.65, "global/acc5": 0.95},
    ]
    s = fed.summary()
    assert s["best"] == {"picked_on": "val/acc1", "round": 2, "val/acc1": 0.70,
                         "global/acc1": 0.55, "global/acc5": 0.9}
    assert s["best_test_optimistic"] == {"global/acc1": 0.65, "global/acc5": 0.95}


def test_rounds_log_validation_metrics(tmp_path):
    root = write_tiny_mnist(tmp_path / "data", per_class_train=20, per_class_test=4)
    fed = tiny_federation(tmp_path, FedAvg(), rounds=1)
    fed.dm = FederatedDataModule("mnist", root=str(root), download=False, num_clients=4,
                                 partition="iid", batch_size=16, seed=0, val_fraction=0.2)
    fed.dm.setup()
    fed.setup()
    row = fed.run_round(1)
    fed.history.append(row)
    assert 0 <= row["val/acc1"] <= 1 and row["val/loss"] > 0
    assert fed.summary()["best"]["round"] == 1


# ------------------------------------------------------------------ densities, not Tp
def test_target_density_is_met_and_reported(tmp_path):
    algo = AutoFLIP(pruning={"target_density": 0.5},
                    exploration={"epochs": 1, "patience": 1})
    fed = tiny_federation(tmp_path, algo, rounds=1, hidden=8)
    fed.setup()
    info = algo.info(fed)
    assert abs(info["density_hybrid"] - 0.5) <= 0.005
    assert abs(fed.ledger.counts["density"] - info["density_hybrid"]) < 1e-12
    assert 0 < info["threshold"] < 1 and info["target_density"] == 0.5
    assert info["density_unstructured"] >= info["density_hybrid"]
    assert 0 <= info["units_removed"] <= info["units_total"]


def test_threshold_is_not_the_sparsity(tmp_path):
    """At Tp = 0.3 with whole units removed, the hybrid mask keeps less than 1 − Tp."""
    algo = AutoFLIP(pruning={"threshold": 0.3}, exploration={"epochs": 1, "patience": 1})
    fed = tiny_federation(tmp_path, algo, rounds=1, hidden=8)
    fed.setup()
    info = algo.info(fed)
    assert info["threshold"] == 0.3
    if info["units_removed"]:
        assert info["density_hybrid"] < info["density_unstructured"]
    assert info["density_unstructured"] <= 0.7 + 0.3 * 0.05  # non-prunable tensors are kept


# ------------------------------------------------------------------ buffers
class BNNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.mark.parametrize("buffers", ["average", "server_optimizer"])
def test_buffers_average_or_go_through_the_server_ema(tmp_path, buffers):
    fed = tiny_federation(tmp_path, FedAvg(), rounds=1, momentum=0.9)
    fed.net = BNNet()
    fed.params = type(fed.params)(**{**fed.params.__dict__, "buffers": buffers})
    fed.setup()
    before = fed.net.bn.running_mean.clone()
    seen = []
    original = fed.executor.train

    def spy(*args):
        out = original(*args)
        seen.extend(out)
        return out

    fed.executor.train = spy
    fed.run_round(1)
    n = torch.tensor([u.num_samples for u in seen], dtype=torch.float32)
    avg = sum(w * u.buffers["bn.running_mean"] for w, u in zip(n / n.sum(), seen, strict=True))
    got = fed.net.bn.running_mean
    if buffers == "average":
        torch.testing.assert_close(got, avg)
    else:  # the first EMA step moves (1 − β) = 10% of the way
        torch.testing.assert_close(got, before + 0.1 * (avg - before))
    assert int(fed.net.bn.num_batches_tracked) == max(
        int(u.buffers["bn.num_batches_tracked"]) for u in seen)


# ------------------------------------------------------------------ GPU trainer without GPU
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_gpu_stops_before_reading_data(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flip", "trainer=gpu", "logger=none", "data.root=/nonexistent",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode != 0
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("flip:")]
    assert len(lines) == 1 and "trainer.accelerator" in lines[0] and "trainer=cpu" in lines[0]
    assert not (tmp_path / "partition.json").exists()
    assert not json.dumps(out.stderr).count("Traceback")
