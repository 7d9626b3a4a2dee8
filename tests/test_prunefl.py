"""PruneFL (ALGORITHMS.md §3.1): greedy importance-per-time selection, protected core,
regrowth with stored values, the time model and a real run whose costs follow the mask."""

import itertools
import json

import pytest
import torch
from federation_helpers import tiny_federation
from torch import nn

from flip.algorithms import PruneFL
from flip.devices import DeviceProfile
from flip.errors import ConfigError
from flip.metrics.costs import profile_flops
from flip.metrics.time_model import parameter_times
from flip.models import TwoCNN
from flip.pruning import (
    decrease_fraction,
    greedy_select,
    magnitude_core,
    prunable_names,
    reconfigure,
    reconfigure_network,
    swap_pruned,
)


def test_greedy_selection_hand_example_maximises_importance_per_time():
    """Base Σz = 10, T0 + Σc = 10. Layer a (c = 1): z = 1.2, 5, 0.5; layer b (c = 2): z = 3, 4.
    By z/c: a:5 (5 > 10/10 → take, ratio 15/11), b:4 (2 > 1.36 → take, 19/13), b:3
    (1.5 > 1.46 → take, 22/15), a:1.2 (1.2 ≤ 1.47 → stop)."""
    za, zb = torch.tensor([1.2, 5.0, 0.5]), torch.tensor([3.0, 4.0])
    chosen = greedy_select([za, zb], [1.0, 2.0], 10.0, 10.0)
    assert chosen[0].tolist() == [False, True, False]
    assert chosen[1].tolist() == [True, True]

    # golden: among all choices of each layer's top-k candidates, this maximises Σz / Σc
    def ratio(ka, kb):
        sa, sb = za.sort(descending=True).values, zb.sort(descending=True).values
        return (10 + sa[:ka].sum() + sb[:kb].sum()) / (10 + ka * 1.0 + kb * 2.0)

    best = max(itertools.product(range(4), range(3)), key=lambda k: float(ratio(*k)))
    assert best == (1, 2) and float(ratio(1, 2)) == pytest.approx(22 / 15)


def test_greedy_takes_nothing_when_no_candidate_beats_the_ratio():
    chosen = greedy_select([torch.tensor([0.5, 1.0])], [1.0], 10.0, 5.0)  # ratio 2
    assert chosen[0].tolist() == [False, False]
    with pytest.raises(ValueError):
        greedy_select([torch.tensor([1.0])], [0.0], 1.0, 1.0)


def test_magnitude_core_keeps_largest_active_weights():
    w = torch.tensor([0.9, -0.1, 0.5, 0.05, 7.0, -3.0])
    m = torch.tensor([1, 1, 1, 1, 0, 0], dtype=torch.bool)  # 7 and -3 are pruned: never core
    assert magnitude_core(w, m, 0.5).tolist() == [True, False, True, False, False, False]
    assert magnitude_core(w, m, 0.3).tolist() == [True, True, True, False, False, False]
    assert magnitude_core(w, m, 0.0).tolist() == m.tolist()


def test_reconfigure_hand_example():
    """Layer a (c = 1), dtp 0.5: core {0.9, 0.5}; b (c = 2): core {0.3}. Σz = 1 + (1 + 1) + 2 = 5,
    Σc = 4 + 2·1 + 1·2 = 8. Candidates by z/c: a[4] 6 (take → 11/9), b[1] 2.5 (take → 16/11),
    a[5] 0.3 < 1.45: stop."""
    weights = {"a": torch.tensor([0.9, -0.1, 0.5, 0.05, 0.0, 0.0]), "b": torch.tensor([0.3, 0.2])}
    masks = {"a": torch.tensor([1, 1, 1, 1, 0, 0]).bool(), "b": torch.tensor([1, 0]).bool()}
    z = {"a": torch.tensor([1.0, 0.2, 1.0, 0.1, 6.0, 0.3]), "b": torch.tensor([2.0, 5.0])}
    new = reconfigure(weights, masks, z, {"a": 1.0, "b": 2.0}, 0.5, 1.0, 4.0)
    assert new["a"].tolist() == [True, False, True, False, True, False]
    assert new["b"].tolist() == [True, True]


def test_swap_pruned_restores_stored_values():
    p = torch.tensor([1.0, 2.0, 3.0, 4.0])
    stored = torch.zeros(4)
    full = torch.ones(4, dtype=torch.bool)
    m1 = torch.tensor([1, 0, 1, 0]).bool()
    swap_pruned(p, stored, full, m1)
    assert p.tolist() == [1, 0, 3, 0] and stored.tolist() == [0, 2, 0, 4]
    p[0], p[2] = 5.0, 7.0  # training moves the kept weights
    m2 = torch.tensor([1, 1, 0, 0]).bool()
    swap_pruned(p, stored, m1, m2)
    assert p.tolist() == [5, 2, 0, 0]  # entry 1 regrows with the value it had when pruned
    assert stored.tolist() == [0, 2, 7, 4]  # entry 2 is kept for a later regrowth


def test_prunefl_regrowth_restores_the_value_held_when_pruned():
    """flip.pruning.reconfigure_network on a hand-made layer: prune, train, regrow."""
    net = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.9, 0.5, -0.1, 0.05]]))
    times, stored = {"weight": 1.0}, {"weight": torch.zeros(1, 4)}

    def reconfigure_model(net, masks, z, dtp):
        return reconfigure_network(net, masks, z, times, stored, dtp, round_overhead_s=4.0)

    dense = {"weight": torch.ones(1, 4, dtype=torch.bool)}
    z = {"weight": torch.tensor([[1.0, 1.0, 0.0, 0.0]])}
    m1 = reconfigure_model(net, dense, z, dtp=0.5)
    assert m1["weight"].tolist() == [[True, True, False, False]]
    assert torch.equal(net.weight.detach(), torch.tensor([[0.9, 0.5, 0.0, 0.0]]))
    with torch.no_grad():
        net.weight[0, 0] = 0.7  # a round of training
    # core: the largest active (0.7); Σz = 0, Σc = 4 + 1; candidate z = 9 → 9/1 > 0: regrown
    m2 = reconfigure_model(net, m1, {"weight": torch.tensor([[0.0, 0.0, 9.0, 0.0]])}, 0.5)
    assert m2["weight"].tolist() == [[True, False, True, False]]
    assert torch.equal(net.weight.detach(), torch.tensor([[0.7, 0.0, -0.1, 0.0]]))  # exact
    m3 = reconfigure_model(net, m2, {"weight": torch.tensor([[0.0, 5.0, 0.0, 0.0]])}, 0.5)
    assert m3["weight"][0, 1] and net.weight[0, 1] == torch.tensor(0.5)


def test_decrease_fraction_halves_every_half_life():
    assert decrease_fraction(0) == 0.3
    assert decrease_fraction(10000) == pytest.approx(0.15)
    assert decrease_fraction(50, 0.3, 50) == pytest.approx(0.15)


def test_parameter_times_hand_computed_on_twocnn():
    """conv1 (32×1×5×5 = 800 weights) runs 800·26·26 multiply-adds per sample: 676 per weight;
    fc2 (512·10 weights) 1 per weight. c = 4/2.5e6 + 4/1.25e6 + E·3·(FLOPs/weight)·n/rate."""
    net = TwoCNN(1, 10, 32)
    params = dict(net.named_parameters())
    device = DeviceProfile(2.5, 1.25, 1e9)  # MB/s, MB/s, FLOP/s
    times = parameter_times(
        profile_flops(net, (1, 28, 28)), params, prunable_names(net), 100, 2, device
    )
    comm = 4 / 2.5e6 + 4 / 1.25e6
    assert times["features.0.weight"] == pytest.approx(comm + 2 * 3 * 676 * 100 / 1e9)
    assert times["classifier.4.weight"] == pytest.approx(comm + 2 * 3 * 1 * 100 / 1e9)
    assert times["features.0.bias"] == pytest.approx(comm)


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="prunefl.interval"):
        PruneFL(interval=0)
    with pytest.raises(ConfigError, match="prunefl.max_decrease"):
        PruneFL(max_decrease=1.0)
    with pytest.raises(ConfigError, match="prunefl.initial.passes"):
        PruneFL(initial={"passes": 0})
    with pytest.raises(ConfigError, match="devices.upload_MBps"):
        DeviceProfile(1.0, 0.0, 1.0)


def test_prunefl_run_costs_follow_the_changing_mask(tmp_path):
    """A real run (tiny MNIST, reconfiguration after every round): initial pruning on client
    0, then each round's nonzero count, bytes down and up are those of the mask in force,
    plus the importance upload (4 B per entry per client)."""
    algo = PruneFL(interval=1, initial={"passes": 6, "interval": 2, "patience": 2, "batches": 3})
    fed = tiny_federation(tmp_path, algo, rounds=3)
    fed.setup()
    assert algo.history[0]["round"] == 0 and algo.history[0]["passes"] <= 6
    assert fed.ledger.setup["clients"] == 1 and fed.ledger.setup["flops"] > 0
    params = dict(fed.net.named_parameters())
    numel = sum(p.numel() for p in params.values())
    densities = []
    for r in (1, 2, 3):
        masks = {n: m.clone() for n, m in fed.masks.items()}
        row = fed.run_round(r)
        nnz = sum(int(masks[n].sum()) if n in masks else p.numel() for n, p in params.items())
        bitmask = sum((params[n].numel() + 7) // 8 for n in masks if not masks[n].all())
        assert row["model/nonzero_params"] == nnz
        assert row["model/density"] == nnz / numel
        m = row["clients/sampled"]
        assert row["cost/bytes_down_round"] == m * (4 * nnz + bitmask)
        assert row["cost/bytes_up_round"] == m * 4 * nnz + m * 4 * numel
        densities.append(row["model/density"])
        for n, mask in fed.masks.items():  # pruned weights are exactly zero after the round
            assert not params[n][~mask].any()
    assert [h["round"] for h in algo.history] == [0, 1, 2, 3]
    assert len(set(densities)) > 1  # the mask changed between rounds
    algo.save(tmp_path)
    saved = torch.load(tmp_path / "mask.pt")["masks"]
    assert all(torch.equal(saved[n], fed.masks[n].cpu()) for n in saved)
    assert json.loads((tmp_path / "prunefl.json").read_text())[1]["round"] == 1
