"""Physical compaction (ALGORITHMS.md §2.2): the compact network equals the masked dense one,
maps back into the dense layout exactly, and its costs are those of its own tensors."""

import math

import pytest
import torch
from torch import nn

from flip.metrics.costs import effective_flops, profile_flops, transfer_bytes
from flip.models import NextCharLSTM, TwoCNN, cifar_resnet18
from flip.models.efficientnet import efficientnet_b3
from flip.pruning import (
    apply_masks,
    compact,
    compact_masks,
    expand,
    hybrid_mask,
    removal_masks,
    structured_removal,
)


def _randomise(net: nn.Module, seed: int) -> None:
    """Random weights and batch-norm statistics, scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() > 1:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(fan_in))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 + (1 if "bn" in name else 0))


def _guidance(net: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A guidance matrix whose units differ in mean G (some fall below τ)."""
    g = torch.Generator().manual_seed(seed)
    G = {}
    for name, p in net.named_parameters():
        rows = torch.rand((p.shape[0],) + (1,) * (p.dim() - 1), generator=g)
        if "lstm.weight" in name:  # one factor per hidden unit, shared by its four gate rows
            rows = rows[: p.shape[0] // 4].repeat(4, 1)
        G[name] = (torch.rand(p.shape, generator=g) * rows).clamp(0, 1)
    return G


ARCHS = {
    "twocnn": (lambda: TwoCNN(1, 10), (1, 28, 28)),
    "resnet18": (lambda: cifar_resnet18(3, 100), (3, 32, 32)),
    "efficientnet_b3": (lambda: efficientnet_b3(3, 100), (3, 32, 32)),
    "lstm": (lambda: NextCharLSTM(80, hidden_size=64), (80,)),  # 2 layers, hidden units
}


def _inputs(arch: str, shape, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if arch == "lstm":  # character indices
        return torch.randint(0, 80, (batch, *shape), generator=g)
    return torch.randn(batch, *shape, generator=g)


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_compact_equals_masked_dense(arch, train):
    build, shape = ARCHS[arch]
    net = build()
    _randomise(net, 0)
    example = _inputs(arch, shape, 1, 5)
    masks, tau = hybrid_mask(net, _guidance(net, 1), 0.3, example)
    removal = structured_removal(net, _guidance(net, 1), tau, example)
    assert removal, "the guidance must remove some units"
    if arch == "lstm":  # both layers lose hidden units, different ones
        assert removal["lstm.l0"] != removal["lstm.l1"]
    apply_masks(net, masks)
    small, index = compact(net, removal, example)
    dense_n = sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for p in small.parameters()) < dense_n
    assert list(small.state_dict()) == list(net.state_dict())  # same names, smaller shapes
    x = _inputs(arch, shape, 4, 2)
    net.train(train), small.train(train)
    if arch == "efficientnet_b3":  # dropout draws differ in size; stochastic depth does not
        net.classifier[0].p = small.classifier[0].p = 0.0
    with torch.no_grad():
        torch.manual_seed(3)
        a = net(x)
        torch.manual_seed(3)
        b = small(x)
    assert a.abs().max() > 0.1  # a real signal, not vanishing activations
    assert (a - b).abs().max() <= 1e-5 * max(1.0, float(a.abs().max()))


def test_removal_masks_zero_exactly_what_compaction_drops():
    net = cifar_resnet18(3, 10)
    example = torch.zeros(1, 3, 32, 32)
    removal = {"conv1": [7, 9], "layer2.0.conv1": [0, 5, 6], "layer4.1.conv1": [100]}
    masks = removal_masks(net, removal, example)
    _, index = compact(net, removal, example)
    for name in dict(net.named_parameters()):
        assert int(masks[name].sum()) == index[name].numel(), name
    assert not masks["conv1.weight"][[7, 9]].any() and not masks["bn1.bias"][[7, 9]].any()
    assert not masks["layer1.0.conv2.weight"][[7, 9]].any()  # the residual stream's producers
    assert not masks["layer2.0.conv2.weight"][:, [0, 5, 6]].any()  # consumer's input slice


def test_round_trip_dense_compact_dense():
    torch.manual_seed(0)
    net = cifar_resnet18(3, 10)
    _randomise(net, 4)
    example = torch.zeros(1, 3, 32, 32)
    removal = {"conv1": [1, 2, 3], "layer3.0.conv1": list(range(0, 256, 3)), "layer4.0.conv2": [4]}
    masks = removal_masks(net, removal, example)
    apply_masks(net, masks)
    small, index = compact(net, removal, example)
    template = {n: torch.zeros_like(t) for n, t in net.state_dict().items()}
    dense = expand(template, small.state_dict(), index)
    for name, p in net.named_parameters():  # parameters come back exactly, zeros where removed
        assert torch.equal(dense[name], p.detach()), name
    fresh = cifar_resnet18(3, 10)  # other values: the dense state written back is all it holds
    fresh.load_state_dict(dense)
    again, index2 = compact(fresh, removal, example)
    for name, t in small.state_dict().items():
        assert torch.equal(again.state_dict()[name], t), name
    assert all(torch.equal(index2[n], index[n]) for n in index)


def test_empty_removal_is_an_equal_copy_and_bad_keys_are_named():
    net = TwoCNN(1, 10, 4)
    small, index = compact(net, {}, torch.zeros(1, 1, 28, 28))
    for p, q in zip(net.parameters(), small.parameters(), strict=True):
        assert torch.equal(p, q) and p is not q
    with pytest.raises(KeyError, match="features.1"):
        compact(net, {"features.1": [0]}, torch.zeros(1, 1, 28, 28))


def test_compact_twocnn_costs_by_hand():
    """TwoCNN(1, 10, hidden 32) on 28×28 without 5 conv1 filters, 10 conv2 filters and 100
    fc1 neurons: conv1 27·25·26², conv2 54·27·25·12², the pool 54·49, fc1 54·49·412, fc2
    412·10 multiply-adds (fvcore counts no bias)."""
    net = TwoCNN(1, 10)
    example = torch.zeros(1, 1, 28, 28)
    removal = {"features.0": list(range(5)), "features.3": list(range(10, 20)),
               "classifier.2": list(range(100, 200))}
    small, index = compact(net, removal, example)
    c1, c2, f = 27, 54, 412
    flops = c1 * 25 * 26 * 26 + c2 * c1 * 25 * 144 + c2 * 49 + c2 * 49 * f + f * 10
    prof = profile_flops(small, example)
    assert prof.total == flops
    # an unstructured half of fc1 inside the compact model halves its FLOPs
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in small.named_parameters()}
    masks["classifier.2.weight"][: f // 2] = False
    assert effective_flops(prof, masks, small) == flops - c2 * 49 * f / 2
    # bytes: 4 B per compact value; the masked tensor sends nnz values plus its bitmask
    numel = {n: p.numel() for n, p in small.named_parameters()}
    assert numel["features.3.weight"] == c2 * c1 * 25
    assert numel["classifier.2.weight"] == c2 * 49 * f
    down, up = transfer_bytes(dict(small.named_parameters()), masks)
    total = sum(numel.values())
    fc1 = numel["classifier.2.weight"]
    assert up == 4 * (total - fc1 // 2)
    assert down == up + math.ceil(fc1 / 8)


def test_compact_masks_gather_the_dense_mask():
    net = TwoCNN(1, 10, 4)
    example = torch.zeros(1, 1, 28, 28)
    small, index = compact(net, {"features.0": [1]}, example)
    dense = {n: torch.rand(p.shape) > 0.5 for n, p in net.named_parameters()}
    inside = compact_masks(dense, index)
    assert torch.equal(inside["features.0.weight"], dense["features.0.weight"][[0, 2, 3]])
    assert torch.equal(inside["features.3.weight"], dense["features.3.weight"][:, [0, 2, 3]])
    assert torch.equal(inside["classifier.4.weight"], dense["classifier.4.weight"])
