"""Network modules (plain ``nn.Module``s); the LightningModule in :mod:`flip.federation.client` owns
loss, metrics and optimizer."""

from flip.models.init import init_weights
from flip.models.resnet import cifar_resnet18
from flip.models.twocnn import TwoCNN

__all__ = ["TwoCNN", "cifar_resnet18", "init_weights"]
