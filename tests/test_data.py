"""Data sets, transforms and the federated data module (flip/data; DATA.md)."""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from fixtures_data import write_tiny_mnist
from torchvision.transforms import v2

from flip.data import (
    ClientDataset,
    FederatedDataModule,
    build_transform,
    load_dataset,
)
from flip.errors import ConfigError, DataNotFoundError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not DEBIAN.is_dir(),
    reason="Debian Fashion-MNIST absent (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory):
    """A data root into which the Debian Fashion-MNIST is decompressed once per module."""
    root = tmp_path_factory.mktemp("fmnist")
    load_dataset("fmnist", root, download=False)
    return root


# ------------------------------------------------------------------------------ load_dataset
@needs_debian
def test_real_fashion_mnist_from_debian(fmnist_root):
    train, test = load_dataset("fmnist", fmnist_root, download=False)
    assert tuple(train.images.shape) == (60000, 1, 28, 28)
    assert tuple(test.images.shape) == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.num_classes == 10 and train.name == "fmnist"
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    raw = fmnist_root / "FashionMNIST" / "raw"
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 16 + 60000 * 784
    # the stated normalisation constants are those of the real training split
    x = train.images.float() / 255
    assert abs(x.mean().item() - train.mean[0]) < 1e-3
    assert abs(x.std().item() - train.std[0]) < 1e-3


def test_fmnist_from_a_debian_style_directory(tmp_path):
    """Works without the Debian package: tiny .gz files in a fake Debian directory."""
    deb = write_tiny_mnist(tmp_path / "src", 2, 1, folder="deb", compress=True) / "deb" / "raw"
    train, test = load_dataset("fmnist", tmp_path / "root", download=False, debian_dir=str(deb))
    assert len(train) == 20 and len(test) == 10 and train.mean == (0.2860,)
    assert (tmp_path / "root" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_tiny_mnist_roundtrip(tmp_path):
    write_tiny_mnist(tmp_path, per_class_train=3, per_class_test=1, compress=True)
    train, test = load_dataset("mnist", tmp_path, download=False)  # .gz decompressed in place
    assert tuple(train.images.shape) == (30, 1, 28, 28) and len(test) == 10
    assert sorted(train.labels.tolist()) == sorted(list(range(10)) * 3)
    assert train.mean == (0.1307,)


def test_tiny_cifar100_pixels_keep_the_channel_layout(tiny_cifar100):
    train, test = load_dataset("cifar100", tiny_cifar100, download=False)
    assert tuple(train.images.shape) == (600, 3, 32, 32) and len(test) == 200
    assert train.num_classes == 100 and len(train.mean) == 3
    with open(tiny_cifar100 / "cifar-100-python" / "train", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"} <= set(raw)
    # row = R plane, G plane, B plane -> images[i] == row.reshape(3, 32, 32)
    expected = torch.from_numpy(raw[b"data"].reshape(-1, 3, 32, 32))
    assert torch.equal(train.images, expected)
    assert train.labels.tolist() == raw[b"fine_labels"]


def test_tiny_cifar10_loads(tiny_cifar10):
    train, test = load_dataset("cifar10", tiny_cifar10, download=False)
    assert tuple(train.images.shape) == (60, 3, 32, 32) and len(test) == 20
    assert torch.bincount(train.labels).tolist() == [6] * 10


def test_unknown_dataset(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.name") as e:
        load_dataset("imagenet", tmp_path, download=False)
    assert "cifar100" in str(e.value)
    with pytest.raises(ConfigError, match=r"data\.name"):
        FederatedDataModule("svhn", root=str(tmp_path))


@pytest.mark.parametrize(
    "name,folder,a_file",
    [
        ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
        ("fmnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py", "data_batch_5"),
        ("cifar100", "cifar-100-python", "meta"),
    ],
)
def test_missing_data_names_the_path(tmp_path, name, folder, a_file):
    with pytest.raises(DataNotFoundError) as e:
        load_dataset(name, tmp_path, download=False, debian_dir=str(tmp_path / "no-debian"))
    msg = str(e.value)
    assert str(tmp_path / folder) in msg and a_file in msg and "data.download" in msg
    assert ("apt-get install dataset-fashion-mnist" in msg) == (name == "fmnist")


def test_partial_cifar_names_the_missing_file(tiny_cifar100):
    (tiny_cifar100 / "cifar-100-python" / "test").unlink()
    with pytest.raises(DataNotFoundError, match="missing: test"):
        load_dataset("cifar100", tiny_cifar100, download=False)


@pytest.mark.parametrize("name,module", [("mnist", "mnist"), ("cifar100", "cifar")])
def test_failed_download_is_a_clear_error(tmp_path, monkeypatch, name, module):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(f"torchvision.datasets.{module}.download_and_extract_archive", offline)
    with pytest.raises(DataNotFoundError, match="download failed") as e:
        load_dataset(name, tmp_path, download=True)
    assert str(tmp_path) in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_corrupt_files_are_a_clear_error(tiny_cifar100):
    (tiny_cifar100 / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(DataNotFoundError, match="could not be read"):
        load_dataset("cifar100", tiny_cifar100, download=False)


# -------------------------------------------------------------------------------- transforms
def test_build_transform_train_vs_test(tiny_cifar10):
    train, _ = load_dataset("cifar10", tiny_cifar10, download=False)
    tf_train = build_transform(train, True, resize=40, hflip=True, color_jitter=0.3)
    tf_test = build_transform(train, False, resize=40, hflip=True, color_jitter=0.3)
    kinds = [type(t) for t in tf_train.transforms]
    assert kinds == [v2.Resize, v2.RandomHorizontalFlip, v2.ColorJitter, v2.ToDtype, v2.Normalize]
    assert [type(t) for t in tf_test.transforms] == [v2.Resize, v2.ToDtype, v2.Normalize]
    x = tf_test(train.images[0])
    assert x.dtype == torch.float32 and tuple(x.shape) == (3, 40, 40)
    plain = build_transform(train, False)
    mean, std = torch.tensor(train.mean)[:, None, None], torch.tensor(train.std)[:, None, None]
    expected = (train.images[3].float() / 255 - mean) / std
    torch.testing.assert_close(plain(train.images[3]), expected)


def test_client_dataset_items(tiny_cifar10):
    train, _ = load_dataset("cifar10", tiny_cifar10, download=False)
    ds = ClientDataset(train.images, train.labels, np.array([5, 2]), build_transform(train, False))
    assert len(ds) == 2
    x, y = ds[1]
    assert tuple(x.shape) == (3, 32, 32) and isinstance(y, int) and y == int(train.labels[2])


# ----------------------------------------------------------------------------- data module
def make_dm(root, **kw) -> FederatedDataModule:
    args = dict(name="mnist", root=str(root), num_clients=5, partition="iid", batch_size=8)
    args.update(kw)
    return FederatedDataModule(**args)


def test_datamodule_tiny_cifar100_dirichlet(tiny_cifar100):
    dm = make_dm(tiny_cifar100, name="cifar100", partition="dirichlet", alpha=1.0,
                 min_samples=20, num_clients=8, test_fraction=0.2)
    assert dm.num_classes == 100 and dm.input_shape == (3, 32, 32) and dm.num_clients == 8
    dm.setup()
    n_train = [dm.client_num_train(k) for k in range(8)]
    n_test = [dm.client_num_test(k) for k in range(8)]
    assert sum(n_train) + sum(n_test) == 600
    assert min(a + b for a, b in zip(n_train, n_test, strict=True)) >= 20
    for k in range(8):
        assert n_test[k] == round(0.2 * (n_train[k] + n_test[k]))
    x, y = next(iter(dm.client_train_dataloader(3, seed=0)))
    assert tuple(x.shape) == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, _ = next(iter(dm.test_dataloader()))
    assert tuple(xt.shape) == (200, 3, 32, 32)  # whole official test split in one eval batch
    allidx = np.concatenate([np.concatenate([c["train"], c["test"]])
                             for c in dm.partition_indices])
    assert np.array_equal(np.sort(allidx), np.arange(600))


def test_client_loaders_normalise_and_are_seeded(tiny_mnist):
    dm = make_dm(tiny_mnist, num_clients=4, batch_size=7, eval_batch_size=100)
    dm.setup()
    train, _ = load_dataset("mnist", tiny_mnist, download=False)
    # local test loader: exactly (x / 255 - mean) / std of the client's test samples, in order
    idx = dm.partition_indices[2]["test"]
    x, y = next(iter(dm.client_test_dataloader(2)))
    expected = (train.images[idx].float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(x, expected)
    assert y.tolist() == train.labels[idx].tolist()
    assert len(dm.client_test_dataloader(2).dataset) == dm.client_num_test(2)

    def order(seed):
        batches = list(dm.client_train_dataloader(1, seed=seed))
        assert [len(b[1]) for b in batches][:-1] == [7] * (len(batches) - 1)  # drop_last=False
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])

    (xa, ya), (xb, yb), (xc, _) = order(5), order(5), order(6)
    assert len(ya) == dm.client_num_train(1)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc)
    tr_idx = dm.partition_indices[1]["train"]
    assert sorted(ya.tolist()) == sorted(train.labels[tr_idx].tolist())
    assert not torch.equal(ya, train.labels[tr_idx])  # shuffled, not in index order


def test_resize_and_augmentation_shapes(tiny_mnist):
    dm = make_dm(tiny_mnist, resize=32, hflip=True, color_jitter=0.2)
    assert dm.input_shape == (1, 32, 32)
    dm.setup()
    x, _ = next(iter(dm.client_train_dataloader(0, seed=1)))
    assert tuple(x.shape[1:]) == (1, 32, 32)
    x, _ = next(iter(dm.test_dataloader()))
    assert tuple(x.shape[1:]) == (1, 32, 32)


def test_partition_is_seeded_and_setup_idempotent(tiny_mnist):
    a, b, c = (make_dm(tiny_mnist, partition="patho", seed=s) for s in (1, 1, 2))
    for dm in (a, b, c):
        dm.setup()
    first = a.partition_indices
    a.setup()
    assert a.partition_indices is first
    same = all(np.array_equal(x[s], y[s]) for x, y in zip(a.partition_indices,
               b.partition_indices, strict=True) for s in ("train", "test"))
    diff = all(np.array_equal(x["train"], y["train"]) for x, y in zip(a.partition_indices,
               c.partition_indices, strict=True))
    assert same and not diff


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(partition="shards"), "partition.name"),
        (dict(partition="dirichlet", alpha=0.0), "partition.alpha"),
        (dict(partition="dirichlet", alpha=-2), "partition.alpha"),
        (dict(partition="patho", classes_per_client=11), "partition.classes_per_client"),
        (dict(test_fraction=1.0), "data.test_fraction"),
        (dict(train_subset=0.0), "data.train_subset"),
        (dict(batch_size=0), "data.batch_size"),
        (dict(num_clients=0), "federation.num_clients"),
    ],
)
def test_bad_config_rejected_at_construction(tmp_path, kw, field):
    with pytest.raises(ConfigError) as e:
        make_dm(tmp_path, **kw)
    assert field in str(e.value)


@pytest.mark.parametrize(
    "kw,field,text",
    [
        (dict(num_clients=201), "federation.num_clients", "1..200"),
        (dict(num_clients=20, partition="dirichlet", min_samples=30), "partition.min_samples",
         "partition.alpha"),
        (dict(num_clients=10, test_fraction=0.95, train_subset=0.1), "federation.num_clients",
         "Client 0 has no training samples"),
    ],
)
def test_bad_config_rejected_at_setup(tiny_mnist, kw, field, text):
    dm = make_dm(tiny_mnist, **kw)
    with pytest.raises(ConfigError) as e:
        dm.setup()
    assert field in str(e.value) and text in str(e.value)


def test_missing_data_in_setup(tmp_path):
    dm = make_dm(tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="MNIST/raw"):
        dm.setup()


def test_save_partition_files_agree(tiny_mnist, tmp_path):
    dm = make_dm(tiny_mnist, partition="patho", classes_per_client=2, num_clients=6, seed=3)
    dm.setup()
    out = tmp_path / "run"
    dm.save_partition(out)
    doc = json.loads((out / "partition.json").read_text())
    assert doc["seed"] == 3 and doc["partition"] == "patho" and len(doc["clients"]) == 6
    rows = list(csv.DictReader(open(out / "class_histogram.csv")))
    assert list(rows[0])[:5] == ["client", "n_train", "n_val", "n_test", "class_0"]
    assert len(rows[0]) == 14
    train, _ = load_dataset("mnist", tiny_mnist, download=False)
    for k, (client, row) in enumerate(zip(doc["clients"], rows, strict=True)):
        assert client["client"] == k == int(row["client"])
        assert client["train"] == dm.partition_indices[k]["train"].tolist()
        assert len(client["train"]) == int(row["n_train"]) == dm.client_num_train(k)
        assert len(client["val"]) == int(row["n_val"]) == dm.client_num_val(k)
        assert len(client["test"]) == int(row["n_test"]) == dm.client_num_test(k)
        assert not set(client["train"]) & set(client["val"])  # validation is held out of train
        counts = [int(row[f"class_{c}"]) for c in range(10)]
        assert sum(counts) == int(row["n_train"]) + int(row["n_val"]) + int(row["n_test"])
        labels = train.labels[client["train"] + client["val"] + client["test"]]
        assert counts == torch.bincount(labels, minlength=10).tolist()
        assert sum(v > 0 for v in counts) == 2  # patho: exactly two classes
    png = (out / "class_histogram.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


@needs_debian
def test_datamodule_real_fmnist_subset_patho(fmnist_root, tmp_path):
    dm = FederatedDataModule("fmnist", root=str(fmnist_root), num_clients=20,
                             partition="patho", classes_per_client=2, train_subset=0.05, seed=0)
    dm.setup()
    hist = dm.class_histogram()
    assert hist.sum() == 3000 and np.all((hist > 0).sum(axis=1) == 2)
    assert np.all(hist.sum(axis=0) == 300)  # stratified 5% subset of 6000 per class
    x, _ = next(iter(dm.test_dataloader()))
    assert tuple(x.shape) == (512, 1, 28, 28)
    assert abs(x.mean().item()) < 0.15 and abs(x.std().item() - 1) < 0.15  # normalised
    dm.save_partition(tmp_path)
    assert (tmp_path / "class_histogram.png").stat().st_size > 5000


def test_prepare_data_then_setup_with_files_present(tiny_mnist, monkeypatch):
    def offline(*args, **kwargs):
        raise AssertionError("no download may be attempted when the files are present")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    dm = make_dm(tiny_mnist, download=True)
    dm.prepare_data()
    dm.setup()
    assert sum(dm.client_num_train(k) + dm.client_num_test(k) for k in range(5)) == 200
