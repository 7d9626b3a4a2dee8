"""EFLPrune (ALGORITHMS.md §3.2): L1 unit ranking, physical sub-model, write-back with
parameter reuse, and a real round that trains the sub-model."""

import pytest
import torch
from federation_helpers import tiny_federation

from flip.algorithms import EFLPrune
from flip.errors import ConfigError
from flip.metrics.costs import profile_flops
from flip.models import TwoCNN, cifar_resnet18
from flip.pruning import (
    extract_submodel,
    kept_positions,
    l1_unit_scores,
    scatter_submodel,
    units_to_remove,
)


def test_l1_scores_and_units_to_remove_hand_example():
    w = torch.tensor([[[1.0, -2.0]], [[0.5, 0.5]], [[-3.0, 0.0]], [[0.0, 1.0]]])  # 4 units
    assert l1_unit_scores(w).tolist() == [3.0, 1.0, 3.0, 1.0]
    assert units_to_remove(l1_unit_scores(w), 0.5) == [1, 3]
    assert units_to_remove(l1_unit_scores(w), 0.7) == [3]  # keep ⌈2.8⌉ = 3; tie: first wins
    assert units_to_remove(l1_unit_scores(w), 0.01) == [1, 2, 3]  # at least one unit stays
    assert units_to_remove(l1_unit_scores(w), 1.0) == []


def test_submodel_of_twocnn_keeps_the_strongest_units_and_equals_the_masked_model():
    torch.manual_seed(0)
    net = TwoCNN(1, 10, 8).eval()
    with torch.no_grad():  # make filters 2 and 5 of conv1 the weakest by far
        net.features[0].weight[[2, 5]] *= 1e-3
    sub, index, removed = extract_submodel(net, 0.75, torch.zeros(1, 1, 28, 28))
    assert set(removed["features.0"]) == {2, 5}
    assert sub.features[0].weight.shape == (6, 1, 5, 5)  # ⌈0.75·8⌉ filters
    assert sub.features[3].weight.shape == (12, 6, 5, 5)  # ⌈0.75·16⌉, inputs follow conv1
    assert sub.classifier[2].weight.shape == (384, 12 * 49)  # the flattened 7×7 blocks follow
    assert sub.classifier[4].weight.shape == (10, 384)  # the output layer keeps all units
    for name, p in sub.named_parameters():  # every sub entry is the global entry it maps to
        full = net.get_parameter(name).detach().reshape(-1)
        assert torch.equal(p.detach().reshape(-1), full[index[name].reshape(-1)]), name
    x = torch.randn(5, 1, 28, 28)
    masked = net
    with torch.no_grad():  # zero what the sub-model lacks: the outputs must not change
        for name, p in masked.named_parameters():
            p.mul_(kept_positions(p.shape, index[name]))
    torch.testing.assert_close(sub(x), masked(x), rtol=1e-5, atol=1e-5)


def test_submodel_of_resnet18_with_batch_norm_and_residuals():
    torch.manual_seed(0)
    net = cifar_resnet18(3, 10).eval()
    sub, index, _ = extract_submodel(net, 0.5, torch.zeros(1, 3, 32, 32))
    assert sum(p.numel() for p in sub.parameters()) < 0.3 * sum(p.numel() for p in net.parameters())
    for name, b in sub.named_buffers():  # batch-norm statistics are carried over too
        if b.is_floating_point():
            full = net.get_buffer(name).reshape(-1)
            assert torch.equal(b.reshape(-1), full[index[name].reshape(-1)]), name
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.mul_(kept_positions(p.shape, index[name]))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(sub(x), net(x), rtol=1e-4, atol=1e-4)


def test_scatter_writes_back_and_reuses_the_rest():
    full = {"w": torch.arange(6.0).view(2, 3), "n": torch.tensor(3)}
    index = {"w": torch.tensor([[0, 2], [3, 5]])}
    out = scatter_submodel(full, {"w": -torch.ones(2, 2), "n": torch.tensor(7)}, index)
    assert out["w"].tolist() == [[-1, 1, -1], [-1, 4, -1]]
    assert out["n"] == 7 and full["w"][0, 0] == 0  # the input is not modified


def test_eflprune_trains_the_submodel_and_keeps_pruned_units(tmp_path):
    """Two real rounds with a momentum server optimizer (so Δ = 0 alone would not keep the
    pruned units still): entries outside the sub-model keep their pre-round global values,
    entries inside are trained, and the costs are the sub-model's."""

    class Spy(EFLPrune):  # records the shapes of what the clients send back
        update_shapes: list = []

        def client_model(self, fed, r):
            sub, masks = super().client_model(fed, r)
            self.sub_shapes = {n: p.shape for n, p in sub.named_parameters()}
            return sub, masks

        def on_client_update(self, fed, r, update):
            self.update_shapes.append({n: p.shape for n, p in update.params.items()})
            return super().on_client_update(fed, r, update)

    algo = Spy(keep_ratio=0.5)
    fed = tiny_federation(tmp_path, algo, rounds=2, momentum=0.9, hidden=8)
    fed.setup()
    numel = sum(p.numel() for p in fed.net.parameters())
    for r in (1, 2):
        before = {n: p.detach().clone() for n, p in fed.net.named_parameters()}
        row = fed.run_round(r)
        sub_numel = algo.history[-1]["params"]
        assert sub_numel < 0.4 * numel
        assert row["model/nonzero_params"] == sub_numel
        assert row["model/density"] == sub_numel / numel
        m = row["clients/sampled"]
        assert row["cost/bytes_down_round"] == row["cost/bytes_up_round"] == m * 4 * sub_numel
        changed = total = 0
        for name, p in fed.net.named_parameters():
            kept = kept_positions(p.shape, algo.index[name])
            assert torch.equal(p[~kept], before[name][~kept]), (r, name)  # parameter reuse
            changed += int((p[kept] != before[name][kept]).sum())
            total += int(kept.sum())
        # the sub-model was trained (units whose ReLU never fires on this tiny data stay put)
        assert total == sub_numel and changed > 0.5 * total
        assert all(u == algo.sub_shapes for u in algo.update_shapes[-m:])  # clients trained it
    sub, _, _ = extract_submodel(fed.net, 0.5, torch.zeros(1, 1, 28, 28))
    assert fed.ledger.flops_per_sample == profile_flops(sub, (1, 28, 28)).total
    assert fed.ledger.flops_per_sample < 0.5 * fed.ledger.flops.total


def test_bad_keep_ratio():
    with pytest.raises(ConfigError, match="eflprune.keep_ratio"):
        EFLPrune(keep_ratio=0.0)
