"""``FederatedDataModule``: loads an image data set, partitions it over clients, serves loaders.

Source: ``/work/shared/spec/DATA.md`` ("Partitions (non-IID)"). Config fields named in errors:
``data.name``, ``federation.num_clients``, ``data.test_fraction``, ``data.train_subset``,
``data.batch_size``, ``data.eval_batch_size``, ``data.resize``, ``data.color_jitter``,
``data.num_workers``, ``data.device_data``, ``partition.name``,
``partition.classes_per_client``, ``partition.alpha``, ``partition.min_samples``,
``partition.max_tries``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from flip.data.datasets import (
    DEBIAN_FMNIST_DIR,
    ClientDataset,
    ImageSet,
    build_transform,
    dataset_info,
    load_dataset,
)
from flip.data.device_batches import (
    BatchAugment,
    DeviceBatches,
    DeviceDataMixin,
    augment_seed,
    preprocess_on_device,
)
from flip.data.partition import (
    class_histogram,
    partition_dirichlet,
    partition_iid,
    partition_patho,
    split_train_test,
)
from flip.errors import ConfigError

PARTITIONS = ("iid", "patho", "dirichlet")


def plot_class_histogram(hist: np.ndarray, path: str | os.PathLike, title: str = "") -> None:
    """Save a per-client class histogram (K, C) as a PNG (matplotlib, Agg, no pyplot state).

    Up to 20 classes: one stacked bar per client (samples per class, with a legend). More
    classes (e.g. CIFAR-100): a heat map of client x class counts with a colour bar.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k, c = hist.shape
    fig = Figure(figsize=(max(6.0, min(0.3 * k + 2, 14.0)), 4.8 if c <= 20 else 6.0),
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    clients = np.arange(k)
    if c <= 20:
        cmap = matplotlib.colormaps["tab10" if c <= 10 else "tab20"]
        bottom = np.zeros(k)
        for j in range(c):
            ax.bar(clients, hist[:, j], bottom=bottom, color=cmap(j), label=f"class {j}",
                   width=0.85)
            bottom += hist[:, j]
        ax.set_ylabel("samples (train + local test)")
        ax.legend(title="class", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_xlim(-0.6, k - 0.4)
    else:
        im = ax.imshow(hist.T, aspect="auto", interpolation="nearest", cmap="viridis",
                       origin="lower")
        fig.colorbar(im, ax=ax, label="samples (train + local test)")
        ax.set_ylabel("class")
    ax.set_xlabel("client")
    step = max(1, int(np.ceil(k / 25)))
    ax.set_xticks(clients[::step])
    ax.set_title(title or "class histogram per client")
    fig.savefig(path, dpi=100)


def write_class_histogram(out_dir: str | os.PathLike, hist: np.ndarray, dm, title: str) -> None:
    """Write ``class_histogram.csv`` and ``class_histogram.png`` of a (K, C) histogram.

    CSV columns ``client, n_train, n_test, class_0 .. class_{C-1}`` (``n_train``/``n_test``
    from ``dm.client_num_train(k)``/``dm.client_num_test(k)``; the class columns count train +
    local test samples). DATA.md: partitions come with a per-client class histogram.
    """
    out = Path(out_dir)
    with open(out / "class_histogram.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["client", "n_train", "n_test"] + [f"class_{c}" for c in range(hist.shape[1])])
        for k, row in enumerate(hist):
            w.writerow([k, dm.client_num_train(k), dm.client_num_test(k), *row.tolist()])
    plot_class_histogram(hist, out / "class_histogram.png", title)


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


class FederatedDataModule(DeviceDataMixin, L.LightningDataModule):
    """Per-client train / local-test loaders and the global test loader of an image data set.

    Built by Hydra ``instantiate`` from flat keywords. ``setup()`` (idempotent) loads the data
    (:func:`~flip.data.datasets.load_dataset`), keeps a seeded stratified ``train_subset`` of the
    official training split (for fast demos), partitions it over ``num_clients`` clients
    (``iid``, ``patho`` = McMahan et al. 2017 shards, ``dirichlet`` = Hsu et al. 2019) with
    ``np.random.default_rng([seed, 1])`` and splits each client into train / local test
    (``test_fraction``) with ``np.random.default_rng([seed, 2])``. Local and global test sets use
    test transforms (no augmentation). Partition indices are positions in the official training
    split.

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
    ):
        super().__init__()
        self._init_device_data(device_data)
        self._info = dataset_info(name)
        self.name = name
        self.root = root
        self.download = bool(download)
        self.partition = partition
        self.classes_per_client = int(classes_per_client)
        self.alpha = float(alpha)
        self.min_samples = int(min_samples)
        self.max_tries = int(max_tries)
        self.test_fraction = float(test_fraction)
        self.train_subset = float(train_subset)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.resize = None if resize is None else int(resize)
        self.hflip = bool(hflip)
        self.color_jitter = None if color_jitter is None else float(color_jitter)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.debian_dir = debian_dir
        self._num_clients = int(num_clients)
        self._validate()
        self._ready = False
        self._loaded: tuple[ImageSet, ImageSet] | None = None

    def _validate(self) -> None:
        checks = [
            ("partition.name", self.partition, ", ".join(PARTITIONS),
             self.partition in PARTITIONS),
            ("federation.num_clients", self._num_clients, "an integer >= 1",
             self._num_clients >= 1),
            ("data.test_fraction", self.test_fraction, "a number in [0, 1)",
             0 <= self.test_fraction < 1),
            ("data.train_subset", self.train_subset, "a number in (0, 1]",
             0 < self.train_subset <= 1),
            ("data.batch_size", self.batch_size, "an integer >= 1", self.batch_size >= 1),
            ("data.eval_batch_size", self.eval_batch_size, "an integer >= 1",
             self.eval_batch_size >= 1),
            ("data.resize", self.resize, "null or an integer >= 1",
             self.resize is None or self.resize >= 1),
            ("data.color_jitter", self.color_jitter, "null or a number >= 0",
             self.color_jitter is None or self.color_jitter >= 0),
            ("data.num_workers", self.num_workers, "an integer >= 0", self.num_workers >= 0),
        ]
        if self.partition == "patho":
            checks.append(("partition.classes_per_client", self.classes_per_client,
                           f"1..{self._info.num_classes}",
                           1 <= self.classes_per_client <= self._info.num_classes))
        if self.partition == "dirichlet":
            checks += [
                ("partition.alpha", self.alpha, "a number > 0", self.alpha > 0),
                ("partition.min_samples", self.min_samples, "an integer >= 0",
                 self.min_samples >= 0),
                ("partition.max_tries", self.max_tries, "an integer >= 1", self.max_tries >= 1),
            ]
        for field, value, accepted, ok in checks:
            if not ok:
                raise ConfigError(field, value, accepted)

    # ----------------------------------------------------------------- static facts
    @property
    def num_classes(self) -> int:
        """Number of classes of the data set (known before ``setup``)."""
        return self._info.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the tensors the loaders yield, after ``resize`` (known before ``setup``)."""
        c, h, w = self._info.shape
        return (c, self.resize, self.resize) if self.resize else (c, h, w)

    @property
    def num_clients(self) -> int:
        """Number of clients K."""
        return self._num_clients

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Float32 zeros ``(batch, *input_shape)``: what the loaders yield, for FLOPs counting
        and tracing (known before ``setup``)."""
        return torch.zeros((batch, *self.input_shape))

    def model_kwargs(self) -> dict:
        """Keyword arguments the network takes from the data: ``in_channels`` and
        ``num_classes`` (known before ``setup``)."""
        return {"in_channels": self.input_shape[0], "num_classes": self.num_classes}

    # ----------------------------------------------------------------- setup
    def prepare_data(self) -> None:
        """Download the files once (rank 0) when ``download`` is on; otherwise nothing.

        The loaded splits are kept so that ``setup()`` in the same process does not read the
        files again.
        """
        if self.download and not self._ready:
            self._loaded = load_dataset(self.name, self.root, True, self.debian_dir)

    def setup(self, stage: str | None = None) -> None:
        """Load, subset, partition and split the data (DATA.md "Partitions"); runs once.

        Raises:
            ConfigError: see the class docstring. DataNotFoundError: data files missing.
        """
        if self._ready:
            return
        loaded = self._loaded or load_dataset(self.name, self.root, self.download, self.debian_dir)
        self._loaded = None
        train, test = loaded
        labels = train.labels.numpy()
        subset = stratified_subset(labels, self.train_subset, np.random.default_rng([self.seed, 0]))
        sub_labels = labels[subset]
        rng = np.random.default_rng([self.seed, 1])
        if self.partition == "iid":
            parts = partition_iid(sub_labels, self._num_clients, rng)
        elif self.partition == "patho":
            parts = partition_patho(sub_labels, self._num_clients, self.classes_per_client, rng)
        else:
            parts = partition_dirichlet(sub_labels, self._num_clients, self.alpha,
                                        self.min_samples, rng, self.max_tries)
        split_rng = np.random.default_rng([self.seed, 2])
        clients = []
        for k, part in enumerate(parts):
            tr, te = split_train_test(subset[part], self.test_fraction, split_rng)
            if len(tr) == 0:
                raise ConfigError(
                    "federation.num_clients", self._num_clients, "fewer clients",
                    hint=f"Client {k} has no training samples ({len(part)} samples, "
                    f"data.test_fraction={self.test_fraction}); use fewer clients, a larger "
                    "data.train_subset, or a different partition.",
                )
            clients.append({"train": tr, "test": te})
        self._train, self._test, self._clients = train, test, clients
        self._train_tf = build_transform(train, True, self.resize, self.hflip, self.color_jitter)
        self._test_tf = build_transform(train, False, self.resize)
        self._ready = True

    def _need_setup(self) -> None:
        if not self._ready:
            raise RuntimeError("FederatedDataModule.setup() must run before using the data.")

    def _client(self, k: int) -> dict:
        self._need_setup()
        if not 0 <= k < self._num_clients:
            raise IndexError(f"client {k} does not exist (clients are 0..{self._num_clients - 1})")
        return self._clients[k]

    # ----------------------------------------------------------------- per-client data
    @property
    def partition_indices(self) -> list[dict]:
        """Per client ``{"train": int64 array, "test": int64 array}`` of positions in the
        official training split (sorted)."""
        self._need_setup()
        return self._clients

    def client_num_train(self, k: int) -> int:
        """n_k: number of training samples of client ``k`` (FedAvg weight)."""
        return int(len(self._client(k)["train"]))

    def client_num_test(self, k: int) -> int:
        """Number of local test samples of client ``k``."""
        return int(len(self._client(k)["test"]))

    def _loader(self, imageset: ImageSet, idx, transform, batch_size, generator=None):
        ds = ClientDataset(imageset.images, imageset.labels, idx, transform)
        return DataLoader(ds, batch_size=batch_size, shuffle=generator is not None,
                          generator=generator, num_workers=self.num_workers, drop_last=False)

    def _device_bytes(self) -> int:
        """Bytes of both splits preprocessed: float32 inputs and int64 labels."""
        per_sample = 4 * int(np.prod(self.input_shape)) + 8
        return (len(self._train) + len(self._test)) * per_sample

    def _place(self, device: torch.device) -> dict:
        """Both splits after the test transform (resize, to float, normalise), on ``device``."""
        return {
            split: (preprocess_on_device(s.images, self._test_tf, device), s.labels.to(device))
            for split, s in (("train", self._train), ("test", self._test))
        }

    def client_train_dataloader(self, k: int, seed: int) -> DataLoader | DeviceBatches:
        """Shuffled training loader of client ``k``; batches ``(x (B, *input_shape) float32,
        y (B,) int64)`` with training augmentations. The order is fixed by ``seed``
        (``torch.Generator().manual_seed(seed)``). DataLoader: augmentations draw from torch's
        global RNG in the main process (seed it, e.g. ``lightning.seed_everything``);
        :class:`DeviceBatches` (``device_data``): the same order, augmentations on the device
        drawn from a generator seeded from ``seed``."""
        gen = torch.Generator().manual_seed(int(seed))
        idx = self._client(k)["train"]
        if placed := self._device_splits():
            x, y = placed["train"]
            aug = None
            if self.hflip or self.color_jitter:
                dev_gen = torch.Generator(x.device).manual_seed(augment_seed(seed))
                aug = BatchAugment(self._train.mean, self._train.std, self.hflip,
                                   self.color_jitter, dev_gen)
            return DeviceBatches(x, y, idx, self.batch_size, gen, aug)
        return self._loader(self._train, idx, self._train_tf, self.batch_size, gen)

    def client_test_dataloader(self, k: int) -> DataLoader | DeviceBatches:
        """Local test loader of client ``k`` (test transforms, ``eval_batch_size``, in order)."""
        idx = self._client(k)["test"]
        if placed := self._device_splits():
            return DeviceBatches(*placed["train"], idx, self.eval_batch_size)
        return self._loader(self._train, idx, self._test_tf, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        """Loader of the official test split (global evaluation; test transforms, in order)."""
        self._need_setup()
        if placed := self._device_splits():
            return DeviceBatches(*placed["test"], None, self.eval_batch_size)
        return self._loader(self._test, np.arange(len(self._test)), self._test_tf,
                            self.eval_batch_size)

    # ----------------------------------------------------------------- reporting
    def class_histogram(self) -> np.ndarray:
        """int64 (K, num_classes) class counts of each client's train + local test data."""
        self._need_setup()
        labels = self._train.labels.numpy()
        parts = [np.concatenate([c["train"], c["test"]]) for c in self._clients]
        return class_histogram(labels, parts, self.num_classes)

    def save_partition(self, out_dir: str | os.PathLike) -> None:
        """Write ``partition.json``, ``class_histogram.csv`` and ``class_histogram.png``.

        ``partition.json``: ``{"seed", "partition", "dataset", "clients": [{"client": k,
        "train": [...], "test": [...]}]}`` (positions in the official training split).
        The CSV has columns ``client, n_train, n_test, class_0 .. class_{C-1}`` where the class
        columns count train + test samples (so they sum to n_train + n_test). DATA.md: partitions
        are written with the run, with a per-client class histogram (plot and table).
        """
        self._need_setup()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        doc = {
            "seed": self.seed,
            "partition": self.partition,
            "dataset": self.name,
            "clients": [
                {"client": k, "train": c["train"].tolist(), "test": c["test"].tolist()}
                for k, c in enumerate(self._clients)
            ],
        }
        (out / "partition.json").write_text(json.dumps(doc))
        title = f"{self.name}, partition={self.partition}, K={self.num_clients}, seed={self.seed}"
        write_class_histogram(out, self.class_histogram(), self, title)
