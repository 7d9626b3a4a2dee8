"""Client data held on the training device as tensors, batched by index (issue 3, GPU data path).

When a data set fits in the device's memory, its deterministic preprocessing (resize, to float,
normalise) runs once per split and the result stays on the device; every client indexes into
it. A training epoch is then one permutation of the client's positions and one gather per
batch: no per-batch host-to-device copy, no per-sample transform, no DataLoader worker
start-up. Training augmentations (horizontal flip, colour jitter) run per batch on the device
(:class:`BatchAugment`). Data modules (:class:`~flip.data.client_data.ClientDataModule`) fall
back to ``torch.utils.data.DataLoader`` otherwise (``data.device_data``, :func:`use_tensor_path`).

For a fixed seed :class:`DeviceBatches` yields exactly the batches (order and values) of
``DataLoader(dataset, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
drop_last=False)`` over the same preprocessed samples: it draws from its CPU generator what the
DataLoader draws, in the same order (see :meth:`DeviceBatches.__iter__`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import RandomSampler
from torchvision.transforms.v2 import functional as TF

from flip.params import check

DEVICE_DATA = ("auto", "true", "false")
BUDGET_FRACTION = 0.5  # share of the device's free memory ``auto`` may fill with data
PREPROCESS_CHUNK = 4096  # images preprocessed at once when a split is placed on the device


def parse_device_data(value) -> str:
    """``data.device_data`` as ``"auto"``, ``"true"`` or ``"false"`` (YAML booleans accepted).

    Raises:
        ConfigError: any other value.
    """
    text = str(value).lower() if isinstance(value, bool | str) else None
    check("data.device_data", value, text in DEVICE_DATA, "auto, true or false")
    return text


def free_memory_bytes(device: torch.device) -> int:
    """Bytes free on ``device``: ``torch.cuda.mem_get_info`` on CUDA; on the CPU the kernel's
    ``MemAvailable`` (``/proc/meminfo``), else free pages (``os.sysconf``); 0 if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 0
    return 0


def use_tensor_path(mode: str, device: torch.device | None, nbytes: int) -> bool:
    """Whether a data module serves tensors on ``device`` (True) or DataLoaders (False).

    ``mode`` ``"true"``: always (on the CPU when no device is known); ``"false"``: never;
    ``"auto"``: when a device is known (:meth:`use_device` was called) and ``nbytes`` (the
    preprocessed splits, bytes) fit in :data:`BUDGET_FRACTION` of its free memory
    (:func:`free_memory_bytes`). On the CPU ``auto`` uses tensors too when they fit: they skip
    the per-sample transforms and the collation, and the samples are the same.
    """
    if mode == "true":
        return True
    if mode == "false" or device is None:
        return False
    return nbytes <= BUDGET_FRACTION * free_memory_bytes(device)


def preprocess_on_device(images: Tensor, transform: Callable, device: torch.device) -> Tensor:
    """``transform`` applied to ``images`` (uint8 (N, C, H, W), any device) in chunks of
    :data:`PREPROCESS_CHUNK` on ``device``; float32 (N, C, H', W') on ``device``.

    ``transform`` is a deterministic torchvision v2 transform (the test transform of
    :func:`~flip.data.datasets.build_transform`: resize, ``ToDtype``, ``Normalize``); v2 treats
    a batch (N, C, H, W) as N images, so on the CPU each output equals ``transform`` of the
    single image (tested).
    """
    chunks = [transform(images[i:i + PREPROCESS_CHUNK].to(device))
              for i in range(0, len(images), PREPROCESS_CHUNK)]
    return torch.cat(chunks) if chunks else transform(images.to(device))


def augment_seed(seed: int) -> int:
    """Seed of a client's on-device augmentation generator, derived from its client ``seed``
    (NumPy ``SeedSequence([seed, 1])``) so it is not the shuffling generator's stream."""
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0] & 0x7FFFFFFF)


class BatchAugment:
    """Training augmentations of a batch on its device, with per-sample random draws.

    The counterpart of :func:`~flip.data.datasets.build_transform`'s training steps
    (``RandomHorizontalFlip(p)`` and ``ColorJitter(brightness=contrast=saturation=
    color_jitter)``) for normalised float batches ``x`` (B, C, H, W) on any device: each
    sample is flipped with probability ``p``; colour jitter draws per sample a brightness,
    contrast and saturation factor uniformly from ``[max(0, 1 - color_jitter),
    1 + color_jitter]`` and applies torchvision's ``adjust_brightness``, ``adjust_contrast``,
    ``adjust_saturation`` (same formulas, per-sample factors) to the un-normalised [0, 1] image
    (``x · std + mean``), which is normalised again afterwards.

    Differences from the DataLoader path: the draws come from ``generator`` (a
    ``torch.Generator`` on the batch's device, seeded from the client seed), not from torch's
    global CPU RNG per sample, so the random flips and factors cannot match torchvision's; the
    jitter runs on float images, not on uint8 (no rounding to 1/255 steps); and the three
    adjustments run in a fixed order (brightness, contrast, saturation) instead of a random
    order per sample. Without augmentation nothing is drawn and batches are untouched.

    Args:
        mean, std: per-channel normalisation constants of the cached tensors ([0, 1] scale).
        hflip: flip probability ``p`` (``True`` = 0.5, ``False`` = 0).
        color_jitter: jitter strength (None or 0: none).
        generator: ``torch.Generator`` on the device of the batches.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], hflip: float | bool,
                 color_jitter: float | None, generator: torch.Generator):
        self.p = 0.5 if hflip is True else float(hflip)
        self.jitter = float(color_jitter or 0.0)
        self.generator = generator
        device = generator.device
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return self.p > 0 or self.jitter > 0

    def factors(self, n: int) -> Tensor:
        """float32 (3, n) brightness, contrast, saturation factors, uniform in
        ``[max(0, 1 - color_jitter), 1 + color_jitter]``."""
        lo, hi = max(0.0, 1.0 - self.jitter), 1.0 + self.jitter
        return torch.empty((3, n), device=self.generator.device).uniform_(
            lo, hi, generator=self.generator)

    def __call__(self, x: Tensor) -> Tensor:
        """The augmented batch, float32 (B, C, H, W), normalised like ``x``."""
        if self.p > 0:
            flip = torch.rand(len(x), device=x.device, generator=self.generator) < self.p
            x = torch.where(flip.view(-1, 1, 1, 1), TF.horizontal_flip(x), x)
        if self.jitter > 0:
            b, c, s = self.factors(len(x))
            img = color_jitter(x * self.std + self.mean, b, c, s)
            x = (img - self.mean) / self.std
        return x


def _blend(img1: Tensor, img2: Tensor, ratio: Tensor) -> Tensor:
    """torchvision's ``_blend`` for float images with a per-sample ``ratio`` (B,)."""
    r = ratio.view(-1, 1, 1, 1)
    return (img1 * r + img2 * (1.0 - r)).clamp_(0.0, 1.0)


def color_jitter(img: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor) -> Tensor:
    """Brightness, then contrast, then saturation of float images ``img`` (B, C, H, W) in
    [0, 1], with per-sample factors (B,) each: torchvision's ``adjust_brightness``
    (``img · f`` clamped), ``adjust_contrast`` (blend with the mean of the grayscale image)
    and ``adjust_saturation`` (blend with the grayscale image; 1-channel images unchanged),
    C in {1, 3}."""
    out = (img * brightness.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    gray = TF.rgb_to_grayscale(out) if out.shape[-3] == 3 else out
    out = _blend(out, gray.mean(dim=(-3, -2, -1), keepdim=True), contrast)
    if out.shape[-3] == 3:
        out = _blend(out, TF.rgb_to_grayscale(out), saturation)
    return out


class DeviceBatches:
    """Batches ``(x[i], y[i])`` for positions ``i`` of ``index``, from tensors on a device.

    Args:
        x: inputs (N, ...) on the device (preprocessed, shared by all clients).
        y: int64 labels (N,) on the device.
        index: int64 positions into ``x`` (a tensor on any device, or a sequence); ``None``:
            all N in order.
        batch_size: B; the last batch holds the rest (``drop_last=False``).
        generator: ``torch.Generator`` on the CPU; when given, each epoch is a new permutation
            drawn as ``DataLoader(shuffle=True, generator=generator)`` draws it; ``None``: in
            order.
        augment: applied to each training batch's ``x`` (:class:`BatchAugment`), or None.

    ``len()`` is the number of batches per epoch, ``ceil(n / B)``.
    """

    def __init__(self, x: Tensor, y: Tensor, index, batch_size: int,
                 generator: torch.Generator | None = None, augment: Callable | None = None):
        self.x, self.y = x, y
        if index is None:
            self.index = None
            self.n = len(y)
        else:
            self.index = torch.as_tensor(index, dtype=torch.int64).to(y.device)
            self.n = len(self.index)
        self.batch_size = int(batch_size)
        self.generator = generator
        self._sampler = RandomSampler(range(self.n), generator=generator) if generator else None
        self.augment = augment if augment is not None and getattr(augment, "active", True) \
            else None

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def positions(self) -> Tensor | None:
        """This epoch's int64 positions into ``x`` on its device (``None``: all, in order).

        Shuffled: draws from ``generator`` what ``torch.utils.data.DataLoader`` draws per
        epoch with ``num_workers=0``: first the base seed of its iterator
        (``_BaseDataLoaderIter``: one int64 ``random_``), then the ``RandomSampler``'s
        permutation (``randperm(n)``, and at its end the ``randperm(n)`` it draws for the
        remainder of ``num_samples % n``), so the generator is in the same state for the next
        epoch.
        """
        if self._sampler is None:
            return self.index
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        order = torch.tensor(list(self._sampler), dtype=torch.int64).to(self.y.device)
        return order if self.index is None else self.index[order]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of batches; the permutation is drawn at the first ``next()``, not by
        ``iter()`` alone (Lightning calls ``iter()`` once to check an iterable)."""
        pos, b = self.positions(), self.batch_size
        for start in range(0, self.n, b):
            if pos is None:
                xb, yb = self.x[start:start + b], self.y[start:start + b]
            else:
                xb, yb = self.x[pos[start:start + b]], self.y[pos[start:start + b]]
            if self.augment is not None:
                xb = self.augment(xb)
            yield xb, yb
