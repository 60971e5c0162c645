"""Dataset names, their loaders and the file layout each expects."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from triggerlab.data.biwi import load_biwi
from triggerlab.data.cifar10 import load_cifar10, load_cifar100
from triggerlab.data.dataset import SourceData
from triggerlab.data.digits import load_digits
from triggerlab.data.gtsrb import load_gtsrb
from triggerlab.data.imagefolder import load_imagefolder
from triggerlab.data.mnist import load_mnist
from triggerlab.data.mpiifacegaze import load_mpiifacegaze_source
from triggerlab.data.synthetic import load_synthetic_gaze, load_synthetic_headpose
from triggerlab.data.tinyimagenet import load_tinyimagenet


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: Callable[..., SourceData]
    summary: str
    layout: str
    needs_root: bool = True

    def options(self) -> dict[str, object]:
        """Loader-specific keyword options (``data.options``) and their defaults."""
        params = inspect.signature(self.loader).parameters
        return {n: p.default for n, p in params.items() if n not in ("root", "size")}


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "digits",
            load_digits,
            "scikit-learn's bundled handwritten digits, 1,797 grey 8x8 images, 10 classes "
            "(offline default; seeded split)",
            "no files: shipped inside scikit-learn",
            needs_root=False,
        ),
        DatasetInfo(
            "mnist",
            load_mnist,
            "MNIST, 70,000 grey 28x28 digits, official 60,000/10,000 split",
            "<root>/train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte (each optionally .gz; also <root>/MNIST/raw/)",
        ),
        DatasetInfo(
            "cifar10",
            load_cifar10,
            "CIFAR-10, 60,000 RGB 32x32 images, 10 classes, official 50,000/10,000 split",
            "<root>/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta "
            "(python pickles; only trusted files)",
        ),
        DatasetInfo(
            "cifar100",
            load_cifar100,
            "CIFAR-100, 60,000 RGB 32x32 images, 100 classes, official 50,000/10,000 split",
            "<root>/cifar-100-python/train, test, meta (python pickles; only trusted files)",
        ),
        DatasetInfo(
            "tinyimagenet",
            load_tinyimagenet,
            "TinyImageNet-200, RGB 64x64, 200 classes; val/ is the test part",
            "<root>/tiny-imagenet-200/wnids.txt, train/<wnid>/images/*.JPEG, "
            "val/images/*.JPEG, val/val_annotations.txt (words.txt optional)",
        ),
        DatasetInfo(
            "gtsrb",
            load_gtsrb,
            "German traffic signs, 43 classes, images of varying size (set data.resize)",
            "<root>/Final_Training/Images/000CC/*.ppm + GT-000CC.csv; "
            "<root>/Final_Test/Images/*.ppm with GT-final_test.csv (labels)",
        ),
        DatasetInfo(
            "synthetic_gaze",
            load_synthetic_gaze,
            "procedural 3-D faces (offline default for regression): gaze (pitch, yaw) in radians, "
            "15 subjects; split by subject",
            "no files: rendered from the seed",
            needs_root=False,
        ),
        DatasetInfo(
            "synthetic_headpose",
            load_synthetic_headpose,
            "the same renderer labelled with head pose (yaw, pitch, roll) in degrees; "
            "split by subject",
            "no files: rendered from the seed",
            needs_root=False,
        ),
        DatasetInfo(
            "mpiifacegaze",
            load_mpiifacegaze_source,
            "MPIIFaceGaze, gaze (pitch, yaw) in radians, 15 subjects; split by subject",
            "<root>/p00.mat ... p14.mat (normalised release, HDF5, BGR), or <root>/pXX/pXX.txt "
            "with the images it lists (raw release); set data.resize",
        ),
        DatasetInfo(
            "biwi",
            load_biwi,
            "Biwi Kinect Head Pose, (yaw, pitch, roll) in degrees; raw sequences split by person",
            "<root>/hpdb/01 ... 24/frame_NNNNN_rgb.png + frame_NNNNN_pose.txt, or a folder with "
            "BIWI_train.npz and BIWI_test.npz (official split), or one .npz file",
        ),
        DatasetInfo(
            "imagefolder",
            load_imagefolder,
            "any folder of images, one sub-folder per class (seeded split)",
            "<root>/<class_name>/*.{png,jpg,jpeg,ppm,bmp}; classes sorted by name",
        ),
    )
}
