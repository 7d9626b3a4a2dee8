"""Network modules (plain ``nn.Module``s); the LightningModule in :mod:`flip.federation.client` owns
loss, metrics and optimizer."""

from flip.models.efficientnet import efficientnet_b3
from flip.models.init import init_weights
from flip.models.lstm import NextCharLSTM
from flip.models.resnet import cifar_resnet18
from flip.models.twocnn import TwoCNN, femnist_cnn
from flip.models.vgg import vgg11

__all__ = [
    "NextCharLSTM",
    "TwoCNN",
    "cifar_resnet18",
    "efficientnet_b3",
    "femnist_cnn",
    "init_weights",
    "vgg11",
]
