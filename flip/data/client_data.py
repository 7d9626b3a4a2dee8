"""``ClientDataModule``: the client-data contract every federated data module keeps.

A data module holds two pools of samples, ``train`` and ``test`` (inputs ``x`` (N, ...) and int64
labels ``y`` (N,)), and per client k two sorted int64 index arrays: its training samples (in the
``train`` pool) and its local test samples (in the pool :attr:`ClientDataModule.LOCAL_TEST_POOL`
names). This base class turns that into what the federation uses: the counts ``n_k``, the
loaders (``torch.utils.data.DataLoader`` over a :class:`~flip.data.datasets.ClientDataset`, or
:class:`~flip.data.device_batches.DeviceBatches` over the pools placed once on the training
device), the per-client class histogram and the partition files. Subclasses read and split their
data in ``setup()`` (:class:`~flip.data.FederatedDataModule`: image data sets with iid / patho /
dirichlet partitions; :class:`~flip.data.LeafDataModule`: LEAF users as clients).

Source: ``/work/shared/spec/DATA.md`` ("Partitions (non-IID)": local test sets use test
transforms, the server evaluates on the official test split, partitions are written with the run
with a per-client class histogram, a plot and a table). Config fields named in errors:
``data.batch_size``, ``data.eval_batch_size``, ``data.num_workers``, ``data.device_data``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from flip.data.datasets import ClientDataset
from flip.data.device_batches import DeviceBatches, parse_device_data, use_tensor_path
from flip.data.partition import class_histogram
from flip.params import check


def as_number(field: str, value, kind: type, ok: Callable, accepted: str):
    """``kind(value)`` (``kind`` is ``int`` or ``float``) if ``ok`` holds for it.

    Raises:
        ConfigError: naming ``field``, ``value`` and ``accepted`` when ``ok(kind(value))`` is
            false, or when ``value`` is no number (``kind`` raises).
    """
    return kind(check(field, value, lambda v: ok(kind(v)), accepted))


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

    CSV columns ``client, n_train, n_val, n_test, class_0 .. class_{C-1}`` (from
    ``dm.client_num_train(k)``, ``dm.client_num_val(k)``, ``dm.client_num_test(k)``; the class
    columns count all of the client's samples: train + validation + local test). DATA.md:
    partitions come with a per-client class histogram.
    """
    out = Path(out_dir)
    with open(out / "class_histogram.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["client", "n_train", "n_val", "n_test"]
                   + [f"class_{c}" for c in range(hist.shape[1])])
        for k, row in enumerate(hist):
            w.writerow([k, dm.client_num_train(k), dm.client_num_val(k), dm.client_num_test(k),
                        *row.tolist()])
    plot_class_histogram(hist, out / "class_histogram.png", title)


class ClientDataModule(L.LightningDataModule):
    """Per-client train / local-test loaders and the global test loader over two sample pools.

    A subclass validates its own options in ``__init__``, where it sets ``self._info`` (the data
    set's static facts, with ``num_classes``), and implements ``_load_and_split()``, which sets
    ``self._pools = {"train": (x, y), "test": (x, y)}`` (host tensors; ``y`` int64 (N,)),
    ``self._clients`` (per client ``{"train": idx, "test": idx}``, sorted int64 positions in
    the ``train`` pool and in the :attr:`LOCAL_TEST_POOL`) and ``self._global_test`` (positions
    of the global test set in the ``test`` pool; ``None``: all of it). ``setup()`` then holds out
    each client's validation set (:meth:`_hold_out_validation`). It also provides
    ``input_shape`` and :meth:`_transform`, and may override the hooks :meth:`_device_inputs`,
    :meth:`_augment`, :meth:`_split_validation`, :meth:`_partition_fields` and
    :meth:`_client_record`.

    Args:
        name: the data set's name (``data.name``).
        partition: the partition's name (``partition.name``).
        num_clients: the requested K (``federation.num_clients``; a subclass validates it).
        seed: the run seed (partition seed).
        batch_size, eval_batch_size: training / evaluation batch sizes, >= 1.
        num_workers: DataLoader worker processes, >= 0.
        device_data: ``auto``, ``true`` or ``false``: serve the loaders as
            :class:`~flip.data.device_batches.DeviceBatches` over the pools placed once on the
            training device (:meth:`use_device`; ``auto``: when they fit, see
            :func:`~flip.data.device_batches.use_tensor_path`) instead of DataLoaders.
        val_fraction: share of each client's training data held out as its validation set,
            in [0, 1) (ALGORITHMS.md §5: "best" and "to target" are picked on validation).
            The union of the clients' validation sets is the validation split the server
            evaluates the global model on (``val/*``); 0: none.

    Raises:
        ConfigError: ``data.batch_size``, ``data.eval_batch_size``, ``data.num_workers``,
            ``data.device_data`` or ``data.val_fraction`` invalid.
    """

    LOCAL_TEST_POOL = "train"
    """The pool holding the clients' local test samples (``train`` or ``test``)."""
    TITLE_SUFFIX = ""
    """Appended to the data set's name in the class histogram's title."""

    def __init__(self, name: str, partition: str, num_clients: int | None, seed: int,
                 batch_size: int, eval_batch_size: int, num_workers: int,
                 device_data: str | bool, val_fraction: float = 0.0):
        super().__init__()
        self.name = name
        self.partition = partition
        self.seed = int(seed)
        self.batch_size = as_number("data.batch_size", batch_size, int, lambda v: v >= 1,
                                    "an integer >= 1")
        self.eval_batch_size = as_number("data.eval_batch_size", eval_batch_size, int,
                                         lambda v: v >= 1, "an integer >= 1")
        self.num_workers = as_number("data.num_workers", num_workers, int, lambda v: v >= 0,
                                     "an integer >= 0")
        self.device_data = parse_device_data(device_data)
        self.val_fraction = as_number("data.val_fraction", val_fraction, float,
                                      lambda v: 0 <= v < 1, "a number in [0, 1)")
        self._requested_clients = num_clients
        self._device: torch.device | None = None
        self._placed: dict | bool | None = None  # None: not decided; False: DataLoaders
        self._ready = False
        self._pools: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._clients: list[dict] = []
        self._global_test: np.ndarray | None = None

    # ----------------------------------------------------------------- static facts
    @property
    def num_classes(self) -> int:
        """Number of classes of the data set (``self._info.num_classes``; known before
        ``setup``)."""
        return self._info.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input as the loaders yield it (known before ``setup``)."""
        raise NotImplementedError

    @property
    def input_dtype(self) -> torch.dtype:
        """dtype of the inputs the loaders yield (float32 unless a subclass says otherwise)."""
        return torch.float32

    @property
    def num_clients(self) -> int:
        """K: the clients the data gave after ``setup`` (LEAF: the users left); before it the
        requested K (0 when none was given)."""
        return len(self._clients) if self._ready else int(self._requested_clients or 0)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros ``(batch, *input_shape)`` of :attr:`input_dtype`: what the loaders yield, for
        FLOPs counting and tracing (known before ``setup``)."""
        return torch.zeros((batch, *self.input_shape), dtype=self.input_dtype)

    def model_kwargs(self) -> dict:
        """Keyword arguments the network takes from the data: ``in_channels`` (the first input
        dimension) and ``num_classes`` (known before ``setup``)."""
        return {"in_channels": self.input_shape[0], "num_classes": self.num_classes}

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Read, partition and split the data (the subclass's :meth:`_load_and_split`), then
        hold out the clients' validation sets; runs once.

        Raises:
            ConfigError, DataNotFoundError: see the subclass.
        """
        if self._ready:
            return
        self._load_and_split()
        self._hold_out_validation()
        self._ready = True

    def _load_and_split(self) -> None:
        """Set ``self._pools``, ``self._clients`` (``train`` and ``test`` per client) and
        ``self._global_test`` (see the class docstring)."""
        raise NotImplementedError

    def _hold_out_validation(self) -> None:
        """Give every client a ``val`` index array: ``val_fraction`` of its training samples
        (:meth:`_split_validation`, drawn from ``np.random.default_rng([seed, 3])`` so the
        train/test partition does not change), the rest stays its training set."""
        rng = np.random.default_rng([self.seed, 3])
        for c in self._clients:
            if self.val_fraction > 0:
                c["train"], c["val"] = self._split_validation(c["train"], rng)
            else:
                c["val"] = np.zeros(0, dtype=np.int64)

    def _split_validation(self, train: np.ndarray, rng: np.random.Generator):
        """``(train, val)`` of one client's training positions: ``round(val_fraction·n)``
        drawn at random (at least one sample stays for training), both sorted int64.
        Subclasses with sequential samples override it (no overlap between the two)."""
        n_val = min(int(round(self.val_fraction * len(train))), max(len(train) - 1, 0))
        perm = rng.permutation(np.asarray(train, dtype=np.int64))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    # ----------------------------------------------------------------- per-client data
    def _need_setup(self) -> None:
        if not self._ready:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before using the data.")

    def _client(self, k: int) -> dict:
        """Client ``k``'s ``{"train": idx, "test": idx}``; IndexError outside 0..K-1."""
        self._need_setup()
        if not 0 <= k < len(self._clients):
            raise IndexError(f"client {k} does not exist (clients are 0..{len(self._clients) - 1})")
        return self._clients[k]

    @property
    def partition_indices(self) -> list[dict]:
        """Per client ``{"train": int64 array, "test": int64 array}``: sorted positions of its
        training samples in the training pool and of its local test samples in the
        :attr:`LOCAL_TEST_POOL` (see the subclass for what the pools are).

        Raises:
            RuntimeError: before ``setup()``.
        """
        self._need_setup()
        return self._clients

    def client_num_train(self, k: int) -> int:
        """n_k: number of training samples of client ``k`` (FedAvg weight)."""
        return int(len(self._client(k)["train"]))

    def client_num_test(self, k: int) -> int:
        """Number of local test samples of client ``k``."""
        return int(len(self._client(k)["test"]))

    def client_num_val(self, k: int) -> int:
        """Number of validation samples of client ``k`` (0 without ``val_fraction``)."""
        return int(len(self._client(k)["val"]))

    @property
    def has_validation(self) -> bool:
        """Whether any client holds validation samples (``val_fraction`` > 0)."""
        self._need_setup()
        return any(len(c["val"]) for c in self._clients)

    # ----------------------------------------------------------------- loaders
    def _transform(self, train: bool) -> Callable:
        """The per-sample transform of the DataLoader path (``train``: client training data;
        otherwise local and global test data)."""
        raise NotImplementedError

    def _augment(self, device: torch.device, seed: int):
        """Training augmentation of :class:`DeviceBatches` on ``device`` for a client's
        ``seed`` (a :class:`~flip.data.device_batches.BatchAugment`), or None (no
        augmentation, the default)."""
        return None

    def _batches(self, pool: str, index, batch_size: int, seed: int | None = None):
        """Loader over positions ``index`` of ``pool`` (``None``: all, in order); ``seed``
        given: the shuffled training loader of a client (order from
        ``torch.Generator().manual_seed(seed)``, training transforms / augmentation)."""
        gen = None if seed is None else torch.Generator().manual_seed(int(seed))
        if placed := self._device_splits():
            x, y = placed[pool]
            aug = None if seed is None else self._augment(x.device, seed)
            return DeviceBatches(x, y, index, batch_size, gen, aug)
        x, y = self._pools[pool]
        index = np.arange(len(y)) if index is None else index
        ds = ClientDataset(x, y, index, self._transform(seed is not None))
        return DataLoader(ds, batch_size=batch_size, shuffle=gen is not None, generator=gen,
                          num_workers=self.num_workers, drop_last=False)

    def client_train_dataloader(self, k: int, seed: int) -> DataLoader | DeviceBatches:
        """Shuffled training loader of client ``k``; batches ``(x (B, *input_shape),
        y (B,) int64)`` with training transforms. The order is fixed by ``seed``
        (``torch.Generator().manual_seed(seed)``). DataLoader: random augmentations draw from
        torch's global RNG in the main process (seed it, e.g. ``lightning.seed_everything``);
        :class:`DeviceBatches` (``device_data``): the same order, augmentations on the device
        drawn from a generator seeded from ``seed``.

        Raises:
            RuntimeError: before ``setup()``. IndexError: no client ``k``.
        """
        idx = self._client(k)["train"]
        return self._batches("train", idx, self.batch_size, seed)

    def client_test_dataloader(self, k: int) -> DataLoader | DeviceBatches:
        """Local test loader of client ``k`` (test transforms, ``eval_batch_size``, in order).

        Raises:
            RuntimeError: before ``setup()``. IndexError: no client ``k``.
        """
        idx = self._client(k)["test"]
        return self._batches(self.LOCAL_TEST_POOL, idx, self.eval_batch_size)

    def local_test_dataloader(self) -> tuple[DataLoader | DeviceBatches, np.ndarray]:
        """The union of the clients' local test sets in client order, packed into batches of
        ``eval_batch_size`` that may span clients (test transforms, in order), and the client
        of each of its samples (int64 ``(N,)``, in the same order): one pass evaluates every
        client (:func:`flip.federation.evaluation.evaluate_local`).

        Raises:
            RuntimeError: before ``setup()``.
        """
        self._need_setup()
        tests = [c["test"] for c in self._clients]
        index = np.concatenate(tests).astype(np.int64)
        owners = np.repeat(np.arange(len(tests), dtype=np.int64), [len(t) for t in tests])
        return self._batches(self.LOCAL_TEST_POOL, index, self.eval_batch_size), owners

    def val_dataloader(self) -> DataLoader | DeviceBatches:
        """The validation split: the union of the clients' validation sets, in client order
        (test transforms, ``eval_batch_size``), over the training pool (ALGORITHMS.md §5).

        Raises:
            RuntimeError: before ``setup()``.
        """
        self._need_setup()
        index = np.concatenate([c["val"] for c in self._clients]).astype(np.int64)
        return self._batches("train", index, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        """Global evaluation loader over the test pool (test transforms, ``eval_batch_size``,
        in order; see the subclass for what it holds).

        Raises:
            RuntimeError: before ``setup()``.
        """
        self._need_setup()
        return self._batches("test", self._global_test, self.eval_batch_size)

    # ----------------------------------------------------------------- device path
    def use_device(self, device: torch.device | str) -> None:
        """The device the model trains on (``Federation`` calls this once). Under
        ``device_data=auto`` loaders are tensors on it when the data fit
        (:func:`~flip.data.device_batches.use_tensor_path`); until it is called ``auto``
        serves DataLoaders."""
        device = torch.device(device)
        if device != self._device:
            self._device, self._placed = device, None

    @property
    def on_device(self) -> bool:
        """Whether the loaders are :class:`DeviceBatches` (places the pools when deciding so
        for the first time; needs ``setup()``)."""
        return self._device_splits() is not None

    def _device_splits(self) -> dict | None:
        """``{pool: (x, y)}`` on the device, placed once, or None (DataLoaders).

        Raises:
            RuntimeError: before ``setup()``.
        """
        self._need_setup()
        if self._placed is None:
            ok = use_tensor_path(self.device_data, self._device, self._device_bytes())
            self._placed = self._place(self._device or torch.device("cpu")) if ok else False
        return self._placed or None

    def _device_bytes(self) -> int:
        """Bytes of both pools as the loaders yield them: inputs of :attr:`input_dtype` and
        int64 labels."""
        per_sample = self.example_input().element_size() * int(np.prod(self.input_shape)) + 8
        return sum(len(y) for _, y in self._pools.values()) * per_sample

    def _device_inputs(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        """A pool's inputs on ``device`` as the test loaders yield them (default: the test
        transform on the host, then moved)."""
        return self._transform(False)(x).to(device)

    def _place(self, device: torch.device) -> dict:
        """Both pools on ``device``: ``{pool: (inputs, int64 labels)}``."""
        return {pool: (self._device_inputs(x, device), y.to(device))
                for pool, (x, y) in self._pools.items()}

    # ----------------------------------------------------------------- reporting
    def class_histogram(self) -> np.ndarray:
        """int64 (K, num_classes) class counts of each client's train + validation + local test
        data.

        Raises:
            RuntimeError: before ``setup()``.
        """
        self._need_setup()
        train = class_histogram(self._pools["train"][1].numpy(),
                                [np.concatenate([c["train"], c["val"]]) for c in self._clients],
                                self.num_classes)
        test = class_histogram(self._pools[self.LOCAL_TEST_POOL][1].numpy(),
                               [c["test"] for c in self._clients], self.num_classes)
        return train + test

    def _partition_fields(self) -> dict:
        """Fields of ``partition.json`` after ``seed``, ``partition`` and ``dataset`` (none by
        default)."""
        return {}

    def _client_record(self, k: int, client: dict) -> dict:
        """Client ``k``'s entry in ``partition.json``: ``{"client": k, "train": [...],
        "val": [...], "test": [...]}`` (its positions in the pools)."""
        return {"client": k, "train": client["train"].tolist(), "val": client["val"].tolist(),
                "test": client["test"].tolist()}

    def save_partition(self, out_dir: str | os.PathLike) -> None:
        """Write ``partition.json``, ``class_histogram.csv`` and ``class_histogram.png``.

        ``partition.json``: ``{"seed", "partition", "dataset", <the subclass's fields>,
        "clients": [...]}`` (the fields from :meth:`_partition_fields`, each client's entry from
        :meth:`_client_record`; image data: ``{"client": k, "train": [...], "test": [...]}``,
        positions in the official training split). The CSV has columns ``client, n_train,
        n_test, class_0 .. class_{C-1}`` where the class columns count train + local test
        samples (so they sum to n_train + n_test). DATA.md: partitions are written with the run,
        with a per-client class histogram (plot and table).

        Raises:
            RuntimeError: before ``setup()``. OSError: ``out_dir`` cannot be written.
        """
        self._need_setup()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        doc = {
            "seed": self.seed,
            "partition": self.partition,
            "dataset": self.name,
            **self._partition_fields(),
            "clients": [self._client_record(k, c) for k, c in enumerate(self._clients)],
        }
        (out / "partition.json").write_text(json.dumps(doc))
        title = (f"{self.name}{self.TITLE_SUFFIX}, partition={self.partition}, "
                 f"K={self.num_clients}, seed={self.seed}")
        write_class_histogram(out, self.class_histogram(), self, title)
