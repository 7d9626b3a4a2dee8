"""``LeafDataModule``: LEAF data sets (FEMNIST, Shakespeare, any LEAF JSON) with natural clients.

The same public API as :class:`flip.data.FederatedDataModule`; the partition is ``natural``
(DATA.md: LEAF users are the clients, K is the number of users after sampling and filtering;
the paper's code also replaced K by the number of users, and flip logs it).
Config fields named in errors: ``data.name``, ``data.root``, ``data.source``, ``data.fraction``,
``data.min_samples``, ``data.split``, ``data.train_fraction``, ``data.batch_size``,
``data.eval_batch_size``, ``data.num_workers``, ``data.device_data``, ``data.num_classes``,
``data.input_shape``, ``data.user_groups``, ``partition.name`` (and ``partition.<option>`` for
another partition's option). Reading the files: :mod:`flip.data.leaf_reader`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from flip.data.client_data import ClientDataModule, as_number
from flip.data.leaf import SEQ_LEN, SHAKESPEARE_VOCAB
from flip.data.leaf_reader import (
    LEAF_DATASETS,
    SOURCES,
    SPLITS,
    LeafInfo,
    leaf_tensors,
    read_leaf_splits,
)
from flip.params import NONNEG_INT, check, check_choice

log = logging.getLogger(__name__)


def _as_long(x: torch.Tensor) -> torch.Tensor:
    return x.long()


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _span(idx: np.ndarray) -> list[int]:
    """``[first, last + 1]`` of consecutive positions ``idx`` (``[0, 0]`` when empty)."""
    return [int(idx[0]), int(idx[-1]) + 1] if len(idx) else [0, 0]


def _leaf_info(name: str, num_classes, input_shape) -> LeafInfo:
    """The :class:`~flip.data.leaf_reader.LeafInfo` of ``name``: flip's own for ``femnist``
    and ``shakespeare``, else numeric data with ``num_classes`` classes and inputs of
    ``input_shape``.

    Raises:
        ConfigError: for another data set, ``data.num_classes`` not an integer >= 2 or
            ``data.input_shape`` not a non-empty list of integers >= 1.
    """
    if name in LEAF_DATASETS:
        return LEAF_DATASETS[name]
    accepted = ("an integer >= 2 with data.input_shape (a list of ints) for a LEAF data set "
                f"other than {', '.join(LEAF_DATASETS)}")
    check("data.num_classes", num_classes, num_classes is not None and bool(input_shape),
          accepted)
    classes = as_number("data.num_classes", num_classes, int, lambda v: v >= 2, accepted)
    check("data.input_shape", input_shape, lambda v: all(int(d) >= 1 for d in v),
          "a list of integers >= 1")
    return LeafInfo(name, classes, tuple(int(d) for d in input_shape))


class LeafDataModule(ClientDataModule):
    """Per-client train / local-test loaders and the global test loader of a LEAF data set.

    ``setup()`` reads ``root``: either ``root/all_data/*.json`` (LEAF's ``all_data``, or what
    ``python -m flip.data.shakespeare`` writes), on which flip runs LEAF's pipeline in memory
    (:mod:`flip.data.leaf`: non-IID sampling of ``fraction`` of the samples with ``sample_seed``,
    removal of users with ``min_samples`` or fewer samples, then the ``split`` with
    ``train_fraction`` and ``split_seed``), or LEAF's finished ``root/train`` and ``root/test``
    (``preprocess.sh -t sample``), read as they are. ``source=auto`` takes ``all_data`` when
    present (:func:`~flip.data.leaf_reader.read_leaf_splits`). Clients are the users holding
    training data, in file order. The training pool is the clients' training samples and the
    test pool their local test samples (then, for ``split=user``, the held-out users' samples),
    users concatenated in client order; loaders, counts, histogram and partition files:
    :class:`~flip.data.client_data.ClientDataModule`.

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
        user_groups: ``None`` (each user is a client) or G: the users, in order, are grouped
            into G clients, G − 1 of ⌊U/G⌋ users and the last with the rest (PR-FL's FEMNIST:
            193 writers into 10 clients of 19, the last 22; its ``get_init_extra_params``).
        partition_options: other partitions' options (``classes_per_client``, ...): refused.

    Raises:
        ConfigError: at construction for invalid fields; in ``setup()`` when no user is left,
            or for sampling options given with LEAF's own train/test split.
        DataNotFoundError: in ``setup()`` for missing files, and for a truncated or corrupt
            file, a user without samples, an input of the wrong length or a character outside
            the vocabulary (naming the file and the user).
    """

    LOCAL_TEST_POOL = "test"
    TITLE_SUFFIX = " (LEAF)"

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
        val_fraction: float = 0.0,
        num_classes: int | None = None,
        input_shape: list[int] | tuple[int, ...] | None = None,
        user_groups: int | None = None,
        **partition_options,
    ):
        # partition first, so that data=femnist with partition=patho says so
        check("partition.name", partition, partition == "natural",
              "natural (LEAF users are the clients)")
        for key, value in partition_options.items():
            check(f"partition.{key}", value, False, "none (natural partitions have none)")
        self._info = _leaf_info(name, num_classes, input_shape)
        super().__init__(name, partition, num_clients, seed, batch_size, eval_batch_size,
                         num_workers, device_data, val_fraction)
        self.root = root
        self.source = check_choice("data.source", source, SOURCES)
        self.split = check_choice("data.split", split, SPLITS)
        self.fraction = as_number("data.fraction", fraction, float, lambda v: 0 < v <= 1,
                                  "a fraction of the samples in (0, 1]")
        self.min_samples = as_number("data.min_samples", min_samples, int, lambda v: v >= 0,
                                     NONNEG_INT)
        self.train_fraction = as_number("data.train_fraction", train_fraction, float,
                                        lambda v: 0 < v < 1, "a fraction in (0, 1)")
        self.user_groups = None if user_groups is None else as_number(
            "data.user_groups", user_groups, int, lambda v: v >= 1,
            "null (each LEAF user a client) or a number of clients >= 1")
        self.sample_seed = self.seed if sample_seed is None else int(sample_seed)
        self.split_seed = self.seed if split_seed is None else int(split_seed)

    # ----------------------------------------------------------------- static facts
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input as the loaders yield it; known before ``setup``."""
        return self._info.input_shape

    @property
    def input_dtype(self) -> torch.dtype:
        """int64 character indices for Shakespeare, float32 otherwise."""
        return torch.int64 if self._info.chars else torch.float32

    def model_kwargs(self) -> dict:
        """Keyword arguments the network takes from the data: ``num_classes`` and
        ``vocab_size`` for character data, ``in_channels`` and ``num_classes`` otherwise."""
        if self._info.chars:
            return {"num_classes": self.num_classes, "vocab_size": len(SHAKESPEARE_VOCAB)}
        return super().model_kwargs()

    # ----------------------------------------------------------------- setup
    def _load_and_split(self) -> None:
        """Read, sample, filter and split the LEAF data (DATA.md "LEAF JSON").

        Raises:
            ConfigError, DataNotFoundError: see the class docstring.
        """
        self._source_used, train, local, held = read_leaf_splits(
            self.root, self.source, self._info, name=self.name, fraction=self.fraction,
            min_samples=self.min_samples, split=self.split, train_fraction=self.train_fraction,
            sample_seed=self.sample_seed, split_seed=self.split_seed,
        )
        check("data.min_samples", self.min_samples, bool(train.users),
              "a value that leaves at least one user",
              hint=f"No LEAF user with both training and test data is left (data.fraction="
              f"{self.fraction}, data.train_fraction={self.train_fraction}); use a larger "
              "data.fraction or a smaller data.min_samples.")
        global_users = held if held is not local else None
        test = local if global_users is None else local.subset(
            local.users + held.users, {**local.data, **held.data}
        )
        self._pools = {"train": leaf_tensors(train, self._info),
                       "test": leaf_tensors(test, self._info)}
        clients, a, b = [], 0, 0
        for u in train.users:
            n_tr, n_te = train.num_samples(u), local.num_samples(u)
            clients.append({"train": np.arange(a, a + n_tr), "test": np.arange(b, b + n_te)})
            a, b = a + n_tr, b + n_te
        n_test = len(self._pools["test"][1])
        self._global_test = np.arange(0 if global_users is None else b, n_test)
        self._users = list(train.users)
        self._hier = {u: train.hierarchies.get(u) for u in train.users}
        self._files = train.files
        if self.user_groups is not None:
            clients = self._group_users(clients)
        self._clients = clients
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
            self.name, len(clients), a, b, len(self._global_test), self.split,
        )

    def _group_users(self, clients: list[dict]) -> list[dict]:
        """Users (consecutive index ranges) merged into ``user_groups`` clients: G − 1 groups
        of ⌊U/G⌋ users, the last with the rest; a client's ``user`` is its users joined by
        ``+``. Raises ``ConfigError`` (``data.user_groups``) for more groups than users."""
        users, g = len(clients), self.user_groups
        check("data.user_groups", g, g <= users,
              f"a number of clients in 1..{users} (the LEAF users left)")
        size = users // g
        bounds = [(j * size, (j + 1) * size if j < g - 1 else users) for j in range(g)]
        self._users = ["+".join(self._users[a:b]) for a, b in bounds]
        return [{s: np.concatenate([clients[u][s] for u in range(a, b)]) for s in ("train", "test")}
                for a, b in bounds]

    @property
    def users(self) -> list[str]:
        """The LEAF user id of each client, in client order.

        Raises:
            RuntimeError: before ``setup()``.
        """
        self._need_setup()
        return list(self._users)

    # ----------------------------------------------------------------- hooks
    def _split_validation(self, train: np.ndarray, rng: np.random.Generator):
        """Sequential data (Shakespeare's sliding windows): the validation set is the last
        ``round(val_fraction·n)`` windows of the client's training windows, and the
        ``SEQ_LEN`` windows before it leave the training set, so no training window shares a
        character with a validation window (as LEAF separates its test windows, DATA.md);
        other LEAF data: a random subset (the base class)."""
        if not self._info.sequential:
            return super()._split_validation(train, rng)
        n = len(train)
        n_val = min(int(round(self.val_fraction * n)), max(n - 1, 0))
        gap = min(SEQ_LEN, n - n_val - 1) if n_val else 0
        return train[:n - n_val - gap], train[n - n_val:]

    def _transform(self, train: bool):
        """Characters as int64 (as embeddings take them); numeric inputs unchanged."""
        return _as_long if self._info.chars else _identity

    def _partition_fields(self) -> dict:
        """The LEAF options (``root``; ``source`` read: ``all_data`` or ``split``;
        ``fraction``, ``min_samples``, ``split``, ``train_fraction``, seeds) and
        ``global_test_range``: ``[start, stop]`` of the global test set in the test pool."""
        return {
            "root": str(self.root),
            "source": self._source_used,
            "fraction": self.fraction,
            "min_samples": self.min_samples,
            "split": self.split,
            "train_fraction": self.train_fraction,
            "sample_seed": self.sample_seed,
            "split_seed": self.split_seed,
            "user_groups": self.user_groups,
            "global_test_range": _span(self._global_test),
        }

    def _client_record(self, k: int, client: dict) -> dict:
        """``{"client", "user", "hierarchy", "file", "train_range": [start, stop],
        "test_range": [start, stop]}``: the client's samples are positions start..stop-1 of
        the training / test pool."""
        user = self._users[k]
        return {
            "client": k,
            "user": user,
            "hierarchy": self._hier.get(user),
            "file": self._files.get(user),
            "train_range": _span(client["train"]),
            "val": client["val"].tolist(),
            "test_range": _span(client["test"]),
        }
