"""Corrupt data files: a clear error naming the file, before any training (issue 6).

Each test damages a file written in the real format (IDX, gzip, CIFAR pickles) the way disks and
interrupted downloads do. (A partition that leaves a client without training data is
``test_data.py::test_bad_config_rejected_at_setup``; LEAF JSON is not read by flip yet.)
"""

import gzip
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from compose import compose_cfg
from fixtures_data import _dump_py2, write_tiny_cifar10, write_tiny_cifar100, write_tiny_mnist

from flip.data import load_dataset
from flip.errors import CorruptDataError
from flip.train import train

ROOT = Path(__file__).resolve().parents[1]


def debian_style(tmp_path) -> Path:
    """A directory holding tiny Fashion-MNIST-format .gz files, like Debian's package."""
    return write_tiny_mnist(tmp_path / "src", 3, 1, folder="deb", compress=True) / "deb" / "raw"


def load_fmnist(tmp_path, deb: Path):
    return load_dataset("fmnist", tmp_path / "root", download=False, debian_dir=str(deb))


def idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + b"".join(struct.pack(">i", d) for d in array.shape) + array.tobytes()


# ----- gzip -----------------------------------------------------------------------------------
def test_truncated_gz_names_the_file_and_leaves_nothing_behind(tmp_path):
    deb = debian_style(tmp_path)
    gz = deb / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(CorruptDataError, match="truncated or not a gzip file") as e:
        load_fmnist(tmp_path, deb)
    assert str(gz) in str(e.value) and "apt-get install --reinstall" in str(e.value)
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not list(raw.glob(".train-images*"))  # no partial temporary file


def test_gz_that_is_not_gzip_names_the_file(tmp_path):
    deb = debian_style(tmp_path)
    gz = deb / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(b"<html>404 Not Found</html>")  # what a failed download often saves
    with pytest.raises(CorruptDataError, match="BadGzipFile") as e:
        load_fmnist(tmp_path, deb)
    assert str(gz) in str(e.value)


# ----- IDX ------------------------------------------------------------------------------------
@pytest.fixture
def mnist_raw(tmp_path) -> Path:
    return write_tiny_mnist(tmp_path / "data", 4, 1) / "MNIST" / "raw"


def test_truncated_idx_names_the_file(mnist_raw):
    f = mnist_raw / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CorruptDataError) as e:
        load_dataset("mnist", mnist_raw.parents[1], download=False)
    msg = str(e.value)
    assert str(f) in msg and "IDX header announces 40×28×28 values" in msg and "truncated" in msg


def test_file_that_is_not_idx_names_the_file(mnist_raw):
    f = mnist_raw / "t10k-labels-idx1-ubyte"
    f.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer
    with pytest.raises(CorruptDataError, match="is not an IDX file of 1-D unsigned bytes") as e:
        load_dataset("mnist", mnist_raw.parents[1], download=False)
    assert str(f) in str(e.value)


def test_images_and_labels_of_different_lengths(mnist_raw):
    f = mnist_raw / "train-labels-idx1-ubyte"
    f.write_bytes(idx(np.zeros(39, np.uint8)))  # a valid IDX file, one label short
    with pytest.raises(CorruptDataError, match="holds 40 images but .* holds 39 labels") as e:
        load_dataset("mnist", mnist_raw.parents[1], download=False)
    assert str(f) in str(e.value)


def test_label_out_of_range_names_the_label_file(mnist_raw):
    f = mnist_raw / "t10k-labels-idx1-ubyte"
    f.write_bytes(idx(np.full(10, 12, np.uint8)))
    with pytest.raises(CorruptDataError, match="label 12 outside 0..9") as e:
        load_dataset("mnist", mnist_raw.parents[1], download=False)
    assert str(f) in str(e.value)


# ----- CIFAR pickles --------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_a_dict(path: Path) -> None:
    path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))


def _labels_short(path: Path) -> None:
    _dump_py2({b"data": np.zeros((5, 3072), np.uint8), b"fine_labels": [0] * 4,
               b"labels": [0] * 4}, path)


@pytest.mark.parametrize(
    "damage,text",
    [
        (lambda p: p.write_bytes(b"not a pickle"), "could not be read as a CIFAR pickle"),
        (_truncate, "could not be read as a CIFAR pickle"),
        (_not_a_dict, "holds a list, not a CIFAR dict"),
        (_labels_short, "holds 5 images but 4 labels"),
    ],
    ids=["garbage", "truncated", "not-a-dict", "labels-short"],
)
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_corrupt_cifar_pickle_names_the_file(tmp_path, name, damage, text):
    if name == "cifar10":
        root, f = write_tiny_cifar10(tmp_path, 2, 1), "cifar-10-batches-py/data_batch_3"
    else:
        root, f = write_tiny_cifar100(tmp_path, 2, 1), "cifar-100-python/train"
    damage(root / f)
    with pytest.raises(CorruptDataError, match=text) as e:
        load_dataset(name, root, download=False)
    assert str(root / f) in str(e.value)


# ----- before training, through train() and the CLI -------------------------------------------
def test_corrupt_file_stops_before_training(mnist_raw, tmp_path):
    (mnist_raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03")
    cfg = compose_cfg(
        ["debug=smoke", "data=mnist", f"data.root={mnist_raw.parents[1]}", "data.download=false"],
        tmp_path / "run",
    )
    with pytest.raises(CorruptDataError, match="truncated inside its IDX header"):
        train(cfg)
    assert not (tmp_path / "run" / "rounds.csv").exists()


def test_cli_says_which_file_without_a_traceback(tmp_path):
    deb = debian_style(tmp_path)
    gz = deb / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gzip.compress(idx(np.zeros(30, np.uint8)))[:-8])  # trailer cut off
    out = subprocess.run(
        [
            sys.executable, "-m", "flip", "debug=smoke", f"data.root={tmp_path / 'root'}",
            f"data.debian_dir={deb}", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 1
    assert out.stderr.startswith(f"flip: {gz} cannot be decompressed")
    assert "Traceback" not in out.stderr and not (tmp_path / "run" / "rounds.csv").exists()
