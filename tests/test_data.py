import gzip
import struct

import numpy as np
import pytest
import torch

import bayesprune as bp
from bayesprune.core.data import DataFileError, DatasetNotFoundError, batch_indices, read_idx


def _write_idx(path, array, gz):
    codes = {np.uint8: 0x08}
    header = struct.pack(">BBBB", 0, 0, codes[np.uint8], array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def _fake_mnist(root, folder="MNIST", gz=True, n_train=60, n_test=20):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return raw


def test_digits_is_a_fixed_stratified_normalised_split():
    ds = bp.load_dataset(bp.RunConfig(dataset="digits"))
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.n_train + ds.n_test == 1797 and ds.n_test == 360
    assert abs(float(ds.x_train.mean())) < 1e-5 and float(ds.x_train.std()) == pytest.approx(1.0, abs=1e-3)
    train_frac = torch.bincount(ds.y_train, minlength=10).float() / ds.n_train
    test_frac = torch.bincount(ds.y_test, minlength=10).float() / ds.n_test
    assert torch.allclose(train_frac, test_frac, atol=0.01)  # stratified
    again = bp.load_dataset(bp.RunConfig(dataset="digits", seed=5))
    assert torch.equal(again.y_test, ds.y_test)  # the split does not move with the run seed


def test_synthetic_and_train_size():
    ds = bp.load_dataset(bp.RunConfig(dataset="synthetic", train_size=100))
    assert ds.n_train == 100 and ds.x_train.dtype == torch.float32


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_path_reads_idx_files_in_torchvision_layout(tmp_path, gz):
    _fake_mnist(tmp_path, gz=gz)
    ds = bp.load_dataset(bp.RunConfig(dataset="mnist", data_dir=str(tmp_path)))
    assert ds.input_shape == (1, 28, 28) and ds.n_train == 60 and ds.n_test == 20
    assert ds.y_train.dtype == torch.int64 and int(ds.y_train.max()) < 10
    res = bp.train(bp.RunConfig(dataset="mnist", data_dir=str(tmp_path), epochs=1, fcn_hidden=(16, 8)), progress=False)
    assert len(res.history) == 1


def test_fashion_mnist_uses_its_own_folder(tmp_path):
    _fake_mnist(tmp_path, folder="FashionMNIST")
    ds = bp.load_dataset(bp.RunConfig(dataset="fashion-mnist", data_dir=str(tmp_path)))
    assert ds.n_train == 60


def test_idx_matches_torchvision_reader(tmp_path):
    tv_mnist = pytest.importorskip("torchvision.datasets.mnist")
    raw = _fake_mnist(tmp_path, gz=False)
    ours = read_idx(raw / "train-images-idx3-ubyte")
    theirs = tv_mnist.read_image_file(str(raw / "train-images-idx3-ubyte")).numpy()
    assert np.array_equal(ours, theirs)


def test_truncated_idx_is_reported(tmp_path):
    raw = _fake_mnist(tmp_path, gz=False)
    p = raw / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


def test_missing_files_give_one_clear_error(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        bp.load_dataset(bp.RunConfig(dataset="mnist", data_dir=str(tmp_path / "nowhere")))
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "--download" in msg and "BAYESPRUNE_DATA" in msg
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        bp.load_dataset(bp.RunConfig(dataset="cifar10", data_dir=str(tmp_path)))


def test_failed_download_gives_one_clear_error(tmp_path, monkeypatch):
    tvd = pytest.importorskip("torchvision.datasets")

    class Offline:
        def __init__(self, *a, **k):
            raise OSError("network is unreachable")

    monkeypatch.setattr(tvd, "MNIST", Offline)
    with pytest.raises(DatasetNotFoundError) as err:
        bp.load_dataset(bp.RunConfig(dataset="mnist", data_dir=str(tmp_path / "dl"), download=True))
    assert "could not download mnist" in str(err.value) and "network is unreachable" in str(err.value)
    assert err.value.__cause__ is None  # no deep torchvision traceback chained


def test_batch_indices_cover_everything_once_and_are_seeded():
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    b1 = list(batch_indices(130, 64, g1))
    b2 = list(batch_indices(130, 64, g2))
    assert [len(b) for b in b1] == [64, 64, 2]
    assert torch.equal(torch.cat(b1).sort().values, torch.arange(130))
    assert all(torch.equal(a, b) for a, b in zip(b1, b2))


def test_digits_fast_path_matches_scikit_learn():
    from sklearn.datasets import load_digits

    from bayesprune.core.data import _digits_arrays, stratified_split

    images, y = _digits_arrays()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(y, ref.target)
    tr, te = stratified_split(y, 0.2, seed=0)
    assert len(te) == 360 and len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(y)


def test_mnist_normalisation_needs_no_division_by_255(tmp_path):
    _fake_mnist(tmp_path, gz=False)
    ds = bp.load_dataset(bp.RunConfig(dataset="mnist", data_dir=str(tmp_path)))
    raw = read_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").astype(np.float64) / 255.0
    expected = (raw - raw.mean()) / raw.std(ddof=1)
    np.testing.assert_allclose(ds.x_train[:, 0].numpy(), expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- damaged and inconsistent idx files
def _mnist_cfg(root):
    return bp.RunConfig(dataset="mnist", data_dir=str(root))


def test_a_truncated_gz_file_is_named(tmp_path):
    raw = _fake_mnist(tmp_path, gz=True)
    p = raw / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-20])  # cut into the compressed stream: gzip raises EOFError
    with pytest.raises(DataFileError) as err:
        read_idx(p)
    assert str(p) in str(err.value)
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz"):
        bp.load_dataset(_mnist_cfg(tmp_path))


@pytest.mark.parametrize("gz", [True, False])
def test_extra_data_after_the_declared_values_is_rejected(tmp_path, gz):
    labels = np.arange(10, dtype=np.uint8)
    _write_idx(tmp_path / "labels", labels, gz=False)
    data = (tmp_path / "labels").read_bytes() + b"\x00extra"
    path = tmp_path / ("labels.gz" if gz else "labels")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataFileError, match="extra data") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_a_gzip_bomb_is_stopped_after_the_declared_bytes(tmp_path):
    import tracemalloc

    path = tmp_path / "bomb-idx3-ubyte.gz"
    header = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 10, 28, 28)  # 7840 bytes declared ...
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(header)
        zeros = b"\0" * (1 << 20)
        for _ in range(64):  # ... 64 MiB delivered, from a file of about 64 KiB
            fh.write(zeros)
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DataFileError, match="extra data"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # a few MiB of buffers, not the 64 MiB inside
    huge = tmp_path / "huge-idx3-ubyte"
    huge.write_bytes(struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2**31, 28, 28))
    with pytest.raises(DataFileError, match="more than the"):
        read_idx(huge)  # refused from the header alone


def test_bad_magic_is_named(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    p.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(DataFileError, match="not an idx file") as err:
        read_idx(p)
    assert str(p) in str(err.value)


def test_five_extra_labels_are_caught_naming_both_files(tmp_path):
    raw = _fake_mnist(tmp_path, gz=False)
    _write_idx(raw / "train-labels-idx1-ubyte", np.zeros(65, np.uint8), gz=False)
    with pytest.raises(DataFileError) as err:
        bp.load_dataset(_mnist_cfg(tmp_path))
    msg = str(err.value)
    assert "60 images" in msg and "65 labels" in msg
    assert str(raw / "train-images-idx3-ubyte") in msg and str(raw / "train-labels-idx1-ubyte") in msg


def test_labels_outside_0_to_9_are_caught_naming_the_file(tmp_path):
    raw = _fake_mnist(tmp_path, gz=True)
    labels = np.zeros(20, np.uint8)
    labels[7] = 10
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels, gz=True)
    with pytest.raises(DataFileError, match=r"t10k-labels-idx1-ubyte.gz: label 10 at position 7 is outside 0..9"):
        bp.load_dataset(_mnist_cfg(tmp_path))


def test_images_that_are_not_28x28_are_caught_naming_the_file(tmp_path):
    raw = _fake_mnist(tmp_path, gz=False)
    _write_idx(raw / "train-images-idx3-ubyte", np.zeros((60, 27, 28), np.uint8), gz=False)
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte holds uint8 values of shape \[60, 27, 28\]"):
        bp.load_dataset(_mnist_cfg(tmp_path))
