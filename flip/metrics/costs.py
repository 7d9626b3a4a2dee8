"""Compute and communication costs: FLOPs, bytes and parameter counts.

Every function follows the binding conventions of ``ALGORITHMS.md`` §4: FLOPs as fvcore counts
them (one multiply-add = 1 FLOP, forward pass, per sample); training = 3 × forward × samples;
float32 values at 4 B; a masked tensor travels as its kept values plus (download only) a bitmask;
compression ratio = dense parameters / nonzero parameters.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

with warnings.catch_warnings():  # fvcore.nn imports torch.jit.script, deprecated in torch ≥ 2.9
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

GB = 1e9
"""Bytes in a gigabyte (10^9, ALGORITHMS.md §4)."""

BYTES_PER_VALUE = 4
"""Bytes per transmitted value (float32)."""


@dataclass(frozen=True)
class FlopsProfile:
    """Dense forward FLOPs of one sample through a model (fvcore: one multiply-add = 1 FLOP).

    ``total``: the whole forward pass. ``by_layer``: FLOPs of each module that owns a ``weight``
    parameter, keyed by module name (``features.0``). ``other``: ``total - sum(by_layer)``, the
    FLOPs of weightless operations (pooling, ...), which masks never reduce.
    """

    total: int
    by_layer: dict[str, int]
    other: int


def _weighted_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m._parameters.get("weight"), Tensor)
    }


def profile_flops(model: nn.Module, input_shape: tuple[int, ...]) -> FlopsProfile:
    """Count the dense forward FLOPs of ``model`` for one sample with fvcore.

    ``input_shape`` is one sample's shape without the batch dimension, e.g. ``(1, 28, 28)``. The
    count runs on a zero batch of shape ``(1, *input_shape)`` on the model's device (CPU if it has
    no parameters) in eval mode and no-grad; the model's training flag is restored afterwards.
    fvcore's warnings about unsupported ops / uncalled modules are silenced (unsupported ops count
    0; nn.LSTM needs a registered handle). Raises whatever the model's forward raises for a wrong
    shape. Source: ALGORITHMS.md §4.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros((1, *input_shape), device=device)
    was_training = model.training
    logger = logging.getLogger("fvcore.nn.jit_analysis")
    old_level = logger.level
    logger.setLevel(logging.ERROR)
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            analysis = (
                FlopCountAnalysis(model, x)
                .unsupported_ops_warnings(False)
                .uncalled_modules_warnings(False)
            )
            total = int(analysis.total())
            per_module = analysis.by_module()
    finally:
        model.train(was_training)
        logger.setLevel(old_level)
    by_layer = {name: int(per_module.get(name, 0)) for name in _weighted_modules(model)}
    return FlopsProfile(total=total, by_layer=by_layer, other=total - sum(by_layer.values()))


def _density(mask: Tensor) -> float:
    return int(torch.count_nonzero(mask)) / mask.numel() if mask.numel() else 1.0


def _check_masks(masks: dict[str, Tensor], shapes: dict[str, torch.Size]) -> None:
    for name, mask in masks.items():
        if name not in shapes:
            raise ValueError(f"mask {name!r} names no parameter (known: {sorted(shapes)[:8]}...)")
        if mask.shape != shapes[name]:
            raise ValueError(
                f"mask {name!r} has shape {tuple(mask.shape)}, parameter {tuple(shapes[name])}"
            )


def effective_flops(
    profile: FlopsProfile, masks: dict[str, Tensor] | None, model: nn.Module
) -> float:
    """Forward FLOPs per sample of a masked model: Σ_l by_layer[l]·density_l + other.

    ``density_l`` = nnz / numel of the mask ``masks["<l>.weight"]`` (bool or 0/1 float, the
    weight's shape); 1 for a layer without a mask or with ``masks=None``. Bias masks are ignored
    (bias FLOPs are not counted by fvcore). ``profile`` must come from :func:`profile_flops` on the
    same (possibly structurally shrunk) ``model``. Raises ``ValueError`` for a mask naming no
    parameter of ``model`` or having the wrong shape. Source: ALGORITHMS.md §4.
    """
    masks = masks or {}
    _check_masks(masks, {n: p.shape for n, p in model.named_parameters()})
    flops = float(profile.other)
    for layer, layer_flops in profile.by_layer.items():
        mask = masks.get(f"{layer}.weight" if layer else "weight")
        flops += layer_flops * (_density(mask) if mask is not None else 1.0)
    return flops


def training_flops(flops_per_sample: float, samples: int) -> float:
    """Training FLOPs = 3 × forward FLOPs per sample × samples processed (forward + backward ≈ 2×
    forward). Units: FLOPs (multiply-add = 1). Source: ALGORITHMS.md §4."""
    return 3.0 * flops_per_sample * samples


def transfer_bytes(params: dict[str, Tensor], masks: dict[str, Tensor] | None) -> tuple[int, int]:
    """Bytes one client downloads and uploads for one round: ``(download, upload)``.

    Per tensor of ``numel`` values: dense (no mask, or an all-ones mask) down = up = 4·numel;
    masked (its mask has a zero) down = 4·nnz + ceil(numel/8) (values plus a bitmask, since clients
    hold no state), up = 4·nnz. Values count as float32 (4 B) whatever their dtype. ``masks`` is
    keyed like ``params``; bool or 0/1 tensors of the parameter's shape. Raises ``ValueError`` for
    a mask naming no tensor of ``params`` or of the wrong shape. Source: ALGORITHMS.md §4.
    """
    masks = masks or {}
    _check_masks(masks, {n: p.shape for n, p in params.items()})
    down = up = 0
    for name, p in params.items():
        numel = p.numel()
        mask = masks.get(name)
        nnz = int(torch.count_nonzero(mask)) if mask is not None else numel
        if nnz == numel:
            down += BYTES_PER_VALUE * numel
            up += BYTES_PER_VALUE * numel
        else:
            down += BYTES_PER_VALUE * nnz + math.ceil(numel / 8)
            up += BYTES_PER_VALUE * nnz
    return down, up


def param_counts(params: dict[str, Tensor], masks: dict[str, Tensor] | None) -> dict[str, float]:
    """Parameter counts of ``params`` under ``masks``.

    Returns ``params`` (total numel), ``nonzero_params`` (entries kept by the masks; an unmasked
    tensor counts fully), ``density`` (= nonzero / total), ``sparsity`` (= 1 − density) and
    ``compression_ratio`` (= params / nonzero_params; ``inf`` if nothing is kept). Raises
    ``ValueError`` like :func:`transfer_bytes`. Source: ALGORITHMS.md §4.
    """
    masks = masks or {}
    _check_masks(masks, {n: p.shape for n, p in params.items()})
    total = sum(p.numel() for p in params.values())
    kept = sum(
        int(torch.count_nonzero(masks[n])) if n in masks else p.numel() for n, p in params.items()
    )
    density = kept / total if total else 1.0
    return {
        "params": total,
        "nonzero_params": kept,
        "density": density,
        "sparsity": 1.0 - density,
        "compression_ratio": total / kept if kept else math.inf,
    }
