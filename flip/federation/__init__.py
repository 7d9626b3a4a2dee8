"""The federated round shared by every algorithm (ALGORITHMS.md §1) and the executor seam where
clients train (ENGINES.md §1)."""

from flip.federation.aggregation import build_server_optimizer
from flip.federation.callbacks import CallbackSpec
from flip.federation.client import ClientModule, classification_metrics
from flip.federation.executor import ClientJob, ClientUpdate, Executor, LocalExecutor
from flip.federation.server import Federation

__all__ = [
    "CallbackSpec",
    "ClientJob",
    "ClientModule",
    "ClientUpdate",
    "Executor",
    "Federation",
    "LocalExecutor",
    "build_server_optimizer",
    "classification_metrics",
]
