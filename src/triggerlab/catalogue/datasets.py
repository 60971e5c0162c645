"""Dataset declarations: each dataset's name, what it holds, the files it expects and the
keyword options of its loader.

A loader is named by import path (``module:function``, called as
``loader(root, size, **options)`` and returning uint8 images) and imported only when a
dataset is loaded, so validating a config or listing the datasets never imports torch.
Adding a dataset is one loader module in ``triggerlab/data/`` and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triggerlab.catalogue.implementation import implementation_of


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    loader: str  # "module:function" of the loader
    summary: str
    layout: str
    needs_root: bool = True
    options: dict[str, object] = field(default_factory=dict)  # data.options and defaults
    run_size: int | None = None  # the side a run resizes to when data.resize is left out

    def load(self, *args: object, **kwargs: object) -> object:
        """Call the loader (imports it and what it needs)."""
        return implementation_of(self.loader)(*args, **kwargs)


def _synthetic(
    head_yaw: float, head_pitch: float, head_roll: float, gaze_range: float
) -> dict[str, object]:
    """The procedural faces' options: the two labellings differ in their angle ranges."""
    return {
        "count": 6000,
        "subjects": 15,
        "head_yaw": head_yaw,
        "head_pitch": head_pitch,
        "head_roll": head_roll,
        "gaze_range": gaze_range,
        "seed": 0,
    }


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "digits",
            "triggerlab.data.digits:load_digits",
            "scikit-learn's bundled handwritten digits, 1,797 grey 8x8 images, 10 classes "
            "(offline default; seeded split)",
            "no files: shipped inside scikit-learn",
            needs_root=False,
            options={"stored_size": 8},  # > 8: standing in for a dataset stored at that side
            run_size=16,  # small_cnn cannot take their native 8 px
        ),
        DatasetInfo(
            "mnist",
            "triggerlab.data.mnist:load_mnist",
            "MNIST, 70,000 grey 28x28 digits, official 60,000/10,000 split",
            "<root>/train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
            "t10k-labels-idx1-ubyte (each optionally .gz; also <root>/MNIST/raw/)",
        ),
        DatasetInfo(
            "cifar10",
            "triggerlab.data.cifar10:load_cifar10",
            "CIFAR-10, 60,000 RGB 32x32 images, 10 classes, official 50,000/10,000 split",
            "<root>/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta "
            "(python pickles; only trusted files)",
        ),
        DatasetInfo(
            "cifar100",
            "triggerlab.data.cifar10:load_cifar100",
            "CIFAR-100, 60,000 RGB 32x32 images, 100 classes, official 50,000/10,000 split",
            "<root>/cifar-100-python/train, test, meta (python pickles; only trusted files)",
        ),
        DatasetInfo(
            "tinyimagenet",
            "triggerlab.data.tinyimagenet:load_tinyimagenet",
            "TinyImageNet-200, RGB 64x64, 200 classes; val/ is the test part",
            "<root>/tiny-imagenet-200/wnids.txt, train/<wnid>/images/*.JPEG, "
            "val/images/*.JPEG, val/val_annotations.txt (words.txt optional)",
        ),
        DatasetInfo(
            "gtsrb",
            "triggerlab.data.gtsrb:load_gtsrb",
            "German traffic signs, 43 classes, images of varying size (set data.resize)",
            "<root>/Final_Training/Images/000CC/*.ppm + GT-000CC.csv; "
            "<root>/Final_Test/Images/*.ppm with GT-final_test.csv (labels)",
            options={"crop_roi": False},
        ),
        DatasetInfo(
            "synthetic_gaze",
            "triggerlab.data.synthetic:load_synthetic_gaze",
            "procedural 3-D faces (offline default for regression): gaze (pitch, yaw) in radians, "
            "15 subjects; split by subject",
            "no files: rendered from the seed",
            needs_root=False,
            options=_synthetic(20.0, 15.0, 5.0, 25.0),
        ),
        DatasetInfo(
            "synthetic_headpose",
            "triggerlab.data.synthetic:load_synthetic_headpose",
            "the same renderer labelled with head pose (yaw, pitch, roll) in degrees; "
            "split by subject",
            "no files: rendered from the seed",
            needs_root=False,
            options=_synthetic(60.0, 40.0, 20.0, 10.0),
        ),
        DatasetInfo(
            "mpiifacegaze",
            "triggerlab.data.mpiifacegaze:load_mpiifacegaze_source",
            "MPIIFaceGaze, gaze (pitch, yaw) in radians, 15 subjects; split by subject",
            "<root>/p00.mat ... p14.mat (normalised release, HDF5, BGR), or <root>/pXX/pXX.txt "
            "with the images it lists (raw release); set data.resize",
        ),
        DatasetInfo(
            "biwi",
            "triggerlab.data.biwi:load_biwi",
            "Biwi Kinect Head Pose, (yaw, pitch, roll) in degrees; raw sequences split by person",
            "<root>/hpdb/01 ... 24/frame_NNNNN_rgb.png + frame_NNNNN_pose.txt, or a folder with "
            "BIWI_train.npz and BIWI_test.npz (official split), or one .npz file",
        ),
        DatasetInfo(
            "imagefolder",
            "triggerlab.data.imagefolder:load_imagefolder",
            "any folder of images, one sub-folder per class (seeded split)",
            "<root>/<class_name>/*.{png,jpg,jpeg,ppm,bmp}; classes sorted by name",
        ),
    )
}
