"""Data layer: image data sets, LEAF data sets, client partitions (DATA.md) and the federated
data modules."""

from flip.data.client_data import ClientDataModule, plot_class_histogram, write_class_histogram
from flip.data.datamodule import FederatedDataModule, stratified_subset
from flip.data.datasets import (
    DATASETS,
    ClientDataset,
    DatasetInfo,
    ImageSet,
    build_transform,
    dataset_info,
)
from flip.data.image_files import load_dataset
from flip.data.leaf import (
    SHAKESPEARE_VOCAB,
    LeafSet,
    read_leaf_dir,
    read_leaf_json,
    remove_users,
    sample_niid,
    split_by_sample,
    split_by_user,
    write_leaf_json,
)
from flip.data.leaf_datamodule import LEAF_DATASETS, LeafDataModule
from flip.data.partition import (
    class_histogram,
    partition_dirichlet,
    partition_iid,
    partition_patho,
    split_train_test,
)

__all__ = [
    "DATASETS",
    "LEAF_DATASETS",
    "SHAKESPEARE_VOCAB",
    "LeafDataModule",
    "LeafSet",
    "read_leaf_dir",
    "read_leaf_json",
    "remove_users",
    "sample_niid",
    "split_by_sample",
    "split_by_user",
    "write_class_histogram",
    "write_leaf_json",
    "ClientDataModule",
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
