"""Metrics: compute and communication costs (ALGORITHMS.md §4)."""

from flip.metrics.costs import (
    GB,
    FlopsProfile,
    effective_flops,
    param_counts,
    profile_flops,
    training_flops,
    transfer_bytes,
)

__all__ = [
    "GB",
    "FlopsProfile",
    "effective_flops",
    "param_counts",
    "profile_flops",
    "training_flops",
    "transfer_bytes",
]
