"""Writers of tiny image data sets in the real on-disk formats (DATA.md: tests write tiny files).

- ``write_tiny_mnist``: IDX files (uncompressed, or .gz) under ``<root>/MNIST/raw/`` (or
  ``FashionMNIST/raw/``), the layout torchvision's MNIST / FashionMNIST read.
- ``write_tiny_cifar10`` / ``write_tiny_cifar100``: python pickles under
  ``<root>/cifar-10-batches-py/`` / ``<root>/cifar-100-python/`` written like the official
  release (Python 2 protocol-2 pickles whose strings are byte strings), so they load both with
  ``pickle.load(f, encoding="bytes")`` (keys ``b"data"``, as on the CIFAR web page) and with
  torchvision's ``encoding="latin1"``.

Images are a fixed random prototype per class plus noise, so a model can learn them.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np


class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes ``bytes`` as Python 2 ``str`` (BINSTRING opcodes)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _dump_py2(obj, path: Path) -> None:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())


def _images(labels: np.ndarray, shape: tuple[int, ...], num_classes: int, seed: int,
            noise_seed: int) -> np.ndarray:
    protos = np.random.default_rng(seed).integers(0, 256, size=(num_classes, *shape))
    noise = np.random.default_rng(noise_seed).integers(0, 256, size=(len(labels), *shape))
    return (0.75 * protos[labels] + 0.25 * noise).astype(np.uint8)


def _labels(per_class: int, num_classes: int, seed: int) -> np.ndarray:
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(labels)


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">i", d) for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        Path(f"{path}.gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def write_tiny_mnist(
    root,
    per_class_train: int = 6,
    per_class_test: int = 2,
    folder: str = "MNIST",
    num_classes: int = 10,
    compress: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny MNIST-format data set (IDX, uint8 28x28) under ``root/<folder>/raw/``.

    ``folder`` is ``MNIST`` or ``FashionMNIST``; ``compress`` writes ``.gz`` files instead.
    Returns ``root`` as a Path. Labels are balanced, shuffled with ``seed``.
    """
    root = Path(root)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = _labels(per_class, num_classes, seed + (split == "t10k"))
        images = _images(labels, (28, 28), num_classes, seed, seed + 1 + (split == "t10k"))
        _write_idx(raw / f"{split}-images-idx3-ubyte", images, compress)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels.astype(np.uint8), compress)
    return root


def _cifar_batch(labels, num_classes, label_key, name, seed, noise_seed, coarse=None) -> dict:
    data = _images(labels, (3, 32, 32), num_classes, seed, noise_seed)
    batch = {
        b"batch_label": name,
        label_key: [int(v) for v in labels],
        b"data": data.reshape(len(labels), 3072),  # R plane, G plane, B plane (row-major 32x32)
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(labels))],
    }
    if coarse is not None:
        batch[b"coarse_labels"] = [int(v) for v in coarse]
    return batch


def write_tiny_cifar100(
    root, per_class_train: int = 6, per_class_test: int = 2, seed: int = 0
) -> Path:
    """Write a tiny CIFAR-100 in the real layout under ``root/cifar-100-python/``.

    Files ``train``, ``test`` (dicts with ``b"data"`` uint8 (N, 3072), ``b"fine_labels"``,
    ``b"coarse_labels"``, ``b"filenames"``, ``b"batch_label"``) and ``meta``
    (``b"fine_label_names"``, ``b"coarse_label_names"``); 100 classes x ``per_class_*`` images.
    Returns ``root``.
    """
    root = Path(root)
    out = root / "cifar-100-python"
    out.mkdir(parents=True, exist_ok=True)
    for i, (split, per_class) in enumerate((("train", per_class_train), ("test", per_class_test))):
        fine = _labels(per_class, 100, seed + i)
        name = f"{split}ing batch 1 of 1".encode()
        batch = _cifar_batch(fine, 100, b"fine_labels", name, seed, seed + 1 + i, fine // 5)
        _dump_py2(batch, out / split)
    meta = {
        b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i}".encode() for i in range(20)],
    }
    _dump_py2(meta, out / "meta")
    return root


def write_tiny_cifar10(
    root, per_class_train: int = 6, per_class_test: int = 2, seed: int = 0
) -> Path:
    """Write a tiny CIFAR-10 in the real layout under ``root/cifar-10-batches-py/``.

    ``data_batch_1`` .. ``data_batch_5`` (the training images dealt round-robin), ``test_batch``
    (keys ``b"data"``, ``b"labels"``, ``b"filenames"``, ``b"batch_label"``) and ``batches.meta``
    (``b"label_names"``). Returns ``root``.
    """
    root = Path(root)
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    train = _labels(per_class_train, 10, seed)
    for b in range(5):
        labels = train[b::5]
        name = f"training batch {b + 1} of 5".encode()
        batch = _cifar_batch(labels, 10, b"labels", name, seed, seed + 1 + b)
        _dump_py2(batch, out / f"data_batch_{b + 1}")
    test = _labels(per_class_test, 10, seed + 1)
    batch = _cifar_batch(test, 10, b"labels", b"testing batch 1 of 1", seed, seed + 6)
    _dump_py2(batch, out / "test_batch")
    meta = {b"label_names": [f"class_{i}".encode() for i in range(10)], b"num_vis": 3072}
    _dump_py2(meta, out / "batches.meta")
    return root
