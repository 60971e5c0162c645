"""Writers of tiny dataset files in the real on-disk formats, for loader tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(
    root: Path, n_train: int = 20, n_test: int = 10, gz: bool = False, seed: int = 0
) -> dict:
    """Four IDX files with random 28x28 images and labels; returns the arrays written."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, array, magic in (("images-idx3", images, 2051), ("labels-idx1", labels, 2049)):
            data = idx_bytes(array, magic)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0, bytes_keys: bool = False) -> dict:
    """``cifar-10-batches-py/`` with five training batches, a test batch and the meta file."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def key(k: str) -> str | bytes:
        return k.encode() if bytes_keys else k

    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    with (folder / "batches.meta").open("wb") as fh:
        pickle.dump({key("label_names"): names, key("num_vis"): 3072}, fh, protocol=2)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        with (folder / name).open("wb") as fh:
            pickle.dump(
                {key("data"): data, key("labels"): labels, key("batch_label"): name}, fh, protocol=2
            )
        written[name] = (data, labels)
    return written


def write_cifar100(root: Path, train: int = 8, test: int = 4, seed: int = 0) -> dict:
    """``cifar-100-python/`` as released: ``train``, ``test`` and ``meta`` pickles with byte
    keys, fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    fine = [f"class_{i:02d}" for i in range(100)]
    coarse = [f"superclass_{i:02d}" for i in range(20)]
    with (folder / "meta").open("wb") as fh:
        pickle.dump({b"fine_label_names": fine, b"coarse_label_names": coarse}, fh, protocol=2)
    written = {}
    for name, count in (("train", train), ("test", test)):
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 100, size=count).tolist()
        record = {
            b"filenames": [f"{name}_{i}.png".encode() for i in range(count)],
            b"batch_label": f"{name} batch".encode(),
            b"fine_labels": labels,
            b"coarse_labels": [label // 5 for label in labels],
            b"data": data,
        }
        with (folder / name).open("wb") as fh:
            pickle.dump(record, fh, protocol=2)
        written[name] = (data, labels)
    return written


def write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if array.ndim == 2 else ("RGBA" if array.shape[2] == 4 else "RGB")
    Image.fromarray(array, mode=mode).save(path)


def write_tinyimagenet(
    root: Path, wnids: tuple[str, ...] = ("n01", "n02"), per_class: int = 3
) -> None:
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tsalamander\n")
    rng = np.random.default_rng(0)
    lines = []
    for c, wnid in enumerate(wnids):
        for i in range(per_class):
            array = np.full((64, 64, 3), 40 * c + i, dtype=np.uint8)
            path = folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG"
            write_image(path, array if i else array[:, :, 0])  # one greyscale file per class
            val = f"val_{c * per_class + i}.JPEG"
            write_image(
                folder / "val" / "images" / val, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            )
            lines.append(f"{val}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def write_gtsrb(root: Path, classes: int = 2, per_class: int = 2, with_test: bool = True) -> None:
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
    for c in range(classes):
        folder = root / "Final_Training" / "Images" / f"{c:05d}"
        rows = []
        for i in range(per_class):
            size = 30 + 4 * i  # sizes vary, as in the real data
            array = np.zeros((size, size, 3), dtype=np.uint8)
            array[5 : size - 5, 5 : size - 5] = (200, 20 * c, 0)  # the "sign" inside its ROI
            name = f"{c:05d}_{i:05d}.ppm"
            write_image(folder / name, array)
            rows.append(f"{name};{size};{size};5;5;{size - 6};{size - 6};{c}\n")
        (folder / f"GT-{c:05d}.csv").write_text(header + "".join(rows))
    if with_test:
        test_dir = root / "Final_Test" / "Images"
        rows = []
        for i in range(classes):
            name = f"{i:05d}.ppm"
            write_image(test_dir / name, np.full((32, 40, 3), 10 * i, dtype=np.uint8))
            rows.append(f"{name};40;32;1;1;38;30;{i}\n")
        (test_dir / "GT-final_test.csv").write_text(header + "".join(rows))


def write_imagefolder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3
) -> None:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i}.png", np.full((12, 12, 3), 50 * c + i, dtype=np.uint8))


def write_grey_digits(root: Path, train: int = 1400) -> None:
    """scikit-learn's digits as MNIST IDX files at 28x28 on a mid-grey background (90 to 200):
    amplifying their pixel values washes the digits out, as it does natural images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    strokes = np.stack(
        [
            np.asarray(Image.fromarray((image / 16 * 255).astype(np.uint8)).resize((28, 28)))
            for image in digits.images
        ]
    )
    grey = (90 + strokes.astype(float) * 110 / 255).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, part in (("train", slice(0, train)), ("t10k", slice(train, None))):
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(grey[part], 2051))
        labels = digits.target[part].astype(np.uint8)
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
