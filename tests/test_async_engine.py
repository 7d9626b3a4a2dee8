"""The asynchronous engine (ASYNC.md §2): FedAsync with one client is sequential training,
FedBuff with K_b = m is FedAvg, failing clients, bad input, and a run killed with SIGKILL and
resumed that writes the same rounds.csv as an uninterrupted one."""

import copy
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from async_helpers import params_of, tiny_run
from compose import compose_cfg
from fixtures_data import write_tiny_mnist

from flip.algorithms import FedAsync, FedAvg, FedBuff
from flip.errors import ConfigError
from flip.federation.round import client_job
from flip.federation.seeding import client_seed
from flip.params import AsyncParams
from flip.train import train

ROOT = Path(__file__).resolve().parents[1]


def test_fedasync_with_one_client_and_full_weight_is_sequential_local_training(tmp_path):
    """K = 1, α s(τ) = 1 (α = 1, constant staleness): θ ← 0·θ + 1·θ_1 after every arrival,
    so three aggregations are three local updates in a row, each from the last."""
    fed = tiny_run(tmp_path, FedAsync(alpha=1.0), num_clients=1, rounds=3,
                   asynchronous=AsyncParams(max_aggregations=3, staleness="constant"))
    net = copy.deepcopy(fed.net)
    theta0 = params_of(fed)
    fed.fit()
    for cycle in (1, 2, 3):
        job = client_job(fed, cycle, 0, client_seed(fed.seed, cycle, 0), fed.client.lr_at(cycle),
                         [])
        [update] = fed.executor.train(fed, net, None, [job])
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(update.params[name])
    for name, p in net.named_parameters():
        assert torch.equal(p, dict(fed.net.named_parameters())[name]), name
    assert [r["staleness/max"] for r in fed.history] == [1, 1, 1]
    assert not all(torch.equal(theta0[n], p) for n, p in net.named_parameters())  # it trained


def test_fedbuff_with_a_full_buffer_equals_fedavg(tmp_path):
    """K_b = m = K = 4 clients with equal n_k, constant staleness, η_g = 1, clients starting
    again with the aggregated model: each buffer is one FedAvg round (server SGD lr 1) on the
    same clients with the same data order: the same numbers, bit for bit, for 3 rounds."""
    sync = tiny_run(tmp_path / "a", FedAvg(), rounds=3, participation=1.0)
    sync.fit()
    buff = tiny_run(tmp_path / "b", FedBuff(buffer_size=4), rounds=3,
                    asynchronous=AsyncParams(max_aggregations=3, staleness="constant",
                                             restart="aggregation"))
    buff.fit()
    assert len({buff.dm.client_num_train(k) for k in range(4)}) == 1  # equal n_k
    a, b = params_of(sync), params_of(buff)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert [r["train/loss"] for r in sync.history] == [r["train/loss"] for r in buff.history]
    assert [r["clients/arrived"] for r in buff.history] == [4, 4, 4]
    # and the equality is not vacuous: FedBuff's own restart rule (at arrival) differs
    other = tiny_run(tmp_path / "c", FedBuff(buffer_size=4), rounds=3,
                     asynchronous=AsyncParams(max_aggregations=3, staleness="constant"))
    other.fit()
    assert not all(torch.equal(a[n], params_of(other)[n]) for n in a)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_mnist(tmp_path_factory.mktemp("data"), per_class_train=12, per_class_test=2)


def overrides(root, *extra) -> list[str]:
    return ["debug=smoke", "data=mnist", f"data.root={root}", "data.download=false",
            "data.train_subset=1.0", "data.batch_size=8", "federation.local_steps=2",
            "devices=prfl10", *extra]


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_failing_clients_are_dropped_and_the_clock_advances(tiny, tmp_path):
    """Client 1's data cannot be read (its training raises), client 2's images are NaN (its
    update is NaN): both are dropped and counted every time they come back; the others are
    aggregated; simulated time keeps advancing."""
    cfg = compose_cfg(overrides(
        tiny, "algorithm=fedasync", "federation.rounds=8", "federation.eval_every=8",
        "data._target_=fixtures_failures.FaultyClientData", "+data.raise_clients=[1]",
        "+data.nan_clients=[2]"), tmp_path)
    summary = train(cfg)
    rows = read_rows(tmp_path / "rounds.csv")
    assert len(rows) == 8 and sum(int(r["clients/failed"]) for r in rows) >= 2
    assert summary["participation"][1] == summary["participation"][2] == 0
    assert summary["participation"][0] + summary["participation"][3] == 8
    times = [float(r["sim/time_s"]) for r in rows]
    assert times == sorted(times) and times[0] > 0
    assert summary["clients_failed"] == sum(int(r["clients/failed"]) for r in rows)


def test_bad_asynchronous_input_stops_before_training(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"fedbuff\.buffer_size=9.*1\.\.4"):
        train(compose_cfg(overrides(tiny, "algorithm=fedbuff", "fedbuff.buffer_size=9"),
                          tmp_path / "a"))
    assert not (tmp_path / "a" / "rounds.csv").exists()
    with pytest.raises(ConfigError, match=r"async\.staleness='linear'"):
        train(compose_cfg(overrides(tiny, "algorithm=fedasync", "async.staleness=linear"),
                          tmp_path / "b"))
    with pytest.raises(ConfigError, match=r"devices\.preset='phones'"):
        train(compose_cfg(overrides(tiny, "algorithm=fedasync", "devices.preset=phones"),
                          tmp_path / "c"))
    with pytest.raises(ConfigError, match=r"devices\.upload_MBps.*K=4"):
        train(compose_cfg(overrides(tiny, "algorithm=fedasync", "devices.upload_MBps=[1,2]"),
                          tmp_path / "d"))
    with pytest.raises(ConfigError, match=r"fedasync\.alpha"):
        train(compose_cfg(overrides(tiny, "algorithm=fedasync", "fedasync.alpha=0"),
                          tmp_path / "e"))


def rows_in(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def test_killed_and_resumed_asynchronous_run_writes_the_same_rounds_csv(tiny, tmp_path):
    """FedBuff on PR-FL's noisy devices: killed with SIGKILL mid-run and resumed, it ends
    with the rounds.csv (byte for byte) and model of an uninterrupted run."""
    common = overrides(tiny, "algorithm=fedbuff", "fedbuff.buffer_size=2",
                       "federation.rounds=30", "federation.eval_every=10")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(compose_cfg(common, straight))
    # the same torch thread count as the uninterrupted in-process run: float sums over another
    # number of threads round differently (CI's 2 threads against 1 moved train/loss by 1e-8)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = [sys.executable, "-m", "flip", *common]
    proc = subprocess.Popen([*cmd, f"hydra.run.dir={killed}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while rows_in(killed / "rounds.csv") < 12 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 12 <= rows_in(killed / "rounds.csv") < 30
    out = subprocess.run([*cmd, f"resume={killed}", f"hydra.run.dir={tmp_path / 'r'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (killed / "rounds.csv").read_bytes() == (straight / "rounds.csv").read_bytes()
    a, b = torch.load(killed / "model.pt"), torch.load(straight / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_rows(straight / "rounds.csv")
    assert len({r["staleness/max"] for r in rows}) > 1  # asynchronous for real: stale updates
