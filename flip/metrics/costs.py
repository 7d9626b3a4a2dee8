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


def _weight_names(module: nn.Module) -> list[str]:
    """The weight parameters that carry a module's FLOPs: ``weight`` (Conv, Linear, norm,
    Embedding) or, for recurrent layers, every ``weight_*`` (``weight_ih_l0``, ``weight_hh_l0``,
    ...). Empty for a module without weights."""
    if isinstance(module._parameters.get("weight"), Tensor):
        return ["weight"]
    return [n for n, p in module._parameters.items() if n.startswith("weight_") and p is not None]


def _weighted_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if _weight_names(m)}


def recurrent_flop_jit(inputs, outputs) -> int:
    """fvcore handle for ``aten::lstm`` (also ``aten::gru``, ``aten::rnn_tanh``/``rnn_relu``).

    Counts the matrix-vector products of every step: per sample and time step, each 2-D weight
    matrix W (gates × inputs) costs ``numel(W)`` multiply-adds. For an LSTM layer with input size
    I and hidden size H that is ``4·H·(I + H)`` per step (the four gates' ``W_ih x + W_hh h``),
    summed over layers and directions (and ``W_hr`` when ``proj_size`` > 0). Not counted, as for
    fvcore's Linear: bias additions, the gate nonlinearities (sigmoid, tanh) and the elementwise
    cell updates (about 6·H per step). Steps = every position of the input: ``B·T`` for a padded
    ``(B, T, I)``/``(T, B, I)`` input, the packed length for a ``PackedSequence``.
    Units: FLOPs (one multiply-add = 1), for the whole traced batch. Source: ALGORITHMS.md §4.
    """
    from fvcore.nn.jit_handles import get_shape

    packed = inputs[1].type().kind() == "TensorType"  # lstm.data(data, batch_sizes, hx, params)
    params = inputs[3] if packed else inputs[2]
    x = get_shape(inputs[0])
    steps = math.prod(x[:-1])
    shapes = [get_shape(v) for v in params.node().inputs()]
    return steps * sum(s[0] * s[1] for s in shapes if s is not None and len(s) == 2)


RECURRENT_OPS = ("aten::lstm", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu")
"""The recurrent ops :func:`profile_flops` counts with :func:`recurrent_flop_jit`."""


def profile_flops(model: nn.Module, example: tuple[int, ...] | Tensor) -> FlopsProfile:
    """Count the dense forward FLOPs of ``model`` for one sample with fvcore.

    ``example`` is either one sample's shape without the batch dimension, e.g. ``(1, 28, 28)``
    (the count then runs on a float zero batch ``(1, *shape)``), or an example batch of one
    sample, e.g. ``dm.example_input()`` (int64 character indices ``(1, 80)`` for Shakespeare).
    The count runs on the model's device (CPU if it has no parameters) in eval mode and
    no-grad; the model's training flag is restored afterwards. Recurrent layers (nn.LSTM, GRU,
    RNN) are counted by :func:`recurrent_flop_jit` (fvcore alone counts them 0). fvcore's
    warnings about unsupported ops / uncalled modules are silenced (unsupported ops, e.g.
    embedding lookups, count 0). Raises ``ValueError`` for an example batch of more than one
    sample, and whatever the model's forward raises for a wrong shape. Source: ALGORITHMS.md §4.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if isinstance(example, Tensor):
        if example.shape[0] != 1:
            raise ValueError(f"example batch must hold one sample, got {tuple(example.shape)}")
        x = example.to(device)
    else:
        x = torch.zeros((1, *example), device=device)
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
                .set_op_handle(**dict.fromkeys(RECURRENT_OPS, recurrent_flop_jit))
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
    weight's shape); for a recurrent layer, nnz / numel over all its ``weight_*`` masks
    (its FLOPs are proportional to their sizes); 1 for a weight without a mask or with
    ``masks=None``. Bias masks are ignored
    (bias FLOPs are not counted by fvcore). ``profile`` must come from :func:`profile_flops` on the
    same (possibly structurally shrunk) ``model``. Raises ``ValueError`` for a mask naming no
    parameter of ``model`` or having the wrong shape. Source: ALGORITHMS.md §4.
    """
    masks = masks or {}
    _check_masks(masks, {n: p.shape for n, p in model.named_parameters()})
    flops = float(profile.other)
    modules = dict(model.named_modules())
    for layer, layer_flops in profile.by_layer.items():
        prefix = f"{layer}." if layer else ""
        names = [prefix + w for w in _weight_names(modules[layer])] if layer in modules else []
        if len(names) <= 1:
            mask = masks.get(names[0] if names else f"{prefix}weight")
            flops += layer_flops * (_density(mask) if mask is not None else 1.0)
            continue
        params = dict(model.named_parameters())
        kept = sum(
            int(torch.count_nonzero(masks[n])) if n in masks else params[n].numel() for n in names
        )
        flops += layer_flops * kept / sum(params[n].numel() for n in names)
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
