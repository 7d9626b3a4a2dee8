"""Partition functions (flip/data/partition.py; DATA.md "Partitions (non-IID)")."""

from __future__ import annotations

import numpy as np
import pytest

from flip.data.partition import (
    class_histogram,
    partition_dirichlet,
    partition_iid,
    partition_patho,
    split_train_test,
)
from flip.errors import ConfigError


def balanced_labels(num_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_disjoint_sorted(parts, n: int, complete: bool = True) -> None:
    for p in parts:
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0), "indices must be sorted and unique within a client"
    allidx = np.concatenate(parts)
    assert len(np.unique(allidx)) == len(allidx), "an index is held by two clients"
    assert allidx.min() >= 0 and allidx.max() < n
    if complete:
        assert len(allidx) == n, "an index was lost"


# ---------------------------------------------------------------------------------------- iid
@pytest.mark.parametrize("n,k", [(100, 7), (60000, 100), (5, 5), (10, 1)])
def test_iid_sizes_and_coverage(n, k):
    labels = balanced_labels(10, n // 10 + 1)[:n]
    parts = partition_iid(labels, k, rng())
    assert len(parts) == k
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert_disjoint_sorted(parts, n)


def test_iid_is_shuffled_and_seeded():
    labels = balanced_labels(10, 10)
    a, b, c = (partition_iid(labels, 4, rng(s)) for s in (1, 1, 2))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert not np.array_equal(a[0], np.arange(25)), "iid must shuffle before splitting"


# -------------------------------------------------------------------------------------- patho
@pytest.mark.parametrize(
    "k,c,num_classes",
    [(20, 2, 10), (7, 3, 10), (100, 2, 10), (10, 10, 10), (13, 5, 100), (50, 20, 100), (1, 4, 10)],
)
def test_patho_exact_classes_and_balanced_holders(k, c, num_classes):
    labels = balanced_labels(num_classes, 60)
    parts = partition_patho(labels, k, c, rng(3))
    assert len(parts) == k
    hist = class_histogram(labels, parts, num_classes)
    assert np.all((hist > 0).sum(axis=1) == c), "every client must hold exactly c classes"
    holders = (hist > 0).sum(axis=0)
    lo, hi = (k * c) // num_classes, -(-(k * c) // num_classes)
    assert holders.sum() == k * c
    assert np.all((holders >= lo) & (holders <= hi)), holders
    # each class is split evenly among its holders
    for cls in range(num_classes):
        counts = hist[hist[:, cls] > 0, cls]
        if len(counts):
            assert counts.max() - counts.min() <= 1
            assert counts.sum() == 60
    assert_disjoint_sorted(parts, len(labels), complete=k * c >= num_classes)


def test_patho_greedy_never_fails_on_random_settings():
    r = np.random.default_rng(123)
    for _ in range(300):
        num_classes = int(r.integers(1, 30))
        c = int(r.integers(1, num_classes + 1))
        k = int(r.integers(1, 60))
        labels = balanced_labels(num_classes, 70, seed=int(r.integers(1000)))
        parts = partition_patho(labels, k, c, np.random.default_rng(int(r.integers(10**6))))
        hist = class_histogram(labels, parts, num_classes)
        assert np.all((hist > 0).sum(axis=1) == c)
        holders = (hist > 0).sum(axis=0)
        assert holders.max() - holders.min() <= 1


def test_patho_fewer_slots_than_classes_leaves_classes_unused():
    labels = balanced_labels(10, 30)
    parts = partition_patho(labels, 3, 2, rng())
    hist = class_histogram(labels, parts, 10)
    assert ((hist > 0).sum(axis=0) > 0).sum() == 6  # 3 clients x 2 classes
    assert_disjoint_sorted(parts, len(labels), complete=False)
    assert sum(len(p) for p in parts) == 6 * 30


def test_patho_seeded():
    labels = balanced_labels(10, 30)
    a, b, c = (partition_patho(labels, 10, 2, rng(s)) for s in (4, 4, 5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("c", [0, 11, -1])
def test_patho_bad_classes_per_client(c):
    with pytest.raises(ConfigError, match=r"partition\.classes_per_client") as e:
        partition_patho(balanced_labels(10, 5), 4, c, rng())
    assert "1..10" in str(e.value)


def test_patho_class_smaller_than_its_holders():
    labels = np.array([0] * 10 + [1])  # class 1 has one sample but two of 4 clients hold it
    with pytest.raises(ConfigError, match=r"federation\.num_clients") as e:
        partition_patho(labels, 4, 1, rng())
    assert "Class 1 has 1 samples" in str(e.value)


# ---------------------------------------------------------------------------------- dirichlet
@pytest.mark.parametrize("alpha,k,min_samples", [(0.1, 10, 5), (1.0, 30, 10), (100.0, 5, 50)])
def test_dirichlet_min_samples_and_coverage(alpha, k, min_samples):
    labels = balanced_labels(10, 100)
    parts = partition_dirichlet(labels, k, alpha, min_samples, rng(7))
    assert len(parts) == k
    assert min(len(p) for p in parts) >= min_samples
    assert_disjoint_sorted(parts, len(labels))


def test_dirichlet_seeded():
    labels = balanced_labels(10, 100)
    a, b, c = (partition_dirichlet(labels, 8, 0.5, 5, rng(s)) for s in (11, 11, 12))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_dirichlet_alpha_controls_heterogeneity():
    labels = balanced_labels(10, 200)
    skewed = class_histogram(labels, partition_dirichlet(labels, 10, 0.05, 1, rng(1)), 10)
    flat = class_histogram(labels, partition_dirichlet(labels, 10, 1000.0, 1, rng(1)), 10)
    # share of a client's data in its largest class: near 1 for small alpha, near 0.1 for large
    top_skewed = (skewed.max(axis=1) / skewed.sum(axis=1)).mean()
    top_flat = (flat.max(axis=1) / flat.sum(axis=1)).mean()
    assert top_skewed > 0.6 and top_flat < 0.2, (top_skewed, top_flat)


@pytest.mark.parametrize("alpha", [0, -1.0])
def test_dirichlet_bad_alpha(alpha):
    with pytest.raises(ConfigError, match=r"partition\.alpha"):
        partition_dirichlet(balanced_labels(10, 10), 4, alpha, 1, rng())


def test_dirichlet_impossible_min_samples_is_rejected_at_once():
    with pytest.raises(ConfigError, match=r"partition\.min_samples") as e:
        partition_dirichlet(balanced_labels(10, 10), 10, 1.0, 11, rng())
    assert "partition.alpha" in str(e.value)


def test_dirichlet_unreachable_min_samples_gives_up_after_max_tries():
    labels = balanced_labels(10, 100)  # 1000 samples, 20 clients; 40 each is possible but rare
    with pytest.raises(ConfigError, match=r"partition\.min_samples") as e:
        partition_dirichlet(labels, 20, 0.01, 40, rng(), max_tries=20)
    msg = str(e.value)
    assert "larger partition.alpha" in msg and "smaller partition.min_samples" in msg
    assert "20 tries" in msg


# --------------------------------------------------------------------------- shared validation
@pytest.mark.parametrize("k", [0, 101])
@pytest.mark.parametrize(
    "fn",
    [
        lambda y, k: partition_iid(y, k, rng()),
        lambda y, k: partition_patho(y, k, 2, rng()),
        lambda y, k: partition_dirichlet(y, k, 1.0, 0, rng()),
    ],
    ids=["iid", "patho", "dirichlet"],
)
def test_num_clients_out_of_range(fn, k):
    with pytest.raises(ConfigError, match=r"federation\.num_clients") as e:
        fn(balanced_labels(10, 10), k)
    assert "1..100" in str(e.value)


# ------------------------------------------------------------------------- train/test + counts
@pytest.mark.parametrize(
    "n,frac,n_test", [(10, 0.2, 2), (7, 0.2, 1), (100, 0.1, 10), (5, 0.0, 0), (3, 0.5, 2)]
)
def test_split_train_test_sizes(n, frac, n_test):
    idx = np.arange(1000, 1000 + n)
    tr, te = split_train_test(idx, frac, rng())
    assert len(te) == n_test == round(frac * n) and len(tr) == n - n_test
    assert np.array_equal(np.sort(np.concatenate([tr, te])), idx)
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)


def test_split_train_test_is_random_and_validated():
    idx = np.arange(100)
    _, te = split_train_test(idx, 0.2, rng(0))
    assert not np.array_equal(te, np.arange(20)), "the test set must be a random subset"
    with pytest.raises(ConfigError, match=r"data\.test_fraction"):
        split_train_test(idx, 1.0, rng())


def test_class_histogram_counts():
    labels = np.array([0, 1, 1, 2, 2, 2, 0])
    parts = [np.array([0, 1, 2]), np.array([3, 4, 5, 6]), np.array([], dtype=np.int64)]
    hist = class_histogram(labels, parts, 4)
    assert hist.tolist() == [[1, 2, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]]


@pytest.mark.parametrize(
    "fn",
    [
        lambda y: partition_patho(y, 10, 2, rng(2)),
        lambda y: partition_dirichlet(y, 5, 1.0, 1, rng(2)),
    ],
    ids=["patho", "dirichlet"],
)
def test_class_samples_are_shuffled_before_splitting(fn):
    labels = np.repeat(np.arange(10), 100)  # ordered data set: a class is one contiguous block
    parts = fn(labels)
    runs = []
    for p in parts:
        for c in np.unique(labels[p]):
            idx = p[labels[p] == c]
            if len(idx) >= 10:
                runs.append(idx.max() - idx.min() + 1 == len(idx))
    assert runs and not any(runs), "a client got a contiguous block of a class: not shuffled"
