"""PR-FL (ASYNC.md §3): MaskFedAvg by hand, nested masks, the first stage, importance,
recovery with rollback, residual download, bad input and a resumed run."""

import copy
import csv
import math

import pytest
import torch
from async_helpers import tiny_run
from compose import compose_cfg
from fixtures_data import write_tiny_mnist

from flip.algorithms import PRFL
from flip.algorithms.prfl_parts import (
    Importance,
    buffer_average,
    first_stage_densities,
    mask_fedavg,
)
from flip.errors import ConfigError
from flip.metrics.costs import transfer_bytes
from flip.models import TwoCNN
from flip.params import AsyncParams
from flip.pruning import apply_masks, prunable_names
from flip.pruning.nested import core_mask, nested_masks, piece_bytes, residual_pieces
from flip.train import train

QUIET_PRFL = {"preset": "prfl10", "noise_client": 0.0, "noise_server": 0.0}


def test_mask_fedavg_by_hand_on_three_buffers_with_zeros():
    """w = c_i n_i = (1, 2, 3). Entry 0: (1·2 + 2·4)/(1 + 2) = 10/3; entry 1: (2·6 + 3·3)/(2 +
    3) = 21/5; entry 2: every buffer 0 → W unchanged; entry 3: (1·8 + 3·2)/(1 + 3) = 3.5;
    entry 4: 1·1 + 2·(−0.5) = 0, a zero numerator → W unchanged."""
    w = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])}
    b = [{"w": torch.tensor([2.0, 0.0, 0.0, 8.0, 1.0])},
         {"w": torch.tensor([4.0, 6.0, 0.0, 0.0, -0.5])},
         {"w": torch.tensor([0.0, 3.0, 0.0, 2.0, 0.0])}]
    mask_fedavg(w, b, [1.0, 2.0, 3.0])
    assert w["w"].tolist() == pytest.approx([10 / 3, 21 / 5, 3.0, 3.5, 5.0], abs=1e-6)
    avg = buffer_average(b, [1.0, 2.0, 3.0])  # zeros included, as the paper plots
    assert avg["w"].tolist() == pytest.approx([10 / 6, 21 / 6, 0.0, 14 / 6, 0.0], abs=1e-6)


def masks_for(densities, seed=0, core=0.05):
    torch.manual_seed(seed)
    net = TwoCNN(1, 10, 4)
    weights = {n: p.detach() for n, p in net.named_parameters() if n in prunable_names(net)}
    importance = {n: torch.rand_like(w) for n, w in weights.items()}
    costs = {n: 1.0 + i for i, n in enumerate(weights)}
    return net, weights, importance, costs, nested_masks(weights, importance, costs, densities,
                                                         core)


def test_nested_masks_share_the_core_and_grow_with_the_density():
    densities = [0.1, 0.6, 0.3, 1.0, 0.3, 0.02]
    _, weights, importance, costs, masks = masks_for(densities)
    total = sum(w.numel() for w in weights.values())
    cores = {n: core_mask(w, 0.05) for n, w in weights.items()}
    core_size = sum(int(c.sum()) for c in cores.values())
    for rho, m in zip(densities, masks, strict=True):
        assert all(bool((cores[n] <= m[n]).all()) for n in weights)  # the core is in every mask
        assert sum(int(t.sum()) for t in m.values()) == max(core_size, math.floor(rho * total))
    for a, ma in zip(densities, masks, strict=True):
        for b, mb in zip(densities, masks, strict=True):
            if a < b:  # nested: m_a ⊆ m_b
                assert all(bool((ma[n] <= mb[n]).all()) for n in weights)
    assert masks[2] is masks[4] and all(bool(t.all()) for t in masks[3].values())
    for n, w in weights.items():  # each core: the layer's ⌈5%⌉ largest |w|
        k = math.ceil(0.05 * w.numel())
        assert int(cores[n].sum()) == k
        assert w.abs()[cores[n]].min() >= w.abs()[~cores[n]].max()
    # outside the core, the smallest mask took the candidates of highest A/c
    m = masks[0]
    score = torch.cat([(importance[n] / costs[n]).reshape(-1) for n in weights])
    chosen = torch.cat([(m[n] & ~cores[n]).reshape(-1) for n in weights])
    left = torch.cat([(~m[n]).reshape(-1) for n in weights])
    assert score[chosen].min() >= score[left].max()


def test_first_stage_densities_by_hand():
    """t̄ = mean of the last ≤ 2 inter-arrival times from t = 0: client 0 arrives at 1, 2, 3
    (t̄ 1), client 1 at 2, 4 (t̄ 2), client 2 at 10 (t̄ 10), client 3 never."""
    rho = first_stage_densities([[1, 2, 3], [2, 4], [10], []], 2, 0.15)
    assert rho == [1.0, 0.5, 0.15, 0.15]  # 1/10 clipped up to ρ_min; no arrival: ρ_min
    assert first_stage_densities([[4, 5, 6]], 2, 0.1) == [1.0]


def test_importance_mean_of_nonzero_observations_and_unobserved_entries():
    """g = grad²·samples, min-max normalised over all parameters, then A = the mean of the
    nonzero g since the last refresh; entries never observed: g_min·|W|."""
    weights = {"a": torch.tensor([2.0, -3.0, 0.5])}
    imp = Importance(weights)
    imp.add({"a": torch.tensor([0.0, 1.0, 0.0]), "b": torch.tensor([4.0])}, 2)
    imp.add({"a": torch.tensor([0.0, 4.0, 0.0]), "b": torch.tensor([4.0])}, 1)
    imp.refresh()  # g1 = (0, 2, 0, 8)/8 → (0, .25, 0); g2 = (0, 4, 0, 4)/4 → (0, 1, 0)
    values = imp.values(weights)
    assert values["a"].tolist() == pytest.approx([0.625 * 2.0, 0.625, 0.625 * 0.5])


def tiny_prfl(tmp_path, algo, rounds, **kw):
    return tiny_run(tmp_path, algo, num_clients=2, rounds=rounds, val_fraction=0.2,
                    devices=QUIET_PRFL, asynchronous=AsyncParams(max_aggregations=rounds), **kw)


def spy_on_training(fed, monkeypatch) -> list:
    seen, train_ = [], fed.executor.train

    def spy(f, net, masks, jobs):
        seen.append((copy.deepcopy(net), masks, [j.client for j in jobs]))
        return train_(f, net, masks, jobs)

    monkeypatch.setattr(fed.executor, "train", spy)
    return seen


def test_recovery_raises_the_density_and_regrown_weights_start_from_the_server(
        tmp_path, monkeypatch):
    """Every aggregation is a control interval; the server keeps improving, the sub-models do
    not (a forced plateau): after the second evaluation each client's ρ rises by Δρ = 0.2, and
    the weights its mask gains arrive with the server's current values, not zeros."""
    algo = PRFL(densities=[0.3, 0.6], interval=1, patience=1, first_stage=False,
                residual=False)
    fed = tiny_prfl(tmp_path, algo, rounds=2)
    accs = iter([0.1, 0.2, 0.3])
    monkeypatch.setattr(algo, "_val_acc",
                        lambda f, net: next(accs) if net is f.net else 0.5)
    seen = spy_on_training(fed, monkeypatch)
    fed.fit()
    assert algo.rho == pytest.approx([0.5, 0.8])
    assert any(bool(o.any()) for o in algo.importance.observed.values())  # gradients arrived
    assert [h.get("recovered") for h in algo.history] == [[], [0, 1]]
    new_masks = algo.client_mask
    net, masks, clients = seen[-1]
    assert masks is new_masks[clients[0]]
    old = next(m for _, m, c in seen[:-1] if m is not None and clients[0] in c)
    server = dict(fed.net.named_parameters())
    gained = 0
    for name, p in net.named_parameters():
        if name in masks:
            grown = masks[name] & ~old[name]
            gained += int(grown.sum())
            assert torch.equal(p[grown], server[name].detach()[grown])
            assert bool((p[grown] != 0).all())  # the server's values, not zeros
    assert gained > 0


def test_a_global_plateau_rolls_back_and_raises_the_minimum_density(tmp_path, monkeypatch):
    algo = PRFL(densities=[0.3, 0.6], interval=1, patience=2, first_stage=False,
                increment=0.5, residual=False)
    fed = tiny_prfl(tmp_path, algo, rounds=3)
    snapshots = []

    def val_acc(f, net):
        if net is f.net:
            snapshots.append({n: p.detach().clone() for n, p in net.named_parameters()})
            return [0.4, 0.3, 0.3][len(snapshots) - 1]
        return 0.5

    monkeypatch.setattr(algo, "_val_acc", val_acc)
    fed.fit()
    assert algo.rho_min == pytest.approx(0.58) and not algo.stopped
    assert all(rho >= 0.58 for rho in algo.rho) and algo.history[-1]["rollback"]
    now = dict(fed.net.named_parameters())
    assert all(torch.equal(now[n], snapshots[0][n]) for n in now)  # the best server model
    assert not all(torch.equal(now[n], snapshots[2][n]) for n in now)


def test_minimum_density_of_one_stops_training(tmp_path, monkeypatch):
    algo = PRFL(densities=[0.3], interval=1, patience=1, first_stage=False, increment=1.0,
                residual=False)
    fed = tiny_prfl(tmp_path, algo, rounds=10)
    monkeypatch.setattr(algo, "_val_acc", lambda f, net: 0.5)
    fed.fit()
    assert algo.stopped and algo.rho_min == 1.0 and len(fed.history) == 2
    assert "global/acc1" in fed.history[-1]  # the last aggregation is evaluated


def test_residual_download_sends_the_same_numbers_with_fewer_bytes():
    net, weights, _, _, masks = masks_for([0.1, 0.3, 1.0])
    params = {n: p.detach() for n, p in net.named_parameters()}
    pieces = residual_pieces(masks)
    for k, mask in enumerate(masks):  # client k adds pieces 1..k: W ⊙ m_k exactly
        sent = copy.deepcopy(net)
        apply_masks(sent, mask)
        got = {n: sum(params[n] * pieces[j][n] for j in range(k + 1)) for n in weights}
        assert all(torch.equal(got[n], dict(sent.named_parameters())[n]) for n in weights)
    alone = [transfer_bytes(params, m)[0] for m in masks]
    shared = piece_bytes(params, pieces)
    assert shared[0] == alone[0] and sum(shared) < sum(alone)
    assert sum(shared) < alone[-1] + alone[0]  # all three for little more than the largest


def test_residual_download_counts_each_piece_once_per_window(tmp_path):
    """At t = 0 every client downloads the dense θ_0: one piece crosses the server's link
    with residual download, K copies without (the time it saves: test_clock)."""
    rows = {}
    for residual in (True, False):
        algo = PRFL(densities=[0.3, 0.6], interval=50, residual=residual)
        fed = tiny_prfl(tmp_path / str(residual), algo, rounds=1)
        fed.fit()
        rows[residual] = fed.history[0]
    nbytes = 4 * sum(p.numel() for p in TwoCNN(1, 10, 4).parameters())
    assert rows[True]["cost/bytes_down_round"] == nbytes
    assert rows[False]["cost/bytes_down_round"] == 2 * nbytes


def test_bad_prfl_input_stops_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"prfl\.increment=0"):
        PRFL(increment=0)
    with pytest.raises(ConfigError, match=r"prfl\.increment=-0\.2"):
        PRFL(increment=-0.2)
    with pytest.raises(ConfigError, match=r"prfl\.densities.*\(0, 1\]"):
        PRFL(densities=[1.0, 1.5])
    with pytest.raises(ConfigError, match=r"prfl\.densities"):
        PRFL(densities=[0.0, 0.5])
    root = write_tiny_mnist(tmp_path / "data", per_class_train=8, per_class_test=2)
    base = ["debug=smoke", "data=mnist", f"data.root={root}", "data.download=false",
            "data.train_subset=1.0", "algorithm=prfl"]
    with pytest.raises(ConfigError, match=r"prfl\.densities"):
        train(compose_cfg([*base, "prfl.densities=[0.5,2]"], tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"data\.val_fraction=0\.0"):
        train(compose_cfg([*base, "data.val_fraction=0"], tmp_path / "b"))
    assert not (tmp_path / "b" / "rounds.csv").exists()


def test_resumed_prfl_run_writes_the_same_rows(tmp_path):
    """A PR-FL run (recovery, first stage, residual download, noisy PR-FL devices) stopped
    after 3 aggregations and resumed to 6 equals one run of 6, byte for byte: the buffers,
    importance, densities, masks and the simulation travel in the checkpoint."""
    root = write_tiny_mnist(tmp_path / "data", per_class_train=12, per_class_test=2)
    base = ["debug=smoke", "data=mnist", f"data.root={root}", "data.download=false",
            "data.train_subset=1.0", "data.val_fraction=0.2", "data.batch_size=8",
            "federation.local_steps=2", "federation.eval_every=3", "algorithm=prfl",
            "devices=prfl10", "prfl.interval=2", "prfl.patience=1"]
    train(compose_cfg([*base, "federation.rounds=6"], tmp_path / "straight"))
    train(compose_cfg([*base, "federation.rounds=3"], tmp_path / "split"))
    train(compose_cfg([*base, "federation.rounds=6", f"resume={tmp_path / 'split'}"],
                      tmp_path / "other"))
    a = (tmp_path / "straight" / "rounds.csv").read_bytes()
    assert (tmp_path / "split" / "rounds.csv").read_bytes() == a
    with (tmp_path / "straight" / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[2]["buffer/acc1"] and rows[5]["prfl/density_min"]
