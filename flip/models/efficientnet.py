"""EfficientNet-B3 from torchvision, with flip's (in_channels, num_classes) interface."""

from torch import nn
from torchvision.models import efficientnet_b3 as tv_efficientnet_b3


def efficientnet_b3(
    in_channels: int = 3, num_classes: int = 100, dropout: float = 0.3
) -> nn.Module:
    """torchvision's EfficientNet-B3 (Tan & Le 2019), randomly initialised (no download):
    MBConv blocks with depthwise convolutions, squeeze-excitation and residual sums, SiLU,
    classifier ``Dropout(dropout) → Linear(1536, num_classes)``. Input ``(B, in_channels, H,
    W)`` (any H, W ≥ 32: an adaptive pool precedes the classifier; 300 is the native size),
    logits ``(B, num_classes)``. ``in_channels`` ≠ 3 replaces the stem convolution by one of
    that many input channels. Issue 3 uses it to test compaction on a modern architecture."""
    net = tv_efficientnet_b3(weights=None, num_classes=num_classes, dropout=dropout)
    if in_channels != 3:
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(
            in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding,
            bias=False,
        )
    return net
