"""Pure pruning functions: guidance matrix, threshold, masks (ALGORITHMS.md §2)."""

from flip.pruning.guidance import guidance_matrix, squared_displacement
from flip.pruning.masks import apply_masks, hybrid_mask, mask_density
from flip.pruning.structured import output_layer, prunable_names, structured_mask
from flip.pruning.threshold import global_threshold, unstructured_mask

__all__ = [
    "apply_masks",
    "global_threshold",
    "guidance_matrix",
    "hybrid_mask",
    "mask_density",
    "output_layer",
    "prunable_names",
    "squared_displacement",
    "structured_mask",
    "unstructured_mask",
]
