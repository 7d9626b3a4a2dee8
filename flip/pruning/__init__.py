"""Pure pruning functions: guidance matrix, threshold, masks (ALGORITHMS.md §2), and the
baselines' masks and sub-models (§3)."""

from flip.pruning.compaction import (
    CompactLayout,
    compact,
    compact_masks,
    expand,
    kept_positions,
    removal_chain,
    removal_masks,
)
from flip.pruning.greedy import (
    decrease_fraction,
    greedy_select,
    magnitude_core,
    reconfigure,
    reconfigure_network,
    swap_pruned,
)
from flip.pruning.guidance import guidance_matrix, squared_displacement
from flip.pruning.lstm_units import (
    CompactLSTM,
    gate_rows,
    lstm_consumers,
    lstm_layers,
    lstm_unit_masks,
    lstm_unit_scores,
    prune_lstm_units,
    unit_key,
)
from flip.pruning.masks import apply_masks, hybrid_mask, mask_density
from flip.pruning.random_mask import random_mask
from flip.pruning.structured import (
    output_layer,
    prunable_names,
    structured_mask,
    structured_removal,
)
from flip.pruning.submodel import (
    extract_submodel,
    l1_removal,
    l1_unit_scores,
    scatter_submodel,
    units_to_remove,
)
from flip.pruning.threshold import global_threshold, unstructured_mask

__all__ = [
    "CompactLayout",
    "CompactLSTM",
    "apply_masks",
    "compact",
    "compact_masks",
    "decrease_fraction",
    "expand",
    "extract_submodel",
    "gate_rows",
    "global_threshold",
    "greedy_select",
    "guidance_matrix",
    "hybrid_mask",
    "kept_positions",
    "l1_removal",
    "l1_unit_scores",
    "lstm_consumers",
    "lstm_layers",
    "lstm_unit_masks",
    "lstm_unit_scores",
    "magnitude_core",
    "mask_density",
    "output_layer",
    "prunable_names",
    "prune_lstm_units",
    "random_mask",
    "reconfigure",
    "reconfigure_network",
    "removal_chain",
    "removal_masks",
    "scatter_submodel",
    "squared_displacement",
    "structured_mask",
    "structured_removal",
    "swap_pruned",
    "unit_key",
    "units_to_remove",
    "unstructured_mask",
]
