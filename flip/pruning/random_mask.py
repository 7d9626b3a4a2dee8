"""Random pruning's mask: a fixed, uniformly random mask at a given density (ALGORITHMS.md §3.3)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


def random_mask(
    shapes: Mapping[str, torch.Size], kept: int, generator: torch.Generator
) -> dict[str, Tensor]:
    """Bool masks for the tensors ``shapes`` keeping exactly ``kept`` entries in all, drawn
    uniformly without replacement over the concatenation of every entry (one global draw, so
    each layer keeps about the same fraction). ``generator`` (CPU) fixes the draw. Returns one
    bool tensor per name, of its shape, on the CPU. Raises ``ValueError`` unless
    0 ≤ kept ≤ total entries.
    """
    sizes = [int(torch.Size(s).numel()) for s in shapes.values()]
    total = sum(sizes)
    if not 0 <= kept <= total:
        raise ValueError(f"cannot keep {kept} of {total} entries")
    flat = torch.zeros(total, dtype=torch.bool)
    flat[torch.randperm(total, generator=generator)[:kept]] = True
    out, start = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes, strict=True):
        out[name] = flat[start : start + size].view(shape)
        start += size
    return out
