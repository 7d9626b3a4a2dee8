"""Cost accounting (ALGORITHMS.md §4): FLOPs against hand counts and torch's counter, bytes,
parameter counts."""

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from flip.metrics import (
    GB,
    effective_flops,
    param_counts,
    profile_flops,
    training_flops,
    transfer_bytes,
)
from flip.models import TwoCNN, cifar_resnet18
from flip.pruning import compact

# Hand counts, fvcore convention (multiply-add = 1, bias not counted). TwoCNN: 5×5 convs with
# padding 1 shrink H by 2; MaxPool2d(2, padding=1) maps H to H // 2 + 1; the 7×7 adaptive average
# pool counts one FLOP per input element; biases are free.
FMNIST = {  # (1, 28, 28): 28 → conv 26 → pool 14 → conv 12 → pool 7
    "features.0": 26 * 26 * 32 * (5 * 5 * 1),
    "features.3": 12 * 12 * 64 * (5 * 5 * 32),
    "classifier.2": (64 * 7 * 7) * 512,
    "classifier.4": 512 * 10,
}
FMNIST_OTHER = 64 * 7 * 7  # adaptive avg pool on a 7×7 input
CIFAR = {  # (3, 32, 32): 32 → conv 30 → pool 16 → conv 14 → pool 8
    "features.0": 30 * 30 * 32 * (5 * 5 * 3),
    "features.3": 14 * 14 * 64 * (5 * 5 * 32),
    "classifier.2": (64 * 7 * 7) * 512,
    "classifier.4": 512 * 10,
}
CIFAR_OTHER = 64 * 8 * 8  # adaptive avg pool on an 8×8 input


@pytest.mark.parametrize(
    ("in_channels", "shape", "layers", "other"),
    [(1, (1, 28, 28), FMNIST, FMNIST_OTHER), (3, (3, 32, 32), CIFAR, CIFAR_OTHER)],
)
def test_twocnn_matches_hand_count(in_channels, shape, layers, other):
    model = TwoCNN(in_channels, 10, hidden_size=32)
    prof = profile_flops(model, shape)
    assert prof.by_layer == layers
    assert prof.other == other
    assert prof.total == sum(layers.values()) + other
    assert model.training  # eval only for the count


def test_fmnist_total_is_the_known_number():
    assert profile_flops(TwoCNN(1, 10), (1, 28, 28)).total == 9_527_488


def test_eval_mode_is_restored():
    model = TwoCNN(1, 10).eval()
    profile_flops(model, (1, 28, 28))
    assert not model.training


def _torch_conv_linear_flops(model: nn.Module, shape) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    return counter.get_total_flops()


def _compacted(model: nn.Module, shape, removal: dict) -> nn.Module:
    return compact(model, removal, torch.zeros(1, *shape))[0]


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (TwoCNN(1, 10), (1, 28, 28)),
        (TwoCNN(3, 10), (3, 32, 32)),
        (cifar_resnet18(3, 100), (3, 32, 32)),
        (_compacted(TwoCNN(1, 10), (1, 28, 28),
                    {"features.0": [0, 5, 9], "features.3": list(range(0, 64, 3)),
                     "classifier.2": list(range(200))}), (1, 28, 28)),
        (_compacted(cifar_resnet18(3, 100), (3, 32, 32),
                    {"conv1": list(range(10)), "layer3.1.conv1": list(range(0, 256, 2)),
                     "layer4.0.conv1": list(range(300))}), (3, 32, 32)),
    ],
    ids=["twocnn-fmnist", "twocnn-cifar", "resnet18-cifar100", "twocnn-compact",
         "resnet18-compact"],
)
def test_cross_check_with_torch_flop_counter(model, shape):
    prof = profile_flops(model, shape)
    modules = dict(model.named_modules())
    conv_linear = sum(
        f for name, f in prof.by_layer.items() if isinstance(modules[name], nn.Conv2d | nn.Linear)
    )
    assert conv_linear > 0
    assert 2 * conv_linear == pytest.approx(_torch_conv_linear_flops(model, shape), rel=0.01)


def test_resnet_layers_include_batch_norm_and_sum_below_total():
    model = cifar_resnet18(3, 100)
    prof = profile_flops(model, (3, 32, 32))
    assert prof.by_layer["bn1"] > 0 and prof.by_layer["conv1"] == 32 * 32 * 64 * (3 * 3 * 3)
    assert prof.other == 512 * 4 * 4  # the adaptive average pool before fc
    assert prof.by_layer["fc"] == 512 * 100


def test_effective_flops_scales_only_masked_layers():
    model = TwoCNN(1, 10)
    prof = profile_flops(model, (1, 28, 28))
    assert effective_flops(prof, None, model) == prof.total
    mask = torch.ones(512, 3136, dtype=torch.bool)
    mask[:256] = False  # half of fc1
    assert effective_flops(prof, {"classifier.2.weight": mask}, model) == (
        prof.total - FMNIST["classifier.2"] / 2
    )
    # float 0/1 masks, a quarter of conv2 kept, plus an all-ones fc2 mask and a bias mask (ignored)
    conv2 = torch.zeros(64, 32, 5, 5)
    conv2[:16] = 1.0
    masks = {
        "features.3.weight": conv2,
        "classifier.4.weight": torch.ones(10, 512),
        "classifier.4.bias": torch.zeros(10),
    }
    expected = prof.total - FMNIST["features.3"] * 3 / 4
    assert effective_flops(prof, masks, model) == expected


def test_effective_flops_rejects_bad_masks():
    model = TwoCNN(1, 10)
    prof = profile_flops(model, (1, 28, 28))
    with pytest.raises(ValueError, match="names no parameter"):
        effective_flops(prof, {"nope.weight": torch.ones(3)}, model)
    with pytest.raises(ValueError, match="shape"):
        effective_flops(prof, {"classifier.4.weight": torch.ones(10, 3)}, model)


def test_training_flops():
    assert training_flops(9_527_488, 100) == 3 * 9_527_488 * 100


def test_transfer_bytes_hand_example():
    mask = torch.zeros(10, dtype=torch.bool)
    mask[[1, 4, 7]] = True
    params = {"w": torch.randn(10), "b": torch.randn(5)}
    assert transfer_bytes({"w": params["w"]}, {"w": mask}) == (4 * 3 + 2, 4 * 3)
    # unmasked tensor alongside: dense 4·5 each way
    assert transfer_bytes(params, {"w": mask.float()}) == (14 + 20, 12 + 20)
    # ceil(17/8) = 3 bitmask bytes
    m17 = torch.ones(17)
    m17[0] = 0
    assert transfer_bytes({"x": torch.randn(17)}, {"x": m17}) == (4 * 16 + 3, 4 * 16)


def test_all_ones_mask_equals_dense():
    params = {n: p.detach() for n, p in TwoCNN(1, 10).named_parameters()}
    ones = {n: torch.ones_like(p, dtype=torch.bool) for n, p in params.items()}
    dense = transfer_bytes(params, None)
    numel = sum(p.numel() for p in params.values())
    assert dense == (4 * numel, 4 * numel)
    assert transfer_bytes(params, ones) == dense
    assert param_counts(params, ones) == param_counts(params, None)


def test_param_counts():
    params = {"a": torch.randn(4, 5), "b": torch.randn(10)}
    mask = torch.zeros(4, 5)
    mask[0] = 1  # keep 5 of 20
    counts = param_counts(params, {"a": mask})
    assert counts["params"] == 30
    assert counts["nonzero_params"] == 15
    assert counts["density"] == pytest.approx(0.5)
    assert counts["sparsity"] == pytest.approx(0.5)
    assert counts["compression_ratio"] == pytest.approx(2.0)
    assert param_counts({"a": params["a"]}, {"a": torch.zeros(4, 5)})["compression_ratio"] == (
        math.inf
    )
    with pytest.raises(ValueError, match="names no parameter"):
        param_counts(params, {"c": mask})


def test_twocnn_param_count_is_the_known_number():
    params = dict(TwoCNN(1, 10).named_parameters())
    assert param_counts(params, None)["params"] == 1_663_370
    assert GB == 10**9
