"""Image data sets (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100): static facts, splits in memory
as uint8 tensors, transforms, and the per-client view a DataLoader reads.

Reading the files is :mod:`flip.data.image_files` (:func:`~flip.data.image_files.load_dataset`).
Source: ``/work/shared/spec/DATA.md`` (table of data sets).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from flip.params import check_choice

DEBIAN_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a supported data set (known before any file is read).

    ``shape`` is (C, H, W) of the stored images; ``mean``/``std`` are the per-channel
    normalisation constants of the training split on the [0, 1] scale.
    """

    title: str
    num_classes: int
    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("MNIST", 10, (1, 28, 28), (0.1307,), (0.3081,)),
    "fmnist": DatasetInfo("Fashion-MNIST", 10, (1, 28, 28), (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo(
        "CIFAR-10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": DatasetInfo(
        "CIFAR-100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
}
DATASET_NAMES = ", ".join(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of ``name``.

    Raises:
        ConfigError: ``data.name`` is not one of mnist, fmnist, cifar10, cifar100.
    """
    return DATASETS[check_choice("data.name", name, DATASETS)]


@dataclass
class ImageSet:
    """One split of an image data set held in memory.

    Attributes:
        images: uint8 tensor (N, C, H, W), pixel values 0..255.
        labels: int64 tensor (N,), values in 0..num_classes-1.
        num_classes: number of classes of the data set (not only those present).
        mean, std: per-channel normalisation constants on the [0, 1] scale.
        name: data set name (``mnist``, ``fmnist``, ``cifar10``, ``cifar100``).
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])



def build_transform(
    imageset: ImageSet,
    train: bool,
    resize: int | None = None,
    hflip: bool = False,
    color_jitter: float | None = None,
) -> v2.Compose:
    """Transform for one uint8 image tensor (C, H, W) -> normalised float32 (C, H', W').

    Order: optional ``Resize((resize, resize))``; on training only ``RandomHorizontalFlip`` (if
    ``hflip``) and ``ColorJitter(brightness=contrast=saturation=color_jitter)`` (if set); then
    ``ToDtype(float32, scale=True)`` and ``Normalize(imageset.mean, imageset.std)``. Test
    transforms (``train=False``) are deterministic (DATA.md: local test sets use test transforms).
    """
    steps: list = []
    if resize is not None:
        steps.append(v2.Resize((int(resize), int(resize)), antialias=True))
    if train and hflip:
        steps.append(v2.RandomHorizontalFlip())
    if train and color_jitter:
        cj = float(color_jitter)
        steps.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(imageset.mean, imageset.std)]
    return v2.Compose(steps)


class ClientDataset(Dataset):
    """The samples ``indices`` of a shared image tensor, transformed on access.

    Args:
        images: uint8 tensor (N, C, H, W), shared by all clients (not copied).
        labels: int64 tensor (N,).
        indices: positions into ``images`` (any integer sequence / array).
        transform: callable mapping a uint8 (C, H, W) tensor to a float tensor (C, H', W').

    Items are ``(x, y)``: ``x`` float32 (C, H', W'), ``y`` Python int.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices, transform):
        self.images = images
        self.labels = labels
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        return self.transform(self.images[j]), int(self.labels[j])
