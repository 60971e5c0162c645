"""Every loader on tiny files in the real formats, including broken ones."""

import gzip
import os
import pickle

import numpy as np
import pytest
import torch
from support.formats import (
    write_cifar10,
    write_cifar100,
    write_gtsrb,
    write_image,
    write_imagefolder,
    write_mnist,
    write_tinyimagenet,
)

from triggerlab.catalogue.datasets import DATASETS
from triggerlab.config import DataConfig
from triggerlab.data.cifar10 import load_cifar10, load_cifar100
from triggerlab.data.digits import load_digits
from triggerlab.data.gtsrb import load_gtsrb
from triggerlab.data.imagefolder import load_imagefolder
from triggerlab.data.mnist import load_mnist
from triggerlab.data.prepare import prepare_data
from triggerlab.data.tinyimagenet import load_tinyimagenet
from triggerlab.data.transforms import convert_channels, resize_images, stratified_split
from triggerlab.errors import ConfigError, DataFormatError

# ---- digits -----------------------------------------------------------------------------


def test_digits_is_the_real_sklearn_data_scaled_to_0_255():
    data = load_digits().train
    assert data.images.shape == (1797, 1, 8, 8)
    assert data.images.dtype == torch.uint8
    assert int(data.images.max()) == 255
    assert data.num_classes == 10
    assert torch.bincount(data.targets).min() >= 170


def test_digits_split_is_stratified_and_deterministic():
    cfg = DataConfig(name="digits", resize=(16, 16))
    a, b = prepare_data(cfg, seed=3), prepare_data(cfg, seed=3)
    assert torch.equal(a.train.images, b.train.images)
    assert len(a.test) == sum(
        round(0.2 * n) for n in torch.bincount(load_digits().train.targets).tolist()
    )
    assert a.shape == (1, 16, 16)
    c = prepare_data(cfg, seed=4)
    assert not torch.equal(a.test.targets, c.test.targets)


# ---- MNIST --------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    data = load_mnist(tmp_path)
    assert data.train.images.shape == (20, 1, 28, 28)
    assert np.array_equal(data.train.images[:, 0].numpy(), arrays["train"][0])
    assert np.array_equal(data.test.targets.numpy(), arrays["t10k"][1])


def test_mnist_accepts_torchvision_raw_layout(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw")
    assert len(load_mnist(tmp_path).test) == 10


def test_mnist_wrong_magic(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[2:4] = b"\x08\x01"  # labels magic on an images file
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match=r"train-images-idx3-ubyte: wrong magic number 2049"):
        load_mnist(tmp_path)


def test_mnist_truncated_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataFormatError, match="truncated or corrupted"):
        load_mnist(tmp_path)


def test_mnist_corrupted_gzip(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:15])
    with pytest.raises(DataFormatError, match="train-labels-idx1-ubyte.gz: cannot read"):
        load_mnist(tmp_path)


def test_mnist_missing_file_and_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataFormatError, match="cannot find t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)
    labels = np.zeros(9, dtype=np.uint8)
    from support.formats import idx_bytes

    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
    with pytest.raises(DataFormatError, match="9 labels for 10 images"):
        load_mnist(tmp_path)


# ---- CIFAR-10 -----------------------------------------------------------------------------


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_reads_pickles_planes_in_rgb_order(tmp_path, bytes_keys):
    written = write_cifar10(tmp_path, bytes_keys=bytes_keys)
    data = load_cifar10(tmp_path)
    assert data.train.images.shape == (20, 3, 32, 32)
    raw, labels = written["test_batch"]
    # 1024 R values, then G, then B, each a row-major 32x32 plane
    assert data.test.images[1, 0, 0, 5].item() == raw[1, 5]
    assert data.test.images[1, 1, 2, 3].item() == raw[1, 1024 + 2 * 32 + 3]
    assert data.test.images[1, 2, 31, 31].item() == raw[1, 3071]
    assert data.test.targets.tolist() == labels
    assert data.train.class_names[0] == "airplane"


def test_cifar100_reads_the_released_pickles_with_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    data = load_cifar100(tmp_path)
    assert data.train.images.shape == (8, 3, 32, 32) and data.test.images.shape == (4, 3, 32, 32)
    raw, labels = written["train"]
    assert data.train.images[2, 1, 3, 4].item() == raw[2, 1024 + 3 * 32 + 4]
    assert data.train.targets.tolist() == labels  # the 100 fine labels, not the 20 coarse
    assert len(data.train.class_names) == 100 and data.train.class_names[7] == "class_07"
    direct = load_cifar100(tmp_path / "cifar-100-python")  # the folder itself works too
    assert torch.equal(direct.test.images, data.test.images)
    split = prepare_data(DataConfig(name="cifar100", root=tmp_path), 0)
    assert (len(split.train), len(split.test)) == (8, 4)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(DataFormatError, match="no cifar-100-python/ folder with train, test"):
        load_cifar100(tmp_path)


def test_cifar10_corrupted_batch(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFormatError, match="data_batch_3: not a readable CIFAR pickle"):
        load_cifar10(tmp_path)


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    write_cifar10(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({"data": Exploit(), "labels": []}))
    with pytest.raises(DataFormatError, match="refusing to load global"):
        load_cifar10(tmp_path)


def test_cifar10_wrong_shape(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(DataFormatError, match=r"'data' must be uint8 \(N, 3072\)"):
        load_cifar10(tmp_path)


# ---- TinyImageNet, GTSRB, image folders ---------------------------------------------------------


def test_tinyimagenet_layout_with_greyscale_files(tmp_path):
    write_tinyimagenet(tmp_path)
    data = load_tinyimagenet(tmp_path)
    assert data.train.images.shape == (6, 3, 64, 64)
    assert data.train.targets.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.train.class_names == ("goldfish", "salamander")
    assert len(data.test) == 6
    # the greyscale JPEG was expanded to three equal channels
    first = data.train.images[0].int()
    assert torch.equal(first[0], first[1]) and torch.equal(first[1], first[2])


def test_tinyimagenet_bad_annotation(tmp_path):
    write_tinyimagenet(tmp_path)
    ann = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(DataFormatError, match="val_annotations.txt:1"):
        load_tinyimagenet(tmp_path)


def test_gtsrb_resizes_varying_images_and_reads_test_labels(tmp_path):
    write_gtsrb(tmp_path)
    data = load_gtsrb(tmp_path, size=(16, 16))
    assert data.train.images.shape == (4, 3, 16, 16)
    assert data.train.targets.tolist() == [0, 0, 1, 1]
    assert data.test.targets.tolist() == [0, 1]
    cropped = load_gtsrb(tmp_path, size=(16, 16), crop_roi=True)
    # the ROI holds only the sign, so the cropped corner pixel is sign-coloured, not black
    assert cropped.train.images[0, 0, 0, 0].item() > 150
    assert data.train.images[0, 0, 0, 0].item() < 50


def test_gtsrb_requires_a_size_and_valid_csv(tmp_path):
    write_gtsrb(tmp_path, with_test=False)
    with pytest.raises(DataFormatError, match="set data.resize"):
        load_gtsrb(tmp_path)
    assert load_gtsrb(tmp_path, size=(8, 8)).test is None
    gt = tmp_path / "Final_Training" / "Images" / "00001" / "GT-00001.csv"
    gt.write_text("Filename;Width\nx.ppm;3\n")
    with pytest.raises(DataFormatError, match="GT-00001.csv:2: missing"):
        load_gtsrb(tmp_path, size=(8, 8))


def test_imagefolder_classes_sorted_and_corrupt_file_reported(tmp_path):
    write_imagefolder(tmp_path, classes=("zebra", "ant"))
    data = load_imagefolder(tmp_path)
    assert data.train.class_names == ("ant", "zebra")
    assert data.train.images.shape == (6, 3, 12, 12)
    assert data.train.images[0, 0, 0, 0].item() == 50  # ant is class index 1 in writing order
    (tmp_path / "ant" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataFormatError, match="bad.png: cannot decode image"):
        load_imagefolder(tmp_path)


def test_imagefolder_mixed_sizes_need_resize(tmp_path):
    write_imagefolder(tmp_path)
    write_image(tmp_path / "cat" / "big.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DataFormatError, match="differ in size"):
        load_imagefolder(tmp_path)
    assert load_imagefolder(tmp_path, size=(8, 8)).train.images.shape == (7, 3, 8, 8)


# ---- preparing a split ---------------------------------------------------------------------------


def test_prepare_uses_official_split_resize_and_grey_to_rgb(tmp_path):
    write_mnist(tmp_path)
    cfg = DataConfig(name="mnist", root=tmp_path, resize=64, channels=3)
    split = prepare_data(cfg, seed=0)
    assert split.train.images.shape == (20, 3, 64, 64)
    assert len(split.test) == 10
    random = prepare_data(
        DataConfig(name="mnist", root=tmp_path, split="random", test_fraction=0.5), 0
    )
    assert len(random.train) + len(random.test) == 30


def test_prepare_rejects_missing_root_and_unknown_options(tmp_path):
    with pytest.raises(ConfigError, match="data.root: dataset 'mnist' needs a root"):
        prepare_data(DataConfig(name="mnist"), 0)
    with pytest.raises(ConfigError, match=r"data.root: .* does not exist"):
        prepare_data(DataConfig(name="mnist", root=tmp_path / "nope"), 0)
    with pytest.raises(ConfigError, match="unknown option"):
        prepare_data(DataConfig(name="digits", options={"zoom": 2}), 0)
    write_gtsrb(tmp_path)
    ok = prepare_data(
        DataConfig(name="gtsrb", root=tmp_path, resize=8, options={"crop_roi": True}), 0
    )
    assert ok.shape == (3, 8, 8)


def test_resize_and_channel_conversion_values():
    images = torch.tensor([[[[0, 255], [255, 0]]]], dtype=torch.uint8)
    assert resize_images(images, (2, 2)) is images
    up = resize_images(images, (4, 4))
    assert up.shape == (1, 1, 4, 4) and up[0, 0, 0, 0].item() == 0 and up[0, 0, 0, 3].item() == 255
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert convert_channels(rgb, 1).item() == 76  # 0.299 * 255 = 76.2
    assert convert_channels(images, 3).shape == (1, 3, 2, 2)


def test_stratified_split_keeps_class_shares():
    from triggerlab.data.dataset import ImageDataset

    targets = torch.tensor([0] * 50 + [1] * 10)
    data = ImageDataset(torch.zeros(60, 1, 2, 2, dtype=torch.uint8), targets, ("a", "b"))
    train, test = stratified_split(data, 0.2, torch.Generator().manual_seed(0))
    assert torch.bincount(test.targets).tolist() == [10, 2]
    assert len(train) == 48


def test_every_registered_dataset_documents_its_layout():
    for info in DATASETS.values():
        assert info.summary and info.layout


def test_gzip_helper_roundtrip(tmp_path):
    # guards the fixture writer itself: a .gz file must hold the same bytes as the plain one
    write_mnist(tmp_path / "a", gz=True, seed=1)
    write_mnist(tmp_path / "b", gz=False, seed=1)
    assert (
        gzip.decompress((tmp_path / "a" / "train-images-idx3-ubyte.gz").read_bytes())
        == (tmp_path / "b" / "train-images-idx3-ubyte").read_bytes()
    )


def test_cifar_label_problems_name_the_batch_file_and_the_key(tmp_path):
    write_cifar10(tmp_path / "ten")
    path = tmp_path / "ten" / "cifar-10-batches-py" / "data_batch_3"
    batch = pickle.loads(path.read_bytes())
    batch["labels"] = [0, 1, 10, 2]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(
        DataFormatError, match=r"data_batch_3: 'labels' must lie in 0-9, found 0-10"
    ):
        load_cifar10(tmp_path / "ten")
    write_cifar100(tmp_path / "hundred")
    path = tmp_path / "hundred" / "cifar-100-python" / "test"
    batch = pickle.loads(path.read_bytes())
    batch[b"fine_labels"] = [0.5] * 4
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(DataFormatError, match=r"python/test: 'fine_labels' must be integer"):
        load_cifar100(tmp_path / "hundred")
