"""Data layer: image data sets, client partitions (DATA.md) and the federated data module."""

from flip.data.datamodule import FederatedDataModule, plot_class_histogram, stratified_subset
from flip.data.datasets import (
    DATASETS,
    ClientDataset,
    DatasetInfo,
    ImageSet,
    build_transform,
    dataset_info,
    load_dataset,
)
from flip.data.partition import (
    class_histogram,
    partition_dirichlet,
    partition_iid,
    partition_patho,
    split_train_test,
)

__all__ = [
    "DATASETS",
    "ClientDataset",
    "DatasetInfo",
    "FederatedDataModule",
    "ImageSet",
    "build_transform",
    "class_histogram",
    "dataset_info",
    "load_dataset",
    "partition_dirichlet",
    "partition_iid",
    "partition_patho",
    "plot_class_histogram",
    "split_train_test",
    "stratified_subset",
]
