"""Random pruning (ALGORITHMS.md §3.3): exact density, given or read from a reference run."""

import json

import pytest
import torch
from federation_helpers import tiny_federation

from flip.algorithms import RandomPruning
from flip.errors import ConfigError
from flip.pruning import random_mask


def test_random_mask_keeps_exactly_k_and_is_seeded():
    shapes = {"a": torch.Size([7, 3]), "b": torch.Size([5]), "c": torch.Size([2, 2, 2])}
    for kept in (0, 1, 17, 34):
        m = random_mask(shapes, kept, torch.Generator().manual_seed(0))
        assert {n: t.shape for n, t in m.items()} == shapes
        assert sum(int(t.sum()) for t in m.values()) == kept
    m1 = random_mask(shapes, 17, torch.Generator().manual_seed(1))
    m2 = random_mask(shapes, 17, torch.Generator().manual_seed(1))
    m3 = random_mask(shapes, 17, torch.Generator().manual_seed(2))
    assert all(torch.equal(m1[n], m2[n]) for n in shapes)
    assert not all(torch.equal(m1[n], m3[n]) for n in shapes)
    with pytest.raises(ValueError):
        random_mask(shapes, 35, torch.Generator())


def test_density_is_exact_and_reused_from_a_reference_run(tmp_path):
    """Density 0.37 on TwoCNN(h4): exactly round(0.37·N) entries kept; a second run given the
    first one's summary.json as reference keeps exactly as many, with another mask."""
    algo = RandomPruning(density=0.37)
    fed = tiny_federation(tmp_path / "a", algo, rounds=1)
    fed.setup()
    total = sum(p.numel() for p in fed.net.parameters())
    assert fed.ledger.counts["nonzero_params"] == round(0.37 * total)
    assert abs(fed.ledger.counts["density"] - 0.37) <= 0.5 / total
    biases = [n for n, _ in fed.net.named_parameters() if n.endswith("bias")]
    assert not set(biases) & set(fed.masks)  # biases are kept whole
    row = fed.run_round(1)
    assert row["model/nonzero_params"] == round(0.37 * total)
    for n, p in fed.net.named_parameters():  # masked entries stay zero through the round
        if n in fed.masks:
            assert not p[~fed.masks[n]].any()

    run = tmp_path / "reference_run"  # a reference run dir as flip writes it
    run.mkdir()
    (run / "summary.json").write_text(
        json.dumps({"algorithm": "autoflip", "cost": dict(fed.ledger.counts)})
    )
    again = RandomPruning(reference_run=str(run))
    assert again.density == fed.ledger.counts["density"]
    fed2 = tiny_federation(tmp_path / "b", again, rounds=1, seed=1)
    fed2.setup()
    assert fed2.ledger.counts["nonzero_params"] == fed.ledger.counts["nonzero_params"]
    assert not all(torch.equal(fed.masks[n], fed2.masks[n]) for n in fed.masks)


def test_bad_density_or_reference(tmp_path):
    with pytest.raises(ConfigError, match="exactly one"):
        RandomPruning()
    with pytest.raises(ConfigError, match="exactly one"):
        RandomPruning(density=0.5, reference_run=str(tmp_path))
    with pytest.raises(ConfigError, match=r"random_pruning.density=1.5"):
        RandomPruning(density=1.5)
    with pytest.raises(ConfigError, match="random_pruning.reference_run"):
        RandomPruning(reference_run=str(tmp_path / "missing"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps({"cost": {"density": 0.5, "params": 12}}))
    algo = RandomPruning(reference_run=str(other))
    fed = tiny_federation(tmp_path / "fed", algo, rounds=1)
    with pytest.raises(ConfigError, match="parameters"):
        fed.setup()


def test_reference_found_in_a_multirun_folder(tmp_path):
    """`make compare-fmnist` points at the sweep folder: the one finished AutoFLIP job is used,
    FedAvg's and the unfinished random job's dirs are skipped."""
    for job, algo, density in (("0_fedavg", "fedavg", 1.0), ("1_autoflip", "autoflip", 0.42)):
        (tmp_path / job).mkdir()
        summary = {"algorithm": algo, "cost": {"density": density}}
        (tmp_path / job / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "4_random").mkdir()
    algo = RandomPruning(reference_run=str(tmp_path))
    assert algo.density == 0.42 and algo.reference_run == str(tmp_path / "1_autoflip/summary.json")
    (tmp_path / "5_autoflip").mkdir()
    (tmp_path / "5_autoflip" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="holds 2 finished AutoFLIP runs"):
        RandomPruning(reference_run=str(tmp_path))
