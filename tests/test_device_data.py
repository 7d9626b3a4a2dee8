"""The device data path (flip/data/device_batches.py, ``data.device_data``): tensors on the
training device batched by index give the DataLoaders' training exactly; on-device
augmentations follow torchvision's semantics."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from fixtures_data import write_tiny_mnist
from fixtures_leaf import write_tiny_femnist, write_tiny_shakespeare
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from flip.algorithms import FedAvg
from flip.data import FederatedDataModule, LeafDataModule, build_transform, load_dataset
from flip.data import device_batches as db
from flip.data.device_batches import BatchAugment, DeviceBatches, color_jitter
from flip.errors import ConfigError
from flip.federation import Federation
from flip.federation.client import ClientModule
from flip.models import TwoCNN, init_weights
from flip.params import ClientParams, FederationParams
from flip.train import quiet_lightning

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_debian = pytest.mark.skipif(
    not DEBIAN.is_dir(),
    reason="Debian Fashion-MNIST absent (apt-get install dataset-fashion-mnist)",
)


def trainer(max_epochs: int = 1, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, **kw)


def mnist_dm(root, device_data, **kw) -> FederatedDataModule:
    args = dict(root=str(root), num_clients=4, partition="iid", batch_size=7,
                eval_batch_size=30, seed=0, device_data=device_data)
    args.update(kw)
    dm = FederatedDataModule("mnist", **args)
    dm.setup()
    return dm


def assert_same_batches(a, b) -> None:
    """Same number of batches, each bit-identical (x and y)."""
    a, b = list(a), list(b)
    assert len(a) == len(b) > 0
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.dtype == xb.dtype and torch.equal(xa, xb)
        assert ya.dtype == yb.dtype == torch.int64 and torch.equal(ya, yb)


# ------------------------------------------------------------------ identical training
@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    load_dataset("fmnist", root, download=False)  # decompress Debian's files once
    return root


@needs_debian
def test_real_fmnist_client_trains_identically_on_both_paths(fmnist_root):
    """GPU-path vs DataLoader path give identical training on CPU for a fixed seed: one real
    Fashion-MNIST client, ClientModule through a Lightning Trainer, 3 epochs (so the
    permutations of epochs 2 and 3 depend on the generator state the first left)."""
    quiet_lightning()
    dms = {mode: FederatedDataModule("fmnist", root=str(fmnist_root), num_clients=10,
                                     partition="patho", train_subset=0.1, batch_size=64,
                                     seed=3, device_data=mode)
           for mode in ("false", "true")}
    for dm in dms.values():
        dm.setup()
        dm.use_device("cpu")
    n = dms["true"].client_num_train(4)
    assert n % 64 != 0  # a short last batch, as in the demo
    torch.manual_seed(0)
    net0 = init_weights(TwoCNN(1, 10, 8))
    params = {}
    for mode, dm in dms.items():
        loader = dm.client_train_dataloader(4, seed=123)
        assert isinstance(loader, DataLoader if mode == "false" else DeviceBatches)
        assert len(loader) == -(-n // 64)
        net = copy.deepcopy(net0)
        module = ClientModule(net, 10, lambda p, lr: torch.optim.Adam(p, lr=lr), 1e-3)
        torch.manual_seed(123)
        trainer(3).fit(module, train_dataloaders=loader)
        assert len(module.epoch_losses) == 3
        params[mode] = {k: v.detach().clone() for k, v in net.named_parameters()}
    trained = params["true"]["classifier.4.weight"]
    assert not torch.equal(trained, net0.classifier[4].weight)
    for k, v in params["false"].items():
        assert torch.equal(v, params["true"][k]), k
    test = {mode: dm.test_dataloader() for mode, dm in dms.items()}
    assert len(test["true"]) == len(test["false"]) == 20  # 10000 / 512
    assert_same_batches(test["false"], test["true"])


def test_federation_rounds_identical_on_both_paths(tmp_path):
    """Two rounds of FedAvg (training, aggregation, local and global evaluation) on tiny MNIST:
    the same global model and metrics whether the clients' data come as DataLoaders or as
    tensors (Federation hands the device to the data module)."""
    quiet_lightning()
    root = write_tiny_mnist(tmp_path / "data", per_class_train=20, per_class_test=4)
    results = {}
    for mode in ("false", "auto"):
        dm = mnist_dm(root, mode, batch_size=16, eval_batch_size=50)
        torch.manual_seed(0)
        fed = Federation(
            init_weights(TwoCNN(1, 10, 4)), dm, FedAvg(),
            trainer=trainer,
            params=FederationParams(4, 0.5, rounds=2, local_epochs=2),
            client=ClientParams(1e-3, optimizer={"_target_": "torch.optim.Adam"}),
            seed=0, progress=False,
        )
        assert isinstance(dm.client_test_dataloader(0), DataLoader if mode == "false"
                          else DeviceBatches)
        fed.fit()
        results[mode] = (fed.net.state_dict(), fed.history)
    (net_a, hist_a), (net_b, hist_b) = results["false"], results["auto"]
    for k, v in net_a.items():
        assert torch.equal(v, net_b[k]), k
    for ra, rb in zip(hist_a, hist_b, strict=True):
        assert {k: v for k, v in ra.items() if not k.startswith("time/")} == \
            {k: v for k, v in rb.items() if not k.startswith("time/")}


# ------------------------------------------------------------------ batches and selection
@pytest.mark.parametrize("resize", [None, 32])
def test_batches_equal_the_dataloaders(tiny_mnist, resize):
    """Every loader, several epochs: bit-identical batches, resize included (preprocessed once
    in chunks on the device vs per sample by the DataLoader)."""
    a, b = mnist_dm(tiny_mnist, "false", resize=resize), mnist_dm(tiny_mnist, "true",
                                                                  resize=resize)
    la, lb = a.client_train_dataloader(1, seed=5), b.client_train_dataloader(1, seed=5)
    assert isinstance(la, DataLoader) and isinstance(lb, DeviceBatches)
    assert len(lb) == len(la) == -(-b.client_num_train(1) // 7)
    for _ in range(3):  # each epoch a new permutation, the same one on both paths
        assert_same_batches(la, lb)
    it = iter(lb)  # iter() alone draws nothing (Lightning calls it to check the iterable)
    assert_same_batches(la, lb)
    del it
    for k in range(4):
        assert_same_batches(a.client_test_dataloader(k), b.client_test_dataloader(k))
    assert_same_batches(a.test_dataloader(), b.test_dataloader())


def test_selection_and_one_cache(tiny_mnist, monkeypatch):
    kinds = {}
    for mode, device in (("auto", None), ("auto", "cpu"), ("false", "cpu"), ("true", None)):
        dm = mnist_dm(tiny_mnist, mode)
        if device:
            dm.use_device(device)
        kinds[mode, device] = type(dm.client_train_dataloader(0, seed=1)).__name__
    assert kinds == {("auto", None): "DataLoader", ("auto", "cpu"): "DeviceBatches",
                     ("false", "cpu"): "DataLoader", ("true", None): "DeviceBatches"}
    dm = mnist_dm(tiny_mnist, True)  # a YAML boolean
    dm.use_device("cpu")
    first, again = dm.client_train_dataloader(0, 1), dm.client_train_dataloader(2, 9)
    assert first.x is again.x is dm.client_test_dataloader(3).x  # placed once, shared
    assert first.x.shape == (200, 1, 28, 28) and dm.test_dataloader().x.shape == (40, 1, 28, 28)
    # auto falls back to DataLoaders when the splits do not fit in half the free memory
    need = dm._device_bytes()
    assert need == 240 * (4 * 784 + 8)
    monkeypatch.setattr(db, "free_memory_bytes", lambda device: 2 * need - 1)
    small = mnist_dm(tiny_mnist, "auto")
    small.use_device("cpu")
    assert isinstance(small.client_train_dataloader(0, 1), DataLoader)
    monkeypatch.setattr(db, "free_memory_bytes", lambda device: 2 * need)
    small.use_device("cpu")  # same device: decided already
    assert isinstance(small.client_train_dataloader(0, 1), DataLoader)
    fits = mnist_dm(tiny_mnist, "auto")
    fits.use_device("cpu")
    assert isinstance(fits.client_train_dataloader(0, 1), DeviceBatches)


def test_free_memory_of_the_cpu():
    assert db.free_memory_bytes(torch.device("cpu")) > 2**20


@pytest.mark.parametrize("value", ["maybe", "yes", 1, None])
def test_bad_device_data_is_a_config_error(tiny_mnist, value):
    with pytest.raises(ConfigError, match="data.device_data"):
        FederatedDataModule("mnist", root=str(tiny_mnist), device_data=value)
    with pytest.raises(ConfigError, match="data.device_data"):
        LeafDataModule("femnist", "nowhere", device_data=value)


@pytest.mark.parametrize("name", ["femnist", "shakespeare"])
def test_leaf_batches_equal_the_dataloaders(tmp_path, name):
    write = write_tiny_femnist if name == "femnist" else write_tiny_shakespeare
    dms = []
    for mode in ("false", "true"):
        dm = LeafDataModule(name, str(write(tmp_path / mode)), batch_size=4, eval_batch_size=8,
                            seed=0, device_data=mode)
        dm.setup()
        dms.append(dm)
    a, b = dms
    la, lb = a.client_train_dataloader(1, seed=2), b.client_train_dataloader(1, seed=2)
    assert isinstance(lb, DeviceBatches) and len(la) == len(lb)
    for _ in range(2):
        assert_same_batches(la, lb)
    for k in range(b.num_clients):
        assert_same_batches(a.client_test_dataloader(k), b.client_test_dataloader(k))
    assert_same_batches(a.test_dataloader(), b.test_dataloader())


# ------------------------------------------------------------------ augmentations
def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_no_augmentation_and_p0_are_identity():
    x = torch.randn(16, 3, 8, 8)
    aug = BatchAugment((0.5,) * 3, (0.25,) * 3, hflip=False, color_jitter=None, generator=gen())
    assert not aug.active and torch.equal(aug(x), x)
    aug = BatchAugment((0.5,) * 3, (0.25,) * 3, hflip=0.0, color_jitter=0.0, generator=gen())
    assert torch.equal(aug(x), x)


def test_flips_are_torch_flip_per_sample():
    x = torch.randn(200, 1, 5, 7)
    flipped = torch.flip(x, dims=[-1])
    assert torch.equal(BatchAugment((0.0,), (1.0,), 1.0, None, gen())(x), flipped)
    out = BatchAugment((0.0,), (1.0,), True, None, gen(1))(x)
    is_flip = torch.tensor([torch.equal(o, f) for o, f in zip(out, flipped, strict=True)])
    is_same = torch.tensor([torch.equal(o, s) for o, s in zip(out, x, strict=True)])
    assert torch.all(is_flip ^ is_same)  # every sample is one or the other
    assert 70 < int(is_flip.sum()) < 130  # p = 0.5 of 200 (binomial sd 7)
    again = BatchAugment((0.0,), (1.0,), True, None, gen(1))(x)
    assert torch.equal(out, again)  # the client seed fixes the draws


@pytest.mark.parametrize("strength, lo, hi", [(0.3, 0.7, 1.3), (1.5, 0.0, 2.5)])
def test_jitter_factors_in_range(strength, lo, hi):
    f = BatchAugment((0.0,), (1.0,), False, strength, gen()).factors(5000)
    assert f.shape == (3, 5000) and f.min() >= lo and f.max() <= hi
    assert f.min() < lo + 0.01 and f.max() > hi - 0.01  # uniform over the whole range
    assert torch.allclose(f.mean(dim=1), torch.full((3,), (lo + hi) / 2), atol=0.05)


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_matches_torchvision_functional(channels):
    img = torch.rand(6, channels, 9, 9, generator=gen(2))
    b = torch.tensor([0.5, 1.0, 1.4, 0.0, 2.0, 0.9])
    c = torch.tensor([1.3, 0.6, 1.0, 0.2, 1.9, 0.0])
    s = torch.tensor([0.0, 1.5, 0.7, 1.0, 2.2, 0.4])
    out = color_jitter(img, b, c, s)
    for i in range(len(img)):
        ref = TF.adjust_brightness(img[i], float(b[i]))
        ref = TF.adjust_contrast(ref, float(c[i]))
        ref = TF.adjust_saturation(ref, float(s[i]))
        torch.testing.assert_close(out[i], ref, atol=1e-6, rtol=0)
    assert out.min() >= 0 and out.max() <= 1


def test_augment_jitters_normalised_batches():
    """BatchAugment un-normalises, jitters with its drawn factors, normalises again."""
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    m, sd = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    img = torch.rand(10, 3, 6, 6, generator=gen(3))
    out = BatchAugment(mean, std, False, 0.5, gen(7))((img - m) / sd)
    b, c, s = BatchAugment(mean, std, False, 0.5, gen(7)).factors(10)
    torch.testing.assert_close(out * sd + m, color_jitter(img, b, c, s), atol=1e-5, rtol=0)


def test_training_batches_with_augmentation(tiny_mnist):
    """With hflip on the tensor path: the DataLoader path's order and labels; each image is
    the preprocessed image or its mirror; the client seed fixes the flips."""
    plain = mnist_dm(tiny_mnist, "false")
    aug = mnist_dm(tiny_mnist, "true", hflip=True)
    base = list(plain.client_train_dataloader(2, seed=4))
    flips = 0
    for (xa, ya), (xb, yb) in zip(base, aug.client_train_dataloader(2, seed=4), strict=True):
        assert torch.equal(ya, yb)
        for a, b in zip(xa, xb, strict=True):
            assert torch.equal(a, b) or torch.equal(torch.flip(a, dims=[-1]), b)
            flips += not torch.equal(a, b)
    assert 0 < flips < plain.client_num_train(2)
    runs = [torch.cat([x for x, _ in aug.client_train_dataloader(2, seed=s)]) for s in (4, 4, 5)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_preprocessing_in_chunks_equals_the_transform(tiny_cifar10, monkeypatch):
    """Chunks of a split through the v2 test transform equal it per image (RGB, resized)."""
    train, _ = load_dataset("cifar10", tiny_cifar10, download=False)
    tf = build_transform(train, False, resize=20)
    monkeypatch.setattr(db, "PREPROCESS_CHUNK", 7)
    out = db.preprocess_on_device(train.images, tf, torch.device("cpu"))
    assert out.shape == (60, 3, 20, 20) and out.dtype == torch.float32
    for i in range(len(out)):
        assert torch.equal(out[i], tf(train.images[i]))
