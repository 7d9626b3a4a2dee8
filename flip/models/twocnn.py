"""TwoCNN: the two-convolution network of McMahan et al. (2017), as AutoFLIP's code builds it."""

from torch import Tensor, nn


class TwoCNN(nn.Module):
    """Two 5×5 conv blocks (padding 1, ReLU, 2×2 max-pool with padding 1), 7×7 adaptive average
    pool, FC ``fc_size`` (512), FC ``num_classes``.

    Channels are ``hidden_size`` then ``2·hidden_size``. Input ``(B, in_channels, H, W)``, output
    logits ``(B, num_classes)``. Source: AutoFLIP (arXiv 2405.10271) §5 and its released code.
    """

    def __init__(
        self, in_channels: int, num_classes: int, hidden_size: int = 32, fc_size: int = 512
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, hidden_size, kernel_size=5, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, padding=1),
            nn.Conv2d(hidden_size, 2 * hidden_size, kernel_size=5, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, padding=1),
        )
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d((7, 7)),
            nn.Flatten(),
            nn.Linear(2 * hidden_size * 7 * 7, fc_size),
            nn.ReLU(),
            nn.Linear(fc_size, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def femnist_cnn(in_channels: int = 1, num_classes: int = 62, hidden_size: int = 64) -> TwoCNN:
    """The FEMNIST CNN: TwoCNN's shape with FC 2048 and 62 classes, conv channels
    ``hidden_size`` and ``2·hidden_size`` (64 and 128: the released AutoFLIP command passes
    ``--model_name FEMNISTCNN --hidden_size 64``). Input ``(B, 1, 28, 28)``, logits ``(B, 62)``.
    Source: AutoFLIP (arXiv 2405.10271) §5 and its released code."""
    return TwoCNN(in_channels, num_classes, hidden_size=hidden_size, fc_size=2048)
