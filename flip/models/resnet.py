"""ResNet-18 for 32×32 inputs, built from torchvision's ResNet-18."""

from torch import nn
from torchvision.models import resnet18


def cifar_resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: 3×3 stride-1 first convolution, no max-pool.

    Input ``(B, in_channels, 32, 32)`` (any size ≥ 8 works), output logits ``(B, num_classes)``.
    Source: He et al. (2016) as used on CIFAR-100 in AutoFLIP (arXiv 2405.10271) §5.
    """
    net = resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net
