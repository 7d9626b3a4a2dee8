"""A data module whose chosen clients fail for real (issue 6 tests of failing clients).

``FaultyClientData`` is :class:`flip.data.FederatedDataModule` except for the training loaders
of the clients in ``nan_clients`` (their images become NaN after the usual transform, so their
training really computes NaN losses, gradients and weights) and ``raise_clients`` (reading their
first batch raises ``OSError``, as a lost device would). Usable from a config:
``data._target_=fixtures_failures.FaultyClientData +data.nan_clients=[1]``.
"""

from __future__ import annotations

from flip.data import FederatedDataModule


class _NaNImages:
    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image):
        return self.transform(image) * float("nan")


class _Unreadable:
    def __call__(self, image):
        raise OSError("client device lost")


class FaultyClientData(FederatedDataModule):
    def __init__(self, *args, nan_clients=(), raise_clients=(), **kwargs):
        kwargs.setdefault("device_data", "false")  # faults are injected into DataLoaders
        super().__init__(*args, **kwargs)
        self.nan_clients = set(nan_clients)
        self.raise_clients = set(raise_clients)

    def client_train_dataloader(self, k: int, seed: int):
        loader = super().client_train_dataloader(k, seed)
        if k in self.nan_clients:
            loader.dataset.transform = _NaNImages(loader.dataset.transform)
        if k in self.raise_clients:
            loader.dataset.transform = _Unreadable()
        return loader
