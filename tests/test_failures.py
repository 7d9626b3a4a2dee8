"""Failing clients and diverging training (flip/federation/failures.py; issue 6).

Clients fail for real: ``FaultyClientData`` makes a client's images NaN (its training computes
NaN weights) or makes reading its data raise.
"""

import copy
import csv
import logging
from functools import partial

import lightning as L
import pytest
import torch
from compose import compose_cfg
from fixtures_data import write_tiny_mnist
from fixtures_failures import FaultyClientData

from flip.algorithms import FedAvg
from flip.errors import TrainingStopped
from flip.federation import ClientJob, Federation
from flip.federation.failures import first_nonfinite
from flip.federation.seeding import client_seed, sample_clients
from flip.models import TwoCNN
from flip.params import ClientParams, FederationParams
from flip.train import train

SEED, LR = 7, 1e-3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("data"), per_class_train=12, per_class_test=2)


def make_fed(root, participation=1.0, server_optimizer=None, **kw):
    data_kw = {k: kw.pop(k) for k in ("nan_clients", "raise_clients") if k in kw}
    dm = FaultyClientData(
        "mnist", root=str(root), download=False, num_clients=4, partition="iid",
        batch_size=16, seed=0, **data_kw,
    )
    dm.setup()
    torch.manual_seed(0)
    trainer = partial(
        L.Trainer, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    fed_kw = {k: kw.pop(k) for k in ("min_clients", "max_round_retries", "max_loss") if k in kw}
    fed = Federation(
        TwoCNN(1, 10, 4), dm, FedAvg(), trainer=trainer,
        params=FederationParams(
            4, participation, rounds=3, local_epochs=1,
            server_optimizer=server_optimizer or partial(torch.optim.SGD, lr=1.0), **fed_kw),
        client=ClientParams(LR, optimizer=torch.optim.Adam),
        seed=SEED, progress=False, **kw,
    )
    fed.setup()
    return fed


def test_nan_client_is_dropped_counted_and_the_others_averaged(tiny, caplog):
    fed = make_fed(tiny, nan_clients=[1])
    theta0 = copy.deepcopy(fed.net)
    def train(k):
        job = ClientJob(k, client_seed(SEED, 1, k), 1, LR)
        [update] = fed.executor.train(fed, theta0, None, [job])
        return update

    nan = train(1)
    assert first_nonfinite(nan.params) is not None  # its training really produced NaN
    ok = [train(k) for k in (0, 2, 3)]
    total = sum(u.num_samples for u in ok)
    with caplog.at_level(logging.WARNING, logger="flip.federation.failures"):
        row = fed.run_round(1)
    assert (row["clients/sampled"], row["clients/failed"], row["round/retries"]) == (4, 1, 0)
    assert "client 1 dropped from the aggregate: its update has NaN/Inf values" in caplog.text
    # FedAvg (server SGD, lr 1) of the three other clients, weighted by their samples
    for name, p in fed.net.named_parameters():
        expected = sum(u.params[name] * (u.num_samples / total) for u in ok)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
    # bytes: θ went to all 4 clients and 4 updates came back, the NaN one included (4 B each)
    numel = sum(p.numel() for p in fed.net.parameters())
    assert row["cost/bytes_down_round"] == row["cost/bytes_up_round"] == 4 * 4 * numel


def test_raising_client_is_dropped(tiny, caplog):
    fed = make_fed(tiny, raise_clients=[2])
    with caplog.at_level(logging.WARNING, logger="flip.federation.failures"):
        row = fed.run_round(1)
    assert row["clients/failed"] == 1 and row["clients/sampled"] == 4
    assert "client 2 dropped from the aggregate: training raised OSError: client device lost" in (
        caplog.text
    )
    assert first_nonfinite(dict(fed.net.named_parameters())) is None
    numel = sum(p.numel() for p in fed.net.parameters())  # no update came back from client 2
    assert (row["cost/bytes_down_round"], row["cost/bytes_up_round"]) == (
        4 * 4 * numel,
        3 * 4 * numel,
    )


def test_too_few_clients_resamples_the_round_deterministically(tiny):
    first = sample_clients(SEED, 1, 4, 0.5, 0)
    attempts = [sample_clients(SEED, 1, 4, 0.5, a) for a in range(4)]
    retry = next(a for a, s in enumerate(attempts) if set(s) - set(first))
    assert retry >= 1  # attempt 0 fails by construction: both its clients return NaN
    fed = make_fed(tiny, participation=0.5, nan_clients=first, max_round_retries=3)
    row = fed.run_round(1)
    failed = sum(len(set(s) & set(first)) for s in attempts[: retry + 1])
    assert row["round/retries"] == retry and row["clients/failed"] == failed
    assert row["clients/sampled"] == 2
    assert first_nonfinite(dict(fed.net.named_parameters())) is None


def test_no_client_left_stops_the_run_and_keeps_the_model(tiny):
    fed = make_fed(tiny, nan_clients=[0, 1, 2, 3], max_round_retries=1)
    before = {k: v.clone() for k, v in fed.net.state_dict().items()}
    with pytest.raises(TrainingStopped, match=r"round 1: fewer than federation\.min_clients=1"):
        fed.run_round(1)
    assert all(torch.equal(before[k], v) for k, v in fed.net.state_dict().items())


def test_diverging_loss_stops_naming_round_and_client(tiny):
    fed = make_fed(tiny, max_loss=1e-3)  # every real first-epoch loss is above it
    with pytest.raises(TrainingStopped, match=r"round 1: training diverged on client 0: .* "
                       r"local epoch 1 is [0-9.]+ \(federation\.max_loss=0\.001\)"):
        fed.run_round(1)


def test_non_finite_server_step_is_undone_and_stops(tiny):
    """A server Adam with eps = 0 divides 0 by 0 wherever the pseudo-gradient is exactly zero
    (dead ReLU units give such entries): the step makes θ NaN and must be undone."""
    fed = make_fed(tiny, server_optimizer=partial(torch.optim.Adam, lr=1e-3, eps=0.0))
    net_before = {k: v.clone() for k, v in fed.net.state_dict().items()}
    with pytest.raises(TrainingStopped, match="round 1: the server step made the global model"):
        fed.run_round(1)
    assert all(torch.equal(net_before[k], v) for k, v in fed.net.state_dict().items())
    assert len(fed.server_opt.state) == 0  # Adam's moments back to before its first step


def test_failed_clients_are_counted_in_rounds_csv(tiny, tmp_path):
    cfg = compose_cfg(
        [
            "debug=smoke", "data=mnist", f"data.root={tiny}", "data.download=false",
            "data.train_subset=1.0", "data.batch_size=16", "partition=iid",
            "data._target_=fixtures_failures.FaultyClientData", "+data.nan_clients=[1]",
            "federation.rounds=3",
        ],
        tmp_path,
    )
    summary = train(cfg)
    with (tmp_path / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    expected = [int(1 in sample_clients(cfg.seed, r, 4, 0.5)) for r in (1, 2, 3)]
    assert [int(r["clients/failed"]) for r in rows] == expected and sum(expected) >= 1
    assert summary["clients_failed"] == sum(expected)
    model = torch.load(tmp_path / "model.pt")
    assert all(torch.isfinite(v).all() for v in model.values() if v.is_floating_point())
