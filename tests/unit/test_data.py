"""The data package: synthetic tasks, digits, IDX and CIFAR-10 files (written here, small),
the checks that reject damaged files, and the opt-in download (never on the network)."""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from biohsic.data import DATA_ENV, SYSTEM_DIRS, TASKS, Dataset, load_task
from biohsic.data import download as download_module
from biohsic.data.synthetic import linear_points
from biohsic.errors import ConfigError, DataError

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Every test sees only the folders it names."""
    monkeypatch.delenv(DATA_ENV, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to download."""
    def refuse(url, dest):
        pytest.fail(f"tried to download {url}")

    monkeypatch.setattr(download_module, "fetch", refuse)


# ----------------------------------------------------------------------------- file writers
def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file: big-endian magic (0x08 ubyte, ndim), one uint32 per dimension, the bytes."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_arrays(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_train + n_test, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, size=n_train + n_test, dtype=np.uint8)
    return dict(zip(IDX_STEMS, (images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]), strict=True))


def write_mnist(folder: Path, arrays: dict[str, np.ndarray] | None = None, gz: bool = True) -> dict[str, np.ndarray]:
    arrays = mnist_arrays() if arrays is None else arrays
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        raw = idx_bytes(array)
        (folder / (stem + ".gz" if gz else stem)).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def cifar_batches(n: int = 4, seed: int = 0) -> dict[str, dict]:
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {name: {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, n)],
                   b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                   b"filenames": [b"img%d.png" % i for i in range(n)]} for name in names}


def write_cifar(folder: Path, batches: dict[str, dict] | None = None, protocol: int = 2) -> dict[str, dict]:
    batches = cifar_batches() if batches is None else batches
    folder.mkdir(parents=True, exist_ok=True)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    return batches


def pixels(array: np.ndarray) -> torch.Tensor:
    """The preprocessing the spec states: x/255, then (x - 0.5)/0.5, flattened."""
    x = torch.from_numpy(array.reshape(len(array), -1).astype(np.float32)) / 255
    return (x - 0.5) / 0.5


#: The authors' CIFAR-10 channel statistics (their data config), written out independently.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def cifar_pixels(array: np.ndarray) -> torch.Tensor:
    """CIFAR-10's preprocessing: x/255, then each channel's (x - mean)/std, flattened channel-first."""
    x = torch.from_numpy(array.astype(np.float32)) / 255
    channels = [(x[:, c * 1024:(c + 1) * 1024] - CIFAR_MEAN[c]) / CIFAR_STD[c] for c in range(3)]
    return torch.cat(channels, 1)


# ----------------------------------------------------------------------------- task names
def test_unknown_task_is_a_config_error_listing_the_tasks():
    with pytest.raises(ConfigError, match="choose one of linear, xor, digits, mnist, fashion-mnist, cifar10"):
        load_task("imagenet")
    assert TASKS == ("linear", "xor", "digits", "mnist", "fashion-mnist", "cifar10")


def test_negative_data_seed_is_a_config_error():
    with pytest.raises(ConfigError, match="--data-seed"):
        load_task("xor", data_seed=-1)


# ----------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize("task", ["linear", "xor"])
def test_synthetic_shapes_dtypes_and_split(task):
    data = load_task(task)
    assert isinstance(data, Dataset) and data.name == task
    assert data.x_train.shape == (900, 2) and data.x_test.shape == (100, 2)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.n_classes == 2 and data.input_shape == (2,) and data.n_features == 2
    train_rows = {tuple(row) for row in data.x_train.tolist()}
    assert not any(tuple(row) in train_rows for row in data.x_test.tolist())


@pytest.mark.parametrize("task", ["linear", "xor"])
def test_synthetic_is_a_function_of_the_data_seed(task):
    a, b, c = load_task(task, data_seed=3), load_task(task, data_seed=3), load_task(task, data_seed=4)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.x_train, c.x_train)


@pytest.mark.parametrize("task", ["linear", "xor"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_classes_are_roughly_balanced(task, seed):
    data = load_task(task, data_seed=seed)
    share = torch.cat([data.y_train, data.y_test]).float().mean().item()
    assert 0.2 < share < 0.8
    assert set(data.y_test.tolist()) == {0, 1}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_labels_are_the_side_of_the_seeded_hyperplane(seed):
    data = load_task("linear", data_seed=seed)
    _, _, w = linear_points(np.random.default_rng(seed))
    x = torch.cat([data.x_train, data.x_test]).double().numpy()
    y = torch.cat([data.y_train, data.y_test]).numpy()
    assert x.min() >= -1 and x.max() <= 1
    margin = x @ w
    clear = np.abs(margin) > 1e-6  # float32 rounding may flip points on the line itself
    assert clear.sum() > 990
    np.testing.assert_array_equal(y[clear], (margin[clear] > 0).astype(np.int64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_labels_are_the_xor_of_the_nearest_corner(seed):
    data = load_task("xor", data_seed=seed)
    x = torch.cat([data.x_train, data.x_test])
    y = torch.cat([data.y_train, data.y_test])
    corner = (x > 0.5).long()
    assert torch.equal(y, corner[:, 0] ^ corner[:, 1])
    assert torch.bincount(corner[:, 0] * 2 + corner[:, 1]).tolist() == [250, 250, 250, 250]
    noise = x - corner
    assert 0.08 < noise.std().item() < 0.12


# ----------------------------------------------------------------------------- digits
def test_digits_is_a_deterministic_stratified_split():
    pytest.importorskip("sklearn")
    a, b, c = load_task("digits", data_seed=0), load_task("digits", data_seed=0), load_task("digits", data_seed=1)
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert a.input_shape == (1, 8, 8) and a.n_classes == 10 and a.x_train.dtype == torch.float32
    assert a.x_train.min().item() == -1.0 and a.x_train.max().item() == 1.0
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.y_test, c.y_test)
    totals = torch.bincount(torch.cat([a.y_train, a.y_test]), minlength=10).double()
    in_test = torch.bincount(a.y_test, minlength=10).double()
    assert torch.all((in_test - 0.2 * totals).abs() <= 1)


def test_digits_pixel_scale_maps_0_to_16_onto_minus_1_to_1():
    datasets = pytest.importorskip("sklearn.datasets")
    raw = torch.from_numpy(datasets.load_digits().data).float()
    data = load_task("digits")
    x = torch.cat([data.x_train, data.x_test])
    assert sorted(((x + 1) / 2 * 16).round().sum(1).tolist()) == sorted(raw.sum(1).tolist())


def test_digits_without_scikit_learn_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r"pip install 'biohsic\[digits\]'"):
        load_task("digits")


# ----------------------------------------------------------------------------- IDX files
@pytest.mark.parametrize("gz", [True, False])
def test_mnist_loads_idx_files(tmp_path, gz, no_network):
    arrays = write_mnist(tmp_path, gz=gz)
    data = load_task("mnist", data_dir=tmp_path)
    assert data.x_train.shape == (20, 784) and data.x_test.shape == (10, 784)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.input_shape == (1, 28, 28) and data.n_classes == 10 and data.n_features == 784
    assert data.x_train.min().item() == -1.0 and data.x_train.max().item() == 1.0
    torch.testing.assert_close(data.x_train, pixels(arrays[IDX_STEMS[0]]))
    torch.testing.assert_close(data.x_test, pixels(arrays[IDX_STEMS[2]]))
    assert data.y_train.tolist() == arrays[IDX_STEMS[1]].tolist()
    assert data.y_test.tolist() == arrays[IDX_STEMS[3]].tolist()


def test_idx_files_with_dotted_names_and_a_task_subfolder_are_found(tmp_path, no_network):
    arrays = mnist_arrays()
    write_mnist(tmp_path / "fashion-mnist", {stem.replace("-idx", ".idx"): a for stem, a in arrays.items()})
    data = load_task("fashion-mnist", data_dir=tmp_path)
    assert data.name == "fashion-mnist" and data.y_test.tolist() == arrays[IDX_STEMS[3]].tolist()


def test_data_env_names_a_root_with_one_folder_per_task(tmp_path, monkeypatch, no_network):
    write_mnist(tmp_path / "mnist")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert load_task("mnist").x_train.shape == (20, 784)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("cut, state", [(-5, "truncated"), (3, "over-long")])
def test_idx_file_of_the_wrong_size_is_reported_by_name(tmp_path, gz, cut, state):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = path.read_bytes()
    raw = raw[:cut] if cut < 0 else raw + bytes(cut)
    path.unlink()
    if gz:
        path = path.with_name(path.name + ".gz")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataError, match=f"{path.name}: {state}, {len(raw)} bytes where its header promises"):
        load_task("mnist", data_dir=tmp_path)


def test_idx_file_shorter_than_its_header_is_truncated(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes((2049).to_bytes(4, "big") + b"\x00\x00")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: truncated"):
        load_task("mnist", data_dir=tmp_path)


def test_damaged_gzip_is_reported_by_name(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError, match="cannot read .*train-labels-idx1-ubyte.gz"):
        load_task("mnist", data_dir=tmp_path)


def test_swapped_idx_files_fail_on_the_magic_number(tmp_path):
    write_mnist(tmp_path, gz=False)
    images, labels = tmp_path / "t10k-images-idx3-ubyte", tmp_path / "t10k-labels-idx1-ubyte"
    raw_images = images.read_bytes()
    images.write_bytes(labels.read_bytes())
    labels.write_bytes(raw_images)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: magic number 2049, expected 2051"):
        load_task("mnist", data_dir=tmp_path)


def test_label_count_must_match_image_count(tmp_path):
    arrays = mnist_arrays()
    arrays[IDX_STEMS[1]] = arrays[IDX_STEMS[1]][:19]
    write_mnist(tmp_path, arrays)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: 19 labels for 20 images"):
        load_task("mnist", data_dir=tmp_path)


def test_labels_must_be_class_indices(tmp_path):
    arrays = mnist_arrays()
    arrays[IDX_STEMS[3]][4] = 10
    write_mnist(tmp_path, arrays)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: labels must be class indices 0..9"):
        load_task("mnist", data_dir=tmp_path)


def test_images_must_be_28_by_28(tmp_path):
    arrays = mnist_arrays()
    arrays[IDX_STEMS[0]] = arrays[IDX_STEMS[0]][:, :27]
    write_mnist(tmp_path, arrays)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: images of \(27, 28\) pixels"):
        load_task("mnist", data_dir=tmp_path)


def test_missing_folder_says_how_to_get_mnist(tmp_path, no_network):
    folder = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_task("mnist", data_dir=folder)
    message = str(info.value)
    assert f"{folder} (no such folder)" in message and "--data-dir DIR" in message and "--download" in message
    assert "\n" not in message


def test_incomplete_folder_is_not_used(tmp_path, no_network):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="mnist files not found in .*t10k-images-idx3-ubyte"):
        load_task("mnist", data_dir=tmp_path)


def test_missing_fashion_mnist_points_to_the_debian_package(monkeypatch, tmp_path, no_network):
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_task("fashion-mnist")


def test_without_any_folder_mnist_asks_for_data_dir(no_network):
    with pytest.raises(DataError, match=r"no folder \(no --data-dir\); pass --data-dir DIR"):
        load_task("mnist")


# ----------------------------------------------------------------------------- CIFAR-10
def test_cifar10_loads_from_the_batches_folder_or_its_parent(tmp_path, no_network):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    for data_dir in (tmp_path, tmp_path / "cifar-10-batches-py"):
        data = load_task("cifar10", data_dir=data_dir)
        assert data.x_train.shape == (20, 3072) and data.x_test.shape == (4, 3072)
        assert data.input_shape == (3, 32, 32) and data.n_classes == 10 and data.x_train.dtype == torch.float32
        train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
        torch.testing.assert_close(data.x_train, cifar_pixels(train))
        torch.testing.assert_close(data.x_test, cifar_pixels(batches["test_batch"][b"data"]))
        assert data.y_train.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
        assert data.y_test.dtype == torch.int64 and data.y_test.tolist() == batches["test_batch"][b"labels"]
        assert -2.1 <= data.x_train.min().item() and data.x_train.max().item() <= 2.2


def test_cifar10_rows_stay_channel_first(tmp_path):
    batches = cifar_batches()
    batches["test_batch"][b"data"][0] = np.repeat(np.array([0, 128, 255], dtype=np.uint8), 1024)
    write_cifar(tmp_path, batches)
    image = load_task("cifar10", data_dir=tmp_path).x_test[0].reshape(3, 32, 32)
    expected = [(0 - CIFAR_MEAN[0]) / CIFAR_STD[0], (128 / 255 - CIFAR_MEAN[1]) / CIFAR_STD[1],
                (1 - CIFAR_MEAN[2]) / CIFAR_STD[2]]
    torch.testing.assert_close(image.amin((1, 2)), torch.tensor(expected))
    torch.testing.assert_close(image.amax((1, 2)), image.amin((1, 2)))


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar10_batches_of_any_pickle_protocol_load(tmp_path, protocol, str_keys):
    batches = cifar_batches()
    if str_keys:
        batches = {name: {k.decode(): v for k, v in batch.items()} for name, batch in batches.items()}
    write_cifar(tmp_path, batches, protocol=protocol)
    assert load_task("cifar10", data_dir=tmp_path).x_train.shape == (20, 3072)


def test_cifar10_batches_naming_numpy_1_modules_load(tmp_path):
    """The published batches come from Python 2 and numpy 1: ``numpy.core.multiarray._reconstruct``."""
    batches = write_cifar(tmp_path)
    for name in batches:
        raw = (tmp_path / name).read_bytes()
        assert b"numpy._core.multiarray\n_reconstruct" in raw
        (tmp_path / name).write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    data = load_task("cifar10", data_dir=tmp_path)
    torch.testing.assert_close(data.x_test, cifar_pixels(batches["test_batch"][b"data"]))


def test_cifar10_loads_from_the_archive(tmp_path, no_network):
    folder = tmp_path / "unpacked" / "cifar-10-batches-py"
    batches = write_cifar(folder)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    data = load_task("cifar10", data_dir=tmp_path)
    torch.testing.assert_close(data.x_test, cifar_pixels(batches["test_batch"][b"data"]))
    assert data.y_train.shape == (20,)


def test_truncated_archive_is_reported(tmp_path):
    folder = tmp_path / "unpacked" / "cifar-10-batches-py"
    write_cifar(folder)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue()[:-200])
    with pytest.raises(DataError, match="cannot read .*cifar-10-python.tar.gz"):
        load_task("cifar10", data_dir=tmp_path)


def test_archive_without_the_test_batch_is_reported(tmp_path):
    folder = tmp_path / "unpacked" / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "test_batch").unlink()
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    with pytest.raises(DataError, match="cifar-10-python.tar.gz lacks test_batch"):
        load_task("cifar10", data_dir=tmp_path)


def test_cifar10_batch_without_labels_is_reported(tmp_path):
    batches = cifar_batches()
    del batches["data_batch_3"][b"labels"]
    write_cifar(tmp_path, batches)
    with pytest.raises(DataError, match="data_batch_3: no 'labels' entry"):
        load_task("cifar10", data_dir=tmp_path)


def test_cifar10_batch_of_the_wrong_size_is_reported(tmp_path):
    batches = cifar_batches()
    batches["test_batch"][b"data"] = batches["test_batch"][b"data"][:, :3000]
    write_cifar(tmp_path, batches)
    with pytest.raises(DataError, match=r"test_batch: 'data' is uint8 of shape \(4, 3000\), expected uint8"):
        load_task("cifar10", data_dir=tmp_path)


def test_cifar10_label_count_must_match(tmp_path):
    batches = cifar_batches()
    batches["data_batch_1"][b"labels"].append(3)
    write_cifar(tmp_path, batches)
    with pytest.raises(DataError, match="data_batch_1: 5 labels for 4 images"):
        load_task("cifar10", data_dir=tmp_path)


def test_truncated_cifar10_batch_is_reported(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_2"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_2: not a CIFAR-10 python batch"):
        load_task("cifar10", data_dir=tmp_path)


class Payload:
    """A pickle that creates a folder when loaded by an unrestricted unpickler."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.mkdir, (str(self.target),)


def test_malicious_cifar10_pickle_runs_no_code(tmp_path):
    batches = cifar_batches()
    target = tmp_path / "created-by-pickle"
    batches["test_batch"][b"filenames"] = Payload(target)
    write_cifar(tmp_path / "data", batches)
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 python batch .*refused to load"):
        load_task("cifar10", data_dir=tmp_path / "data")
    assert not target.exists()


def test_missing_cifar10_says_how_to_get_it(tmp_path, no_network):
    with pytest.raises(DataError, match="cifar10 files not found in .*cifar-10-python.tar.gz, or add --download"):
        load_task("cifar10", data_dir=tmp_path)


# ----------------------------------------------------------------------------- download
def fake_server(monkeypatch, task: str, blobs: dict[str, bytes]) -> list[str]:
    """Serve ``blobs`` by file name through a fake :func:`fetch`; returns the list of fetched URLs."""
    fetched: list[str] = []

    def fetch(url, dest):
        fetched.append(url)
        dest.write_bytes(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(download_module, "fetch", fetch)
    monkeypatch.setitem(download_module.SOURCES, task, tuple(
        (base, name, hashlib.md5(blobs[name]).hexdigest()) for base, name, _ in download_module.SOURCES[task]))
    return fetched


def test_mnist_download_writes_the_files_once(tmp_path, monkeypatch):
    arrays = mnist_arrays()
    blobs = {stem + ".gz": gzip.compress(idx_bytes(array)) for stem, array in arrays.items()}
    fetched = fake_server(monkeypatch, "mnist", blobs)
    data = load_task("mnist", data_dir=tmp_path / "new", download=True)
    assert len(fetched) == 4 and all(url.startswith("https://") for url in fetched)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(blobs)
    assert data.y_train.tolist() == arrays[IDX_STEMS[1]].tolist()
    load_task("mnist", data_dir=tmp_path / "new", download=True)
    assert len(fetched) == 4


def test_download_completes_a_partial_folder(tmp_path, monkeypatch):
    arrays = mnist_arrays()
    blobs = {stem + ".gz": gzip.compress(idx_bytes(array)) for stem, array in arrays.items()}
    fetched = fake_server(monkeypatch, "mnist", blobs)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(blobs["train-images-idx3-ubyte.gz"])
    assert load_task("mnist", data_dir=tmp_path, download=True).x_train.shape == (20, 784)
    assert len(fetched) == 3


def test_cifar10_download_into_the_data_env_folder(tmp_path, monkeypatch):
    folder = tmp_path / "unpacked" / "cifar-10-batches-py"
    write_cifar(folder)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    fetched = fake_server(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": buffer.getvalue()})
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "root"))
    assert load_task("cifar10", download=True).x_train.shape == (20, 3072)
    assert fetched == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert (tmp_path / "root" / "cifar10" / "cifar-10-python.tar.gz").is_file()


def test_download_with_the_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    blobs = {stem + ".gz": b"not the file" for stem in IDX_STEMS}
    fake_server(monkeypatch, "mnist", blobs)
    monkeypatch.setitem(download_module.SOURCES, "mnist", tuple(
        (base, name, "0" * 32) for base, name, _ in download_module.SOURCES["mnist"]))
    with pytest.raises(DataError, match="arrived with MD5 .*, expected 0{32}; run --download again"):
        load_task("mnist", data_dir=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_network_is_a_data_error(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise download_module.urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download_module.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="cannot download https://.*check the network"):
        load_task("mnist", data_dir=tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_download_needs_a_folder(no_network):
    with pytest.raises(DataError, match="--download needs a folder to write mnist into"):
        load_task("mnist", download=True)


def test_fashion_mnist_is_not_downloaded(tmp_path, no_network):
    with pytest.raises(DataError, match="--download fetches only mnist, cifar10"):
        load_task("fashion-mnist", data_dir=tmp_path, download=True)


# ----------------------------------------------------------------------------- Debian's Fashion-MNIST
@pytest.mark.skipif(not (SYSTEM_DIRS["fashion-mnist"] / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_loads(no_network):
    data = load_task("fashion-mnist")
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.x_train.min().item() == -1.0 and data.x_train.max().item() == 1.0
    assert torch.bincount(data.y_train).tolist() == [6000] * 10
    assert torch.bincount(data.y_test).tolist() == [1000] * 10
