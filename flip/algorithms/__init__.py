"""Federated algorithms: each a small class overriding hooks of the shared round."""

from flip.algorithms.autoflip import AutoFLIP
from flip.algorithms.base import Algorithm, FedAvg
from flip.algorithms.eflprune import EFLPrune
from flip.algorithms.prunefl import PruneFL
from flip.algorithms.random_pruning import RandomPruning

__all__ = ["Algorithm", "AutoFLIP", "EFLPrune", "FedAvg", "PruneFL", "RandomPruning"]
