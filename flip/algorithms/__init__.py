"""Federated algorithms: each a small class overriding hooks of the shared round."""

from flip.algorithms.asynchronous import AsyncAlgorithm, FedAsync, FedBuff
from flip.algorithms.autoflip import AutoFLIP
from flip.algorithms.base import Algorithm, FedAvg
from flip.algorithms.eflprune import EFLPrune
from flip.algorithms.prfl import PRFL
from flip.algorithms.prunefl import PruneFL
from flip.algorithms.random_pruning import RandomPruning

__all__ = [
    "PRFL",
    "Algorithm",
    "AsyncAlgorithm",
    "AutoFLIP",
    "EFLPrune",
    "FedAsync",
    "FedAvg",
    "FedBuff",
    "PruneFL",
    "RandomPruning",
]
