"""Reading the image data sets' files (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100) into memory.

Files are parsed by torchvision's own dataset classes; this module only decides where the files
come from (a local root, the Debian package ``dataset-fashion-mnist``, or torchvision's download)
and turns every failure to find them into a :class:`~flip.errors.DataNotFoundError` that says
where to put which files. A file that is there but cannot be read (a truncated or non-gzip
``.gz``, an IDX file whose header disagrees with its size, a CIFAR pickle that does not load or
holds the wrong things, labels out of range) is a :class:`~flip.errors.CorruptDataError` naming
the file, raised before any training. Source: ``/work/shared/spec/DATA.md`` (table of data sets).
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import torch
from torchvision import datasets as tvd

from flip.data.datasets import DATASETS, DEBIAN_FMNIST_DIR, ImageSet, dataset_info
from flip.errors import CorruptDataError, DataNotFoundError

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

class _CIFAR10Files(tvd.CIFAR10):
    """torchvision's CIFAR-10 that checks only that the pickles exist, not their md5.

    torchvision compares every pickle with the md5 of the official release, so a subset of the
    data, or a test fixture written in the real pickle format, is rejected as "corrupted".
    The format itself is still parsed (and validated) by torchvision's own loader.
    """

    train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


class _CIFAR100Files(tvd.CIFAR100):
    """torchvision's CIFAR-100, checking only that the pickles exist (see ``_CIFAR10Files``)."""

    train_list = [[name, None] for name, _ in tvd.CIFAR100.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR100.test_list]
    meta = {**tvd.CIFAR100.meta, "md5": None}


_TV_CLASSES = {
    "mnist": tvd.MNIST,
    "fmnist": tvd.FashionMNIST,
    "cifar10": _CIFAR10Files,
    "cifar100": _CIFAR100Files,
}


def _expected_files(name: str, root: Path) -> tuple[Path, list[str]]:
    """The directory torchvision reads ``name`` from under ``root`` and the file names there."""
    if name in ("mnist", "fmnist"):
        cls = _TV_CLASSES[name]
        return root / cls.__name__ / "raw", list(_IDX_FILES)
    cls = _TV_CLASSES[name]
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return root / cls.base_folder, files


def _missing_message(name: str, root: Path, debian_dir: str, reason: str) -> str:
    info = DATASETS[name]
    folder, files = _expected_files(name, root)
    msg = f"{info.title} data not found ({reason}). Put these files in {folder}/: "
    msg += ", ".join(files)
    if name in ("mnist", "fmnist"):
        msg += " (uncompressed IDX files; the .gz versions are decompressed automatically)"
    if name == "fmnist":
        msg += (
            f", or install the Debian package (apt-get install dataset-fashion-mnist), which "
            f"provides {debian_dir}/*.gz"
        )
    msg += ", or run with data.download=true on a machine with internet access."
    return msg


def _decompress_idx(sources: list[Path], raw_dir: Path, hint: str = "") -> None:
    """Decompress IDX ``.gz`` files into ``raw_dir`` if raw files are missing there.

    Each missing ``<name>`` is taken from the first of ``sources`` holding ``<name>.gz``; the
    write goes to a temporary file that is then renamed, so concurrent runs never see a partial
    file. Nothing happens unless all four files can be completed. A ``.gz`` that does not
    decompress raises :class:`CorruptDataError` naming it, and leaves no partial file.
    """
    missing = [f for f in _IDX_FILES if not (raw_dir / f).is_file()]
    if not missing:
        return
    plan = {}
    for f in missing:
        src = next((d / f"{f}.gz" for d in sources if (d / f"{f}.gz").is_file()), None)
        if src is None:
            return
        plan[f] = src
    raw_dir.mkdir(parents=True, exist_ok=True)
    for f, src in plan.items():
        fd, tmp = tempfile.mkstemp(dir=raw_dir, prefix=f".{f}.")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(src, "rb") as inp:
                shutil.copyfileobj(inp, out)
        except BaseException as err:
            os.unlink(tmp)  # never leave a partial file behind
            if isinstance(err, EOFError | gzip.BadGzipFile | zlib.error):
                raise CorruptDataError(
                    f"{src} cannot be decompressed ({type(err).__name__}: {err}): it is "
                    f"truncated or not a gzip file. {hint}".rstrip()
                ) from None
            raise
        os.replace(tmp, raw_dir / f)


def _replace_hint(name: str) -> str:
    """How to replace a damaged file of data set ``name``."""
    if name == "fmnist":
        return (
            "Replace it: delete it and run again (flip decompresses Debian's files again; if "
            "those are damaged: apt-get install --reinstall dataset-fashion-mnist), or run with "
            "data.download=true on a machine with internet access."
        )
    return (
        "Replace it with the original file, or delete it and run with data.download=true on a "
        "machine with internet access."
    )


def check_idx_file(path: Path, ndim: int, hint: str = "") -> int:
    """Check an uncompressed IDX file of unsigned bytes against its own header and return the
    number of items (its first dimension).

    The header is ``00 00 08 <ndim>`` then ``ndim`` big-endian int32 sizes; the file must hold
    exactly their product in bytes after it (images: ndim 3, labels: ndim 1).

    Raises:
        CorruptDataError: wrong magic or number of dimensions, or a size that disagrees with
            the header (a truncated file); the message names the file and ends with ``hint``.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4 + 4 * ndim)
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] != ndim:
        raise CorruptDataError(
            f"{path} is not an IDX file of {ndim}-D unsigned bytes (it starts with "
            f"{head[:4].hex() or 'nothing'}, expected 000008{ndim:02x}). {hint}".rstrip()
        )
    if len(head) < 4 + 4 * ndim:
        raise CorruptDataError(f"{path} is truncated inside its IDX header. {hint}".rstrip())
    dims = struct.unpack(f">{ndim}i", head[4:])
    expected = 4 + 4 * ndim + math.prod(dims)
    if size != expected:
        shape = "×".join(map(str, dims))
        raise CorruptDataError(
            f"{path} holds {size} bytes but its IDX header announces {shape} values "
            f"({expected} bytes): the file is truncated or damaged. {hint}".rstrip()
        )
    return dims[0]


def _check_idx_files(folder: Path, hint: str) -> None:
    """Every IDX file of an MNIST-family raw folder checked, and images/labels counts equal."""
    for split in ("train", "t10k"):
        images = folder / f"{split}-images-idx3-ubyte"
        labels = folder / f"{split}-labels-idx1-ubyte"
        n_images, n_labels = check_idx_file(images, 3, hint), check_idx_file(labels, 1, hint)
        if n_images != n_labels:
            raise CorruptDataError(
                f"{images} holds {n_images} images but {labels} holds {n_labels} labels. "
                f"{hint}"
            )


def _cifar_file_problem(path: Path, label_key: str | None, num_classes: int) -> str | None:
    """What is wrong with one CIFAR pickle (``label_key`` ``None``: the meta file), or None."""
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:
        return f"{path} could not be read as a CIFAR pickle ({type(err).__name__}: {err})"
    if not isinstance(entry, dict):
        return f"{path} holds a {type(entry).__name__}, not a CIFAR dict"
    if label_key is None:
        return None
    if "data" not in entry or label_key not in entry:
        return f"{path} lacks the keys 'data' and '{label_key}' of a CIFAR batch"
    data = entry["data"]
    rows = len(data) if hasattr(data, "__len__") else -1
    if getattr(data, "size", -1) != rows * 3 * 32 * 32:
        return f"{path}: 'data' is not {rows} rows of 3072 bytes (3×32×32 images)"
    labels = list(entry[label_key])
    if len(labels) != rows:
        return f"{path} holds {rows} images but {len(labels)} labels"
    if any(not 0 <= int(v) < num_classes for v in labels):
        return f"{path} holds labels outside 0..{num_classes - 1}"
    return None


def _find_bad_cifar_file(name: str, folder: Path) -> str | None:
    cls = _TV_CLASSES[name]
    label_key = "labels" if name == "cifar10" else "fine_labels"
    num_classes = DATASETS[name].num_classes
    for f, _ in cls.train_list + cls.test_list:
        problem = _cifar_file_problem(folder / f, label_key, num_classes)
        if problem:
            return problem
    return _cifar_file_problem(folder / cls.meta["filename"], None, num_classes)


def _to_imageset(ds, name: str) -> ImageSet:
    info = DATASETS[name]
    data = torch.as_tensor(ds.data)
    if data.ndim == 3:  # MNIST family: (N, H, W)
        images = data.unsqueeze(1)
    else:  # CIFAR: (N, H, W, C) numpy
        images = data.permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ImageSet(
        images=images.to(torch.uint8).contiguous(),
        labels=labels,
        num_classes=info.num_classes,
        mean=info.mean,
        std=info.std,
        name=name,
    )


def load_dataset(
    name: str, root: str | os.PathLike, download: bool, debian_dir: str = DEBIAN_FMNIST_DIR
) -> tuple[ImageSet, ImageSet]:
    """Load the training and official test split of an image data set.

    Layout under ``root`` is torchvision's: ``MNIST/raw/``, ``FashionMNIST/raw/`` (uncompressed
    IDX), ``cifar-10-batches-py/``, ``cifar-100-python/`` (python pickles). For ``fmnist``, if
    the raw files are missing and ``debian_dir`` holds the Debian package's ``.gz`` files, they
    are decompressed into ``root/FashionMNIST/raw/`` first (DATA.md: the embedded default data).
    ``.gz`` files placed in an MNIST/Fashion-MNIST raw folder are decompressed too.

    Args:
        name: ``mnist``, ``fmnist``, ``cifar10`` or ``cifar100``.
        root: data directory.
        download: let torchvision download missing files (needs internet access).
        debian_dir: where the Debian package ``dataset-fashion-mnist`` puts its files.

    Returns:
        ``(train, test)`` :class:`ImageSet` s; images uint8 (N, C, H, W), labels int64 (N,).

    Raises:
        ConfigError: unknown ``data.name``.
        DataNotFoundError: files missing (and ``download`` off, or the download failed), or
            unreadable; the message names the directory and the files to put there.
    """
    info = dataset_info(name)
    root = Path(root).expanduser().absolute()
    cls = _TV_CLASSES[name]
    if name in ("mnist", "fmnist"):
        raw_dir, _ = _expected_files(name, root)
        sources = [raw_dir] + ([Path(debian_dir)] if name == "fmnist" else [])
        try:
            _decompress_idx(sources, raw_dir, _replace_hint(name))
        except CorruptDataError:
            raise
        except (OSError, EOFError) as err:
            raise DataNotFoundError(
                _missing_message(name, root, debian_dir, f"decompressing failed: {err}")
            ) from None
    folder, files = _expected_files(name, root)
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        reason = f"data.download=false and missing: {', '.join(missing)}"
        raise DataNotFoundError(_missing_message(name, root, debian_dir, reason))
    if not missing and name in ("mnist", "fmnist"):
        _check_idx_files(folder, _replace_hint(name))
    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except Exception as err:  # any failure (network, parsing) becomes one clear message
        cifar = name in ("cifar10", "cifar100")
        if cifar and not missing and (problem := _find_bad_cifar_file(name, folder)):
            raise CorruptDataError(f"{problem}. {_replace_hint(name)}") from None
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [""]
        first = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        if missing:
            reason = f"download failed: {type(err).__name__}: {first}"
        else:
            reason = f"files in {folder} could not be read: {type(err).__name__}: {first}"
        raise DataNotFoundError(_missing_message(name, root, debian_dir, reason)) from None
    out = _to_imageset(train, name), _to_imageset(test, name)
    for split in out:
        if tuple(split.images.shape[1:]) != info.shape:
            raise DataNotFoundError(
                f"{info.title} files in {folder} hold images of shape "
                f"{tuple(split.images.shape[1:])}, expected {info.shape}."
            )
    _check_labels(name, folder, out)
    return out


def _check_labels(name: str, folder: Path, splits: tuple[ImageSet, ImageSet]) -> None:
    """As many labels as images, each in 0..num_classes-1; else a CorruptDataError naming the
    file (the label file of an IDX split; the first CIFAR pickle found wrong, else the folder)."""
    for train, split in zip((True, False), splits, strict=True):
        labels, c = split.labels, split.num_classes
        bad = labels[(labels < 0) | (labels >= c)]
        if len(labels) == len(split.images) and not len(bad):
            continue
        if name in ("mnist", "fmnist"):
            where = folder / f"{'train' if train else 't10k'}-labels-idx1-ubyte"
        else:
            where = _find_bad_cifar_file(name, folder) or f"the files in {folder}"
        what = (
            f"label {int(bad[0])} outside 0..{c - 1}"
            if len(bad)
            else f"{len(labels)} labels for {len(split.images)} images"
        )
        title = DATASETS[name].title
        raise CorruptDataError(f"{where}: {title} data with {what}. {_replace_hint(name)}")
