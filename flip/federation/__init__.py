"""The federated round shared by every algorithm (ALGORITHMS.md §1)."""

from flip.federation.client import ClientModule, classification_metrics
from flip.federation.server import ClientUpdate, Federation, build_server_optimizer

__all__ = [
    "ClientModule",
    "ClientUpdate",
    "Federation",
    "build_server_optimizer",
    "classification_metrics",
]
