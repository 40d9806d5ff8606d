"""Data sets held whole as tensors on the training device.

Why tensors and not a ``DataLoader``: the data sets of the paper fit in memory
many times over, and a per-sample transform pipeline costs more than the
forward pass of these small networks.  We normalise once, move the whole split
to the device, and batch by a seeded index permutation.

``mnist`` and ``fashion-mnist`` are read straight from the idx files of the
torchvision layout (``<data_dir>/MNIST/raw/train-images-idx3-ubyte[.gz]``), so
a read-only data folder works and nothing is extracted; torchvision is used to
download them (``download=True``) and to read CIFAR-10.
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from .config import RunConfig
from .registry import DATASETS


class DatasetNotFoundError(FileNotFoundError):
    """The data files are not where the config says; the message says how to fix it."""


class DataFileError(ValueError):
    """A data file is damaged, truncated, too large or inconsistent with its partner; the message names it."""


@dataclass(frozen=True)
class TensorDataset:
    """A normalised train/test split, already on its device."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str) -> "TensorDataset":
        return TensorDataset(
            self.name,
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.num_classes,
        )


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> Iterator[torch.Tensor]:
    """Seeded shuffled index batches covering all n examples (last one may be smaller)."""
    perm = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, batch_size):
        yield perm[start : start + batch_size]


# ---------------------------------------------------------------- normalise
def _normalise(x_train: np.ndarray, x_test: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std from the training split, applied to both splits (in place, float32)."""
    xt = torch.from_numpy(np.require(x_train, requirements=["C", "W"])).to(torch.float32)
    xs = torch.from_numpy(np.require(x_test, requirements=["C", "W"])).to(torch.float32)
    dims = (0, 2, 3)
    mean = xt.mean(dim=dims, keepdim=True, dtype=torch.float64).float()
    std = xt.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return xt.sub_(mean).div_(std), xs.sub_(mean).div_(std)


def _labels(y: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(y, dtype=np.int64))


# ---------------------------------------------------------------- digits
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images 0..16, labels) of scikit-learn's bundled digits.

    Read straight from the CSV that scikit-learn ships (importing sklearn costs about a
    second, most of a first epoch's wait); falls back to ``load_digits`` if the file moved.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
            return raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices with each class's share kept; ceil(n * fraction) test items in all."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    n_test = int(np.ceil(len(y) * test_fraction))
    ideal = counts * n_test / len(y)
    per_class = np.floor(ideal).astype(int)
    for i in np.argsort(-(ideal - per_class), kind="stable")[: n_test - per_class.sum()]:
        per_class[i] += 1  # largest remainders get the leftover test slots
    train, test = [], []
    for c, k in zip(classes, per_class):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@functools.lru_cache(maxsize=4)
def _digits() -> TensorDataset:
    """scikit-learn's bundled 8x8 digits: real, offline; a fixed (seed 0) stratified 80/20 split."""
    images, y = _digits_arrays()
    x = images[:, None, :, :] / 16.0
    tr, te = stratified_split(y, 0.2, seed=0)
    xt, xs = _normalise(x[tr], x[te])
    return TensorDataset("digits", xt, _labels(y[tr]), xs, _labels(y[te]), 10)


# ---------------------------------------------------------------- synthetic
@functools.lru_cache(maxsize=4)
def _synthetic(n_train: int = 512, n_test: int = 256, classes: int = 4) -> TensorDataset:
    """Tiny learnable data: class-dependent 8x8 patterns plus Gaussian noise."""
    rng = np.random.default_rng(12345)
    prototypes = rng.normal(size=(classes, 1, 8, 8)).astype(np.float32)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, size=n)
        x = prototypes[y] + 0.8 * rng.normal(size=(n, 1, 8, 8)).astype(np.float32)
        return x, y

    x_tr, y_tr = make(n_train)
    x_te, y_te = make(n_test)
    xt, xs = _normalise(x_tr, x_te)
    return TensorDataset("synthetic", xt, _labels(y_tr), xs, _labels(y_te), classes)


# ---------------------------------------------------------------- idx (MNIST layout)
_IDX_FOLDERS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
#: Largest idx payload read_idx accepts (MNIST's training images are 47 MB).
MAX_IDX_BYTES = 1 << 30
_MAX_IDX_DIMS = 4
_CHUNK = 1 << 20


def _fill(fh, out: np.ndarray, path: Path, what: str) -> None:
    """Read exactly ``out.nbytes`` bytes into ``out``, in chunks (a .gz file is decompressed as it goes)."""
    view = memoryview(out).cast("B")
    got = 0
    while got < len(view):
        n = fh.readinto(view[got : got + _CHUNK])
        if not n:
            raise DataFileError(f"{path} is truncated: {what} needs {len(view)} bytes, the file ends after {got}. "
                                "Delete it and download it again.")
        got += n


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an idx file (optionally .gz), the format of MNIST and Fashion-MNIST.

    The header is read first and says how many bytes must follow; exactly that many
    are read (decompressed as they stream, never more than one byte beyond), so a
    truncated file, extra data after the end, or a gzip bomb is rejected with
    :class:`DataFileError` naming the file, using no more memory than the data the
    header declares (at most ``max_bytes``).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            return _read_idx(fh, path, max_bytes)
    except DataFileError:
        raise
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataFileError(f"{path} could not be read: {type(exc).__name__}: {exc}. The file is damaged or "
                            "truncated; delete it and download it again.") from None


def _read_idx(fh, path: Path, max_bytes: int) -> np.ndarray:
    magic = np.zeros(4, np.uint8)
    _fill(fh, magic, path, "the idx header")
    if magic[0] != 0 or magic[1] != 0 or int(magic[2]) not in _IDX_DTYPES or not 1 <= magic[3] <= _MAX_IDX_DIMS:
        raise DataFileError(f"{path} is not an idx file (bad magic number {bytes(magic).hex()})")
    ndim = int(magic[3])
    raw_dims = np.zeros(4 * ndim, np.uint8)
    _fill(fh, raw_dims, path, "the idx header")
    dims = [int.from_bytes(bytes(raw_dims[4 * i : 4 * i + 4]), "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[int(magic[2])])
    expected = dtype.itemsize
    for d in dims:
        expected *= d
    if expected > max_bytes:
        raise DataFileError(f"{path}: its header declares {dims} values of {dtype.itemsize} byte(s), "
                            f"{expected} bytes, more than the {max_bytes} this reader accepts")
    data = np.empty(expected, np.uint8)
    _fill(fh, data, path, f"the {dims} values its header declares")
    if fh.read(1):
        raise DataFileError(f"{path} has extra data after the {dims} values its header declares; it is not a "
                            "valid idx file")
    return data.view(dtype).reshape(dims)


def _find_idx(raw: Path, stem: str) -> Optional[Path]:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _torchvision():
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise DatasetNotFoundError(f"reading or downloading this data set needs torchvision ({exc}): "
                                   "pip install 'bayesprune[vision]'") from None
    return tvd


def _torchvision_download(dataset: str, root: Path) -> None:
    tvd = _torchvision()
    try:
        cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[dataset]
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
    except Exception as exc:  # network errors, checksum errors, read-only folders ...
        raise DatasetNotFoundError(
            f"could not download {dataset} into {root}: {type(exc).__name__}: {exc}. "
            f"Place the files there by hand (torchvision layout) or check your network."
        ) from None


def _missing_message(dataset: str, folder: Path, files: list[str]) -> str:
    what = "files" if len(files) > 1 else "file"
    return (
        f"{dataset} {what} not found in {folder}: {', '.join(files)} (or the same name with .gz). "
        f"Fix: pass download=True (CLI: --download) to fetch them, or point data_dir "
        f"(CLI: --data-dir, or the BAYESPRUNE_DATA environment variable) at the folder "
        f"that contains '{folder.parent.name}/'."
    )


def _missing(paths: dict[str, Optional[Path]]) -> list[str]:
    """Only the files that are missing (the message must not send the user after the others)."""
    return [_IDX_FILES[k] for k, p in paths.items() if p is None]


def _check_idx_arrays(dataset: str, arrays: dict[str, np.ndarray], paths: dict[str, Path]) -> None:
    """uint8 images of 28x28, one uint8 label in 0..9 per image; each error names the file."""
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        px, py = paths[f"{split}_x"], paths[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataFileError(f"{px} holds {x.dtype} values of shape {list(x.shape)}; {dataset} images are "
                                "uint8, N x 28 x 28")
        if y.dtype != np.uint8 or y.ndim != 1:
            raise DataFileError(f"{py} holds {y.dtype} values of shape {list(y.shape)}; {dataset} labels are "
                                "uint8, one per image")
        if len(x) != len(y) or len(x) == 0:
            raise DataFileError(f"{px} holds {len(x)} images but {py} holds {len(y)} labels; the two files do "
                                "not belong together (download them again)")
        bad = np.flatnonzero(y > 9)
        if len(bad):
            raise DataFileError(f"{py}: label {int(y[bad[0]])} at position {int(bad[0])} is outside 0..9 "
                                f"({len(bad)} such labels)")


@functools.lru_cache(maxsize=4)
def _idx_dataset(dataset: str, root: str, download: bool) -> TensorDataset:
    raw = Path(root) / _IDX_FOLDERS[dataset] / "raw"
    paths = {k: _find_idx(raw, stem) for k, stem in _IDX_FILES.items()}
    if any(p is None for p in paths.values()):
        if not download:
            raise DatasetNotFoundError(_missing_message(dataset, raw, _missing(paths)))
        _torchvision_download(dataset, Path(root))
        paths = {k: _find_idx(raw, stem) for k, stem in _IDX_FILES.items()}
        if any(p is None for p in paths.values()):
            raise DatasetNotFoundError(_missing_message(dataset, raw, _missing(paths)))
    arrays = {k: read_idx(p) for k, p in paths.items()}  # type: ignore[arg-type]
    _check_idx_arrays(dataset, arrays, paths)  # type: ignore[arg-type]
    # uint8 in, one float32 copy out: normalisation is scale-free, so no /255 pass is needed
    xt, xs = _normalise(arrays["train_x"][:, None], arrays["test_x"][:, None])
    return TensorDataset(dataset, xt, _labels(arrays["train_y"]), xs, _labels(arrays["test_y"]), 10)


# ---------------------------------------------------------------- CIFAR-10
@functools.lru_cache(maxsize=2)
def _cifar10(root: str, download: bool) -> TensorDataset:
    folder = Path(root) / "cifar-10-batches-py"
    if not folder.is_dir():
        if not download:
            raise DatasetNotFoundError(
                f"cifar10 files not found in {folder}. Fix: pass download=True (CLI: --download), "
                f"or point data_dir (CLI: --data-dir, or BAYESPRUNE_DATA) at the folder that "
                f"contains 'cifar-10-batches-py/'."
            )
        _torchvision_download("cifar10", Path(root))
    tvd = _torchvision()
    try:
        tr = tvd.CIFAR10(root=root, train=True, download=False)
        te = tvd.CIFAR10(root=root, train=False, download=False)
    except Exception as exc:
        raise DatasetNotFoundError(f"cifar10 files in {folder} could not be read: {exc}") from None
    xt, xs = _normalise(tr.data.transpose(0, 3, 1, 2), te.data.transpose(0, 3, 1, 2))
    return TensorDataset("cifar10", xt, _labels(tr.targets), xs, _labels(te.targets), 10)


# ---------------------------------------------------------------- entry point
def load_dataset(cfg: RunConfig, device: torch.device | str = "cpu") -> TensorDataset:
    """The config's data set, normalised, subsampled to ``train_size``, on ``device``.

    Loaded splits are cached per process (CPU copies), so sweeps and notebooks
    read the files once.
    """
    ds = DATASETS.lookup(cfg.dataset)(cfg)
    if cfg.train_size is not None and cfg.train_size < ds.n_train:
        g = torch.Generator().manual_seed(cfg.seed + 7919)
        idx = torch.randperm(ds.n_train, generator=g)[: cfg.train_size]
        ds = TensorDataset(ds.name, ds.x_train[idx], ds.y_train[idx], ds.x_test, ds.y_test, ds.num_classes)
    return ds.to(device)


def _root(cfg: RunConfig) -> str:
    return str(Path(cfg.data_dir).expanduser())


# name -> load(cfg) -> TensorDataset (CPU, full size): add a data set with one more line.
DATASETS.register("digits", lambda cfg: _digits())
DATASETS.register("mnist", lambda cfg: _idx_dataset("mnist", _root(cfg), cfg.download))
DATASETS.register("fashion-mnist", lambda cfg: _idx_dataset("fashion-mnist", _root(cfg), cfg.download))
DATASETS.register("cifar10", lambda cfg: _cifar10(_root(cfg), cfg.download))
DATASETS.register("synthetic", lambda cfg: _synthetic())
