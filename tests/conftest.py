"""Shared pytest fixtures. Each owner keeps their fixtures in a clearly named section."""

from __future__ import annotations

import pytest

# ============================================================================================
# Data fixtures (owner: flip/data). Tiny data sets in the real on-disk formats; writers live
# in tests/fixtures_data.py so other tests (e.g. a 1-round CIFAR-100 smoke run) can reuse them.
# ============================================================================================
from fixtures_data import write_tiny_cifar10, write_tiny_cifar100, write_tiny_mnist


@pytest.fixture
def tiny_cifar100(tmp_path):
    """Root dir holding a tiny CIFAR-100 (100 classes x 6 train / 2 test) in the real layout."""
    return write_tiny_cifar100(tmp_path / "data", per_class_train=6, per_class_test=2)


@pytest.fixture
def tiny_cifar10(tmp_path):
    """Root dir holding a tiny CIFAR-10 (10 classes x 6 train / 2 test) in the real layout."""
    return write_tiny_cifar10(tmp_path / "data", per_class_train=6, per_class_test=2)


@pytest.fixture
def tiny_mnist(tmp_path):
    """Root dir holding a tiny MNIST (10 classes x 20 train / 4 test, IDX) under MNIST/raw/."""
    return write_tiny_mnist(tmp_path / "data", per_class_train=20, per_class_test=4)


# ============================================================================================
# End of data fixtures.
# ============================================================================================
