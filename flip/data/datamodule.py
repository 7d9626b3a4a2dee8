"""``FederatedDataModule``: loads an image data set, partitions it over clients, serves loaders.

Source: ``/work/shared/spec/DATA.md`` ("Partitions (non-IID)"). Config fields named in errors:
``data.name``, ``federation.num_clients``, ``data.test_fraction``, ``data.train_subset``,
``data.batch_size``, ``data.eval_batch_size``, ``data.resize``, ``data.color_jitter``,
``data.num_workers``, ``data.device_data``, ``partition.name``,
``partition.classes_per_client``, ``partition.alpha``, ``partition.min_samples``,
``partition.max_tries``.
"""

from __future__ import annotations

import numpy as np
import torch

from flip.data.client_data import ClientDataModule, as_number
from flip.data.datasets import DEBIAN_FMNIST_DIR, ImageSet, build_transform, dataset_info
from flip.data.device_batches import BatchAugment, augment_seed, preprocess_on_device
from flip.data.image_files import load_dataset
from flip.data.partition import (
    partition_dirichlet,
    partition_iid,
    partition_patho,
    split_train_test,
)
from flip.params import NONNEG_INT, POS_INT, check, check_bool, check_choice

PARTITIONS = ("iid", "patho", "dirichlet")


def stratified_subset(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted int64 positions of a random ``fraction`` of each class (at least one per class)."""
    if fraction >= 1:
        return np.arange(len(labels), dtype=np.int64)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(round(fraction * len(idx))))
        keep.append(rng.choice(idx, size=n, replace=False))
    return np.sort(np.concatenate(keep).astype(np.int64))


class FederatedDataModule(ClientDataModule):
    """Per-client train / local-test loaders and the global test loader of an image data set.

    Built by Hydra ``instantiate`` from flat keywords. ``setup()`` (idempotent) loads the data
    (:func:`~flip.data.image_files.load_dataset`), keeps a seeded stratified ``train_subset`` of
    the official training split (for fast demos), partitions it over ``num_clients`` clients
    (``iid``, ``patho`` = McMahan et al. 2017 shards, ``dirichlet`` = Hsu et al. 2019) with
    ``np.random.default_rng([seed, 1])`` and splits each client into train / local test
    (``test_fraction``) with ``np.random.default_rng([seed, 2])``. Local and global test sets use
    test transforms (no augmentation). The training pool is the official training split (so
    partition indices are positions in it, and local test sets index it too); the test pool,
    served whole by :meth:`test_dataloader`, is the official test split. Loaders, counts,
    histogram and partition files: :class:`~flip.data.client_data.ClientDataModule`.

    Args:
        name: ``mnist``, ``fmnist``, ``cifar10`` or ``cifar100``.
        root: data directory (torchvision layout). download: let torchvision download.
        num_clients: K >= 1.
        partition: ``iid``, ``patho`` or ``dirichlet``.
        classes_per_client: classes per client for ``patho``.
        alpha, min_samples, max_tries: Dirichlet concentration, smallest client, draws allowed.
        test_fraction: share of each client's data held out as its local test set, in [0, 1).
        train_subset: share of the official training split used, in (0, 1].
        batch_size, eval_batch_size: training / evaluation batch sizes, >= 1.
        resize: side of the square images fed to the model (None keeps the native size).
        hflip, color_jitter: training augmentations (random horizontal flip; ColorJitter
            strength for brightness, contrast and saturation).
        seed: partition seed. num_workers: DataLoader worker processes.
        debian_dir: directory of the Debian ``dataset-fashion-mnist`` files.
        device_data: ``auto``, ``true`` or ``false``: serve the loaders as
            :class:`~flip.data.device_batches.DeviceBatches` over the splits preprocessed once
            on the training device (:meth:`use_device`; ``auto``: when they fit, see
            :func:`~flip.data.device_batches.use_tensor_path`) instead of DataLoaders. Without
            augmentation both give the same batches; with it the random draws differ
            (:class:`~flip.data.device_batches.BatchAugment`).

    Raises:
        ConfigError: at construction for invalid cheap fields; in ``setup()`` for settings the
            data cannot satisfy (too many clients, too many classes per client, a client without
            training samples, unreachable Dirichlet ``min_samples``).
        DataNotFoundError: in ``setup()`` when the data files are missing.
    """

    def __init__(
        self,
        name: str,
        root: str = "data",
        download: bool = False,
        num_clients: int = 20,
        partition: str = "patho",
        classes_per_client: int = 2,
        alpha: float = 1.0,
        min_samples: int = 10,
        max_tries: int = 1000,
        test_fraction: float = 0.2,
        train_subset: float = 1.0,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        resize: int | None = None,
        hflip: bool = False,
        color_jitter: float | None = None,
        seed: int = 42,
        num_workers: int = 0,
        debian_dir: str = DEBIAN_FMNIST_DIR,
        device_data: str | bool = "auto",
        val_fraction: float = 0.0,
    ):
        self._info = dataset_info(name)
        check_choice("partition.name", partition, PARTITIONS)
        num_clients = as_number("federation.num_clients", num_clients, int, lambda v: v >= 1,
                                POS_INT)
        super().__init__(name, partition, num_clients, seed, batch_size, eval_batch_size,
                         num_workers, device_data, val_fraction)
        self.root = root
        self.download = check_bool("data.download", download)
        self.debian_dir = debian_dir
        self.test_fraction = as_number("data.test_fraction", test_fraction, float,
                                       lambda v: 0 <= v < 1, "a number in [0, 1)")
        self.train_subset = as_number("data.train_subset", train_subset, float,
                                      lambda v: 0 < v <= 1, "a number in (0, 1]")
        self.resize = None if resize is None else as_number(
            "data.resize", resize, int, lambda v: v >= 1, "null or an integer >= 1")
        self.hflip = check_bool("data.hflip", hflip)
        self.color_jitter = None if color_jitter is None else as_number(
            "data.color_jitter", color_jitter, float, lambda v: v >= 0, "null or a number >= 0")
        # each partition's own options are range-checked only when that partition is used
        c, patho, dirichlet = self._info.num_classes, partition == "patho", partition == "dirichlet"
        self.classes_per_client = as_number("partition.classes_per_client", classes_per_client,
                                            int, lambda v: not patho or 1 <= v <= c, f"1..{c}")
        self.alpha = as_number("partition.alpha", alpha, float,
                               lambda v: not dirichlet or v > 0, "a number > 0")
        self.min_samples = as_number("partition.min_samples", min_samples, int,
                                     lambda v: not dirichlet or v >= 0, NONNEG_INT)
        self.max_tries = as_number("partition.max_tries", max_tries, int,
                                   lambda v: not dirichlet or v >= 1, POS_INT)
        self._loaded: tuple[ImageSet, ImageSet] | None = None

    # ----------------------------------------------------------------- static facts
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the tensors the loaders yield, after ``resize`` (known before ``setup``)."""
        c, h, w = self._info.shape
        return (c, self.resize, self.resize) if self.resize else (c, h, w)

    # ----------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        """Download the files once (rank 0) when ``download`` is on; otherwise nothing.

        The loaded splits are kept so that ``setup()`` in the same process does not read the
        files again.
        """
        if self.download and not self._ready:
            self._loaded = load_dataset(self.name, self.root, True, self.debian_dir)

    def _load_and_split(self) -> None:
        """Load, subset, partition and split the data (DATA.md "Partitions").

        Raises:
            ConfigError: see the class docstring. DataNotFoundError: data files missing.
        """
        loaded = self._loaded or load_dataset(self.name, self.root, self.download, self.debian_dir)
        self._loaded = None
        train, test = loaded
        labels = train.labels.numpy()
        subset = stratified_subset(labels, self.train_subset, np.random.default_rng([self.seed, 0]))
        sub_labels = labels[subset]
        rng = np.random.default_rng([self.seed, 1])
        k_req = self.num_clients
        if self.partition == "iid":
            parts = partition_iid(sub_labels, k_req, rng)
        elif self.partition == "patho":
            parts = partition_patho(sub_labels, k_req, self.classes_per_client, rng)
        else:
            parts = partition_dirichlet(sub_labels, k_req, self.alpha, self.min_samples, rng,
                                        self.max_tries)
        split_rng = np.random.default_rng([self.seed, 2])
        clients = []
        for k, part in enumerate(parts):
            tr, te = split_train_test(subset[part], self.test_fraction, split_rng)
            check("federation.num_clients", k_req, len(tr) > 0, "fewer clients",
                  hint=f"Client {k} has no training samples ({len(part)} samples, "
                  f"data.test_fraction={self.test_fraction}); use fewer clients, a larger "
                  "data.train_subset, or a different partition.")
            clients.append({"train": tr, "test": te})
        self._pools = {"train": (train.images, train.labels), "test": (test.images, test.labels)}
        self._clients = clients
        self._train_tf = build_transform(train, True, self.resize, self.hflip, self.color_jitter)
        self._test_tf = build_transform(train, False, self.resize)

    # ----------------------------------------------------------------- loader hooks
    def _transform(self, train: bool):
        """uint8 (C, H, W) -> float32 (C, H', W'): training or test transform."""
        return self._train_tf if train else self._test_tf

    def _device_inputs(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A split after the test transform (resize, to float, normalise), computed on
        ``device`` in chunks: float32 (N, *input_shape)."""
        return preprocess_on_device(x, self._test_tf, device)

    def _augment(self, device: torch.device, seed: int) -> BatchAugment | None:
        """``hflip`` / ``color_jitter`` per batch on ``device``, drawn from a generator seeded
        with :func:`~flip.data.device_batches.augment_seed` of the client ``seed``; None
        without augmentation."""
        if not (self.hflip or self.color_jitter):
            return None
        gen = torch.Generator(device).manual_seed(augment_seed(seed))
        return BatchAugment(self._info.mean, self._info.std, self.hflip, self.color_jitter, gen)
