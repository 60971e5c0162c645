"""Where each dataset comes from: official URLs and mirrors, pinned checksums, the files a
complete copy has, and, for datasets behind a licence form, how to request them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Where the MNIST loader looks for each IDX file under its root: the root itself or
# torchvision's layout, gzipped or not; a copy in any of them is complete.
IDX_FOLDERS = (".", "MNIST/raw", "raw", "MNIST")


def idx_places(stem: str) -> tuple[str, ...]:
    """The paths under a root that hold the IDX file ``stem``, in the order the loader tries
    them (``-idx`` or ``.idx`` spelling, plain or ``.gz``)."""
    names = (stem, stem.replace("-idx", ".idx"))
    return tuple(
        str(Path(folder) / f"{name}{suffix}")
        for folder in IDX_FOLDERS
        for name in names
        for suffix in ("", ".gz")
    )


@dataclass(frozen=True)
class RemoteFile:
    """One file to download: where from (in order), its pinned checksum, what to do with it."""

    name: str
    urls: tuple[str, ...]
    md5: str
    size: int | None = None  # exact bytes where published: the progress total, and a bound
    most: int | None = None  # where the exact size is not published: at most this many bytes
    unpacked: int | None = None  # at most this many bytes once unpacked (tens of % above it)
    extract: bool = True  # an archive to unpack; else the file is kept as it is
    strip: str = ""  # a leading folder of the archive's members dropped when unpacking

    @property
    def limit(self) -> int | None:
        """No download of this file may be longer: a longer one is not this file."""
        return self.size or self.most


@dataclass(frozen=True)
class Source:
    """A dataset triggerlab can fetch, or one it can only describe (``files`` empty)."""

    name: str
    files: tuple[RemoteFile, ...]
    required: tuple[str, ...]  # paths under the root that a complete copy has (what a fetch makes)
    licence: str = ""
    manual: str = ""  # where to request it and what to place where, when it cannot be fetched
    alternative: tuple[str, ...] = ()  # another complete layout (a raw or preprocessed release)
    places: Callable[[str], tuple[str, ...]] | None = None  # paths that serve for a required one
    where: str = ""  # where ``places`` looks, for messages

    @property
    def fetchable(self) -> bool:
        return bool(self.files)

    def missing(self, root: Path) -> list[str]:
        """What a complete copy lacks under ``root`` (nothing when either layout is whole)."""
        lacking = [path for path in self.required if not self._has(root, path)]
        if lacking and self.alternative:
            other = [path for path in self.alternative if not (root / path).exists()]
            return lacking if len(lacking) <= len(other) else other
        return lacking

    def _has(self, root: Path, path: str) -> bool:
        places = self.places(path) if self.places else (path,)
        return any((root / place).exists() for place in places)

    def lacking(self, root: Path) -> str:
        """What a copy under ``root`` lacks, in words (empty when it is complete)."""
        missing = self.missing(root)
        if not missing:
            return ""
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        return f"{root} lacks {shown}" + (f" ({self.where})" if self.where else "")


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_MNIST = (
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4_542),
)
_GTSRB = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
_CIFAR10_BATCHES = tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))

SOURCES: dict[str, Source] = {
    "mnist": Source(
        "mnist",
        tuple(
            RemoteFile(name, tuple(m + name for m in _MNIST_MIRRORS), md5, size, extract=False)
            for name, md5, size in _MNIST
        ),
        tuple(name.removesuffix(".gz") for name, _, _ in _MNIST),
        licence="CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
        places=idx_places,
        where=f"each gzipped or not, in the root or its {', '.join(IDX_FOLDERS[1:])} folder",
    ),
    "cifar10": Source(
        "cifar10",
        (
            RemoteFile(
                "cifar-10-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                "c58f30108f718f92721af3b95e74349a",
                170_498_071,
                unpacked=200_000_000,  # six pickles of about 31 MB each
            ),
        ),
        (*_CIFAR10_BATCHES, "cifar-10-batches-py/test_batch", "cifar-10-batches-py/batches.meta"),
    ),
    "cifar100": Source(
        "cifar100",
        (
            RemoteFile(
                "cifar-100-python.tar.gz",
                ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                "eb9058c3a382ffc7106e4002c42a8d85",
                most=175_000_000,  # published as 161 MB
                unpacked=200_000_000,  # two pickles of about 155 and 31 MB
            ),
        ),
        ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"),
    ),
    "gtsrb": Source(
        "gtsrb",
        (
            RemoteFile(
                "GTSRB_Final_Training_Images.zip",
                (_GTSRB + "GTSRB_Final_Training_Images.zip",),
                "f33fd80ac59bff73c82d25ab499e03a3",
                most=300_000_000,  # about 263 MB
                unpacked=450_000_000,  # 39,209 PPM images of about 50x50 pixels: some 300 MB
                strip="GTSRB/",
            ),
            RemoteFile(
                "GTSRB_Final_Test_Images.zip",
                (_GTSRB + "GTSRB_Final_Test_Images.zip",),
                "c7e4e6327067d32654124b0fe9e82185",
                most=100_000_000,  # about 84 MB
                unpacked=150_000_000,  # 12,630 PPM images: some 100 MB
                strip="GTSRB/",
            ),
            RemoteFile(
                "GTSRB_Final_Test_GT.zip",
                (_GTSRB + "GTSRB_Final_Test_GT.zip",),
                "fe31e9c9270bbcd7b84b7f21a9d9d9e5",
                most=1_000_000,  # about 99 kB
                unpacked=2_000_000,  # one CSV of 12,630 lines
            ),
        ),
        ("Final_Training/Images", "Final_Test/Images", "GT-final_test.csv"),
        alternative=("Final_Training/Images", "Final_Test/Images/GT-final_test.csv"),
    ),
    "tinyimagenet": Source(
        "tinyimagenet",
        (
            RemoteFile(
                "tiny-imagenet-200.zip",
                ("http://cs231n.stanford.edu/tiny-imagenet-200.zip",),
                "90528d7ca1a48142e341f4ef8d21d0de",
                248_100_043,
                unpacked=400_000_000,  # 120,000 JPEGs (stored as they are) and text files
            ),
        ),
        (
            "tiny-imagenet-200/wnids.txt",
            "tiny-imagenet-200/train",
            "tiny-imagenet-200/val/val_annotations.txt",
        ),
    ),
    "mpiifacegaze": Source(
        "mpiifacegaze",
        (),
        tuple(f"p{i:02d}.mat" for i in range(15)),
        alternative=tuple(f"p{i:02d}/p{i:02d}.txt" for i in range(15)),
        licence="for non-commercial research, after accepting the terms",
        manual=(
            "MPIIFaceGaze is distributed by the Max Planck Institute for Informatics after you "
            "accept its terms: request it at "
            "https://www.mpi-inf.mpg.de/departments/computer-vision-and-machine-learning/"
            "research/gaze-based-human-computer-interaction/"
            "its-written-all-over-your-face-full-face-appearance-based-gaze-estimation, "
            "then place the normalized release's p00.mat ... p14.mat directly in the root "
            "folder (or the raw release's p00/ ... p14/ folders)"
        ),
    ),
    "biwi": Source(
        "biwi",
        (),
        tuple(f"hpdb/{i:02d}" for i in range(1, 25)),
        alternative=("BIWI_train.npz", "BIWI_test.npz"),
        licence="for research, after registering",
        manual=(
            "Biwi Kinect Head Pose is distributed by ETH Zurich's Computer Vision Lab after "
            "registration: request it from the Biwi Kinect Head Pose Database page "
            "(https://data.vision.ee.ethz.ch/cvl/gfanelli/head_pose/head_forest.html), "
            "then place the hpdb/01 ... hpdb/24 folders (frame_XXXXX_rgb.png and "
            "frame_XXXXX_pose.txt) under the root folder, or the preprocessed BIWI_train.npz "
            "and BIWI_test.npz in it"
        ),
    ),
}


def source(name: str) -> Source:
    from triggerlab.errors import ArgumentError

    if name not in SOURCES:
        known = ", ".join(SOURCES)
        raise ArgumentError("name", f"not a dataset to fetch (expected one of {known})", name)
    return SOURCES[name]
