"""Guidance matrix, Tp threshold and hybrid masks (ALGORITHMS.md §2.1, §2.2)."""

import numpy as np
import pytest
import torch
from torch import nn

from flip.errors import ConfigError
from flip.models import TwoCNN, cifar_resnet18
from flip.pruning import (
    apply_masks,
    global_threshold,
    guidance_matrix,
    hybrid_mask,
    prunable_names,
    squared_displacement,
    structured_mask,
)


def test_squared_displacement_and_minmax():
    d = squared_displacement(
        {"a": torch.tensor([1.0, 2.0, 3.0])}, {"a": torch.tensor([1.0, 4.0, 0.0])}
    )
    torch.testing.assert_close(d["a"], torch.tensor([0.0, 4.0, 9.0]))
    g = guidance_matrix(d)
    torch.testing.assert_close(g["a"], torch.tensor([0.0, 4 / 9, 1.0]))


def test_constant_tensor_gets_ones_not_nan():
    g = guidance_matrix({"c": torch.full((3, 2), 0.7), "z": torch.zeros(4)})
    assert torch.equal(g["c"], torch.ones(3, 2)) and torch.equal(g["z"], torch.ones(4))


def test_threshold_is_exact_global_quantile():
    rng = np.random.default_rng(0)
    a, b = rng.random(1000), rng.random(337)
    G = {"a": torch.tensor(a), "b": torch.tensor(b)}
    for tp in (0.1, 0.3, 0.5, 0.9):
        tau = global_threshold(G, ["a", "b"], tp)
        k = int(tp * 1337)
        assert tau == np.sort(np.concatenate([a, b]))[k - 1]
        pruned = int((G["a"] <= tau).sum() + (G["b"] <= tau).sum())
        assert pruned == k


def test_threshold_beyond_2_pow_24_elements():
    n = 2**24 + 10
    G = {"big": torch.arange(n, dtype=torch.float32)}
    assert global_threshold(G, ["big"], 0.5) == float(n // 2 - 1)


def test_threshold_ties_prune_all_equal_entries():
    G = {"t": torch.tensor([0.1, 0.2, 0.2, 0.2, 0.9])}
    tau = global_threshold(G, ["t"], 0.4)  # k = 2 → τ = 0.2
    assert tau == pytest.approx(0.2)
    assert (G["t"] > tau).tolist() == [False, False, False, False, True]


def test_tp_zero_prunes_nothing_even_where_g_is_zero():
    net = TwoCNN(1, 10, 4)
    G = guidance_matrix({n: torch.rand_like(p) for n, p in net.named_parameters()})
    masks, tau = hybrid_mask(net, G, 0.0, torch.zeros(1, 1, 28, 28))
    assert tau == float("-inf") and all(bool(m.all()) for m in masks.values())


@pytest.mark.parametrize("tp", [-0.1, 1.0, 1.5])
def test_threshold_outside_unit_interval_is_refused(tp):
    with pytest.raises(ConfigError, match="pruning.threshold"):
        global_threshold({"a": torch.rand(4)}, ["a"], tp)


def test_prunable_names_are_weights_only():
    net = TwoCNN(1, 10, 4)
    assert prunable_names(net) == [
        "features.0.weight",
        "features.3.weight",
        "classifier.2.weight",
        "classifier.4.weight",
    ]
    assert len(prunable_names(net, "all")) == 8
    lstm = nn.LSTM(4, 8, num_layers=2)
    assert prunable_names(lstm) == ["weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1"]


def _twocnn_guidance(net, weak_conv1=(0, 2), weak_fc1=(5,), weak_out=(3,)):
    G = {n: torch.full_like(p, 0.9) for n, p in net.named_parameters()}
    for j in weak_conv1:
        G["features.0.weight"][j] = 0.0
    for j in weak_fc1:
        G["classifier.2.weight"][j] = 0.0
    for j in weak_out:  # the output layer: its units must survive
        G["classifier.4.weight"][j] = 0.0
    return G


def test_structured_removal_zeroes_unit_and_consumer_slices():
    net = TwoCNN(1, 10, 4)
    G = _twocnn_guidance(net)
    masks = structured_mask(net, G, 0.5, torch.zeros(1, 1, 28, 28))
    for j in (0, 2):  # conv1 filters 0 and 2 gone: weights, bias, conv2's input channels
        assert not masks["features.0.weight"][j].any() and not masks["features.0.bias"][j]
        assert not masks["features.3.weight"][:, j].any()
    assert masks["features.0.weight"][[1, 3]].all() and masks["features.3.weight"][:, [1, 3]].all()
    assert (
        not masks["classifier.2.weight"][5].any() and not masks["classifier.4.weight"][:, 5].any()
    )
    assert masks["classifier.4.weight"].sum() == 10 * 511  # only fc1's neuron 5 is cut
    assert masks["classifier.4.bias"].all()  # output layer never loses units
    assert masks["features.0.weight"][:, 0].sum() == 2 * 25  # input channel of layer 1 kept


def test_masked_structured_units_output_zero():
    torch.manual_seed(0)
    net = TwoCNN(1, 10, 4)
    masks = structured_mask(net, _twocnn_guidance(net), 0.5, torch.zeros(1, 1, 28, 28))
    apply_masks(net, masks)
    act = net.features[:2](torch.randn(3, 1, 28, 28))
    assert act[:, [0, 2]].abs().max() == 0 and act[:, [1, 3]].abs().max() > 0


def test_hybrid_mask_density_and_structure():
    torch.manual_seed(0)
    net = TwoCNN(1, 10, 4)
    G = {n: torch.rand_like(p) for n, p in net.named_parameters()}
    G["features.0.weight"][1] *= 0.01  # filter 1 scores far below τ
    masks, tau = hybrid_mask(net, G, 0.3, torch.zeros(1, 1, 28, 28))
    names = prunable_names(net)
    kept = sum(int(masks[n].sum()) for n in names)
    total = sum(masks[n].numel() for n in names)
    assert kept <= total - int(0.3 * total)  # at least Tp of the prunable entries pruned
    assert not masks["features.0.weight"][1].any() and not masks["features.0.bias"][1]
    assert masks["classifier.4.bias"].all()


def test_resnet_residual_channels_pruned_together():
    """Channel 7 of the layer-1 residual stream has three producers (stem conv1: 3·3·3 fan-in,
    layer1.0.conv2 and layer1.1.conv2: 64·3·3 each); its score pools all their fan-in weights."""
    torch.manual_seed(0)
    net = cifar_resnet18(3, 10)
    example = torch.zeros(1, 3, 32, 32)
    G = {n: torch.full_like(p, 0.9) for n, p in net.named_parameters()}
    G["layer1.0.conv2.weight"][7] = 0.3  # pooled: (27·.9 + 576·.3 + 576·.9)/1179 = 0.607 > 0.5
    assert structured_mask(net, G, 0.5, example)["layer1.0.conv2.weight"][7].all()
    G["layer1.0.conv2.weight"][7] = 0.0  # pooled: (27·.9 + 576·.9)/1179 = 0.460 ≤ 0.5
    masks = structured_mask(net, G, 0.5, example)
    for name in ("conv1.weight", "layer1.0.conv2.weight", "layer1.1.conv2.weight", "bn1.weight"):
        assert not masks[name][7].any(), name  # every coupled producer loses channel 7
    assert not masks["layer1.0.conv1.weight"][:, 7].any()  # consumers lose the input slice
    assert not masks["layer2.0.downsample.0.weight"][:, 7].any()
    inner = masks["layer1.0.conv1.weight"][7]  # block-internal filter 7 keeps all but input 7
    assert inner[:7].all() and inner[8:].all()
    assert masks["fc.weight"].all()


def test_masked_model_keeps_zeros_and_is_exact_under_ones():
    net = TwoCNN(1, 10, 4)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    apply_masks(net, {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()})
    for n, p in net.named_parameters():
        assert torch.equal(p.detach(), before[n])
