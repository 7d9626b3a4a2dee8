"""Federated algorithms: each a small class overriding hooks of the shared round."""

from flip.algorithms.autoflip import AutoFLIP
from flip.algorithms.base import Algorithm, FedAvg

__all__ = ["Algorithm", "AutoFLIP", "FedAvg"]
