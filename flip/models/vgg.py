"""VGG-11 without batch norm, the network of PR-FL's CIFAR-10 cell (ASYNC.md §4)."""

from torch import Tensor, nn

VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
"""Conv output channels, ``M`` a 2×2 max-pool (stride 2)."""


class VGG(nn.Module):
    """3×3 convolutions (padding 1, ReLU) and 2×2 max-pools as ``layers`` gives them, then
    Linear 512 → 512, ReLU, Linear 512 → 512, ReLU, Linear 512 → ``num_classes``. No batch
    norm. Input ``(B, in_channels, 32, 32)`` (five pools leave 1×1), logits
    ``(B, num_classes)``. Source: PR-FL's released code (bases/nn/models/vgg.py, VGG11 with
    ``batch_norm = False``)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, layers=VGG11_LAYERS):
        super().__init__()
        blocks, channels = [], in_channels
        for spec in layers:
            if spec == "M":
                blocks.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                blocks += [nn.Conv2d(channels, spec, kernel_size=3, padding=1), nn.ReLU()]
                channels = spec
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def vgg11(in_channels: int = 3, num_classes: int = 10) -> VGG:
    """VGG-11 without batch norm (:class:`VGG` with :data:`VGG11_LAYERS`)."""
    return VGG(in_channels, num_classes)
