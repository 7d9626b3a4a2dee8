"""AutoFLIP with structured pruning on real Fashion-MNIST trains the compact network end to
end (issue 3): its costs are the compact network's, and it computes what the masked dense
network computes."""

import csv
import json

import pytest
import torch
from compose import compose_cfg
from test_runs import needs_fmnist

from flip.metrics.costs import effective_flops, profile_flops, transfer_bytes
from flip.models import TwoCNN
from flip.pruning import compact, compact_masks
from flip.train import train

SMOKE = ["debug=smoke", "algorithm=autoflip", "federation.eval_every=2", "seed=3"]


def _run(tmp_path, name, extra=()):
    out = tmp_path / name
    train(compose_cfg([*SMOKE, f"data.root={tmp_path}", *extra], out))
    with (out / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    return out, rows, json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compact")
    return _run(tmp, "compact"), _run(tmp, "masked", ["pruning.compact=false"])


@needs_fmnist
def test_clients_train_and_send_the_compact_network(runs):
    (run, rows, summary), _ = runs
    mask = torch.load(run / "mask.pt")
    removal = mask["removal"]
    assert removal, "Tp = 0.3 removes whole units on this run"
    dense = TwoCNN(1, 10)
    dense.load_state_dict(torch.load(run / "model.pt"))
    example = torch.zeros(1, 1, 28, 28)
    small, index = compact(dense, removal, example)
    trained = torch.load(run / "model_compact.pt")
    for name, t in small.state_dict().items():  # model.pt is model_compact.pt, densely laid out
        assert torch.equal(trained[name], t), name
    masks = compact_masks(mask["masks"], index)
    # what each client is sent and trains: the compact tensors and the mask inside them
    down, up = transfer_bytes(dict(small.named_parameters()), masks)
    flops = effective_flops(profile_flops(small, example), masks, small)
    cost = summary["cost"]
    assert cost["params"] == 1_663_370 and cost["flops_per_sample_dense"] == 9_527_488
    assert cost["flops_per_sample"] == pytest.approx(flops)
    assert cost["nonzero_params"] == sum(int(m.sum()) for m in masks.values())
    for row in rows:
        sampled = int(row["clients/sampled"])
        assert int(row["cost/bytes_down_round"]) == down * sampled
        assert int(row["cost/bytes_up_round"]) == up * sampled
    assert sum(p.numel() for p in small.parameters()) < 1_663_370
    for name, m in masks.items():  # the unstructured mask held inside during training
        assert not trained[name][~m].any(), name


@needs_fmnist
def test_compact_run_equals_the_masked_dense_run(runs):
    (run_c, rows_c, sum_c), (run_m, rows_m, sum_m) = runs
    assert not (run_m / "model_compact.pt").exists()
    a, b = torch.load(run_c / "model.pt"), torch.load(run_m / "model.pt")
    for name in a:  # same training, only float rounding differs
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    for rc, rm in zip(rows_c, rows_m, strict=True):
        assert float(rc["train/loss"]) == pytest.approx(float(rm["train/loss"]), rel=1e-4)
        assert rc["model/nonzero_params"] == rm["model/nonzero_params"]
        # fewer bytes (the bitmask covers only the compact tensors), no more FLOPs
        assert int(rc["cost/bytes_down_round"]) < int(rm["cost/bytes_down_round"])
        assert float(rc["cost/flops_train_round"]) <= float(rm["cost/flops_train_round"])
    assert sum_c["final"]["global/acc1"] == pytest.approx(sum_m["final"]["global/acc1"], abs=2e-3)
