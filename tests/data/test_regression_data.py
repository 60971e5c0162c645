"""MPIIFaceGaze and Biwi loaders on fixture files in the real formats; subject-wise protocols."""

import math

import h5py
import numpy as np
import pytest
import torch
from support.formats import write_image

from triggerlab.data.biwi import angles_from_rotation, load_npz, load_raw, read_pose
from triggerlab.data.dataset import ImageDataset
from triggerlab.data.gaze import angular_error
from triggerlab.data.mpiifacegaze import gaze_from_vectors, load_mpiifacegaze
from triggerlab.data.protocols import finetune_split, leave_one_subject_out, subject_split
from triggerlab.errors import ConfigError, DataFormatError

# ---- MPIIFaceGaze -------------------------------------------------------------------------------


def write_mat(path, n=6, side=16, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3, side, side), dtype=np.uint8)
    label = rng.normal(size=(n, 16)).astype(np.float32)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("Data/data", data=data)
        handle.create_dataset("Data/label", data=label)
    return data, label


def test_normalized_release_bgr_to_rgb_labels_and_subjects(tmp_path):
    a, label_a = write_mat(tmp_path / "p00.mat")
    write_mat(tmp_path / "p03.mat", n=4, seed=1)
    data = load_mpiifacegaze(tmp_path, size=(16, 16))
    assert data.images.shape == (10, 3, 16, 16)
    assert torch.equal(
        data.images[0, 0], torch.from_numpy(a[0, 2])
    )  # red plane = stored plane 2 (BGR)
    assert torch.allclose(data.targets[:6], torch.from_numpy(label_a[:, :2]))
    assert data.groups.tolist() == [0] * 6 + [3] * 4
    assert data.labels.kind.label_unit == "radians" and data.labels.names == ("pitch", "yaw")
    assert load_mpiifacegaze(tmp_path, size=(8, 8)).images.shape == (10, 3, 8, 8)


def test_normalized_release_errors(tmp_path):
    write_mat(tmp_path / "p00.mat")
    with pytest.raises(DataFormatError, match="set data.resize"):
        load_mpiifacegaze(tmp_path)
    (tmp_path / "p01.mat").write_bytes(b"MATLAB 7.3 but not really HDF5")
    with pytest.raises(DataFormatError, match="p01.mat: not a readable MPIIFaceGaze file"):
        load_mpiifacegaze(tmp_path, size=(8, 8))
    (tmp_path / "p01.mat").unlink()
    with h5py.File(tmp_path / "p02.mat", "w") as handle:
        handle.create_dataset("Data/data", data=np.zeros((2, 3, 4, 4), np.uint8))
        handle.create_dataset("Data/label", data=np.zeros((3, 4), np.float32))
    with pytest.raises(DataFormatError, match="2 images but 3 labels"):
        load_mpiifacegaze(tmp_path, size=(8, 8))
    (tmp_path / "p02.mat").unlink()
    _, label = write_mat(tmp_path / "p04.mat")
    label[3, 1] = np.nan
    with h5py.File(tmp_path / "p04.mat", "r+") as handle:
        handle["Data/label"][...] = label
    with pytest.raises(DataFormatError, match=r"p04.mat: Data/label holds 1 gaze label\(s\) that "):
        load_mpiifacegaze(tmp_path, size=(8, 8))


def raw_line(name, fc, gt):
    tokens = [
        name,
        "10",
        "20",
        *["1"] * 12,
        "0.1",
        "0.2",
        "0.3",
        "0",
        "0",
        "600",
        *map(str, fc),
        *map(str, gt),
        "left",
    ]
    return " ".join(tokens)


def test_raw_release_gaze_from_target_minus_face_centre(tmp_path):
    folder = tmp_path / "p05"
    write_image(folder / "day01" / "0001.jpg", np.full((20, 30, 3), 100, np.uint8))
    write_image(folder / "day01" / "0002.jpg", np.full((24, 24, 3), 200, np.uint8))
    lines = [
        raw_line("day01/0001.jpg", (0, 0, 500), (0, 0, 0)),
        raw_line("day01/0002.jpg", (0, 0, 500), (-100, 0, 400)),
    ]
    (folder / "p05.txt").write_text("\n".join(lines) + "\n")
    data = load_mpiifacegaze(tmp_path, size=(12, 12))
    assert data.images.shape == (2, 3, 12, 12) and data.groups.tolist() == [5, 5]
    assert torch.allclose(data.targets[0], torch.zeros(2), atol=1e-6)  # looking into the camera
    assert data.targets[1, 1].item() == pytest.approx(
        math.pi / 4
    )  # g = (-100, 0, -100): yaw 45 degrees
    lines[1] = raw_line("day01/0002.jpg", (0, 0, 500), (-100, "nan", 400))
    (folder / "p05.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match="p05.txt:2: the face centre and gaze target"):
        load_mpiifacegaze(tmp_path, size=(12, 12))
    (folder / "p05.txt").write_text("day01/0001.jpg 1 2 3\n")
    with pytest.raises(DataFormatError, match="p05.txt:1: expected 28 tokens, found 4"):
        load_mpiifacegaze(tmp_path, size=(12, 12))


def test_gaze_vector_conversion_and_angular_error():
    pitch_yaw = gaze_from_vectors(np.array([[0.0, -1.0, -1.0], [1.0, 0.0, 0.0]]))
    assert pitch_yaw[0] == pytest.approx([math.pi / 4, 0.0])  # up is -y
    assert pitch_yaw[1, 1] == pytest.approx(-math.pi / 2)
    a = torch.tensor([[0.0, 0.0], [0.2, 0.1], [0.0, 0.0]])
    b = torch.tensor([[0.0, math.pi / 2], [0.2, 0.1], [math.pi / 4, 0.0]])
    assert angular_error(a, b).tolist() == pytest.approx([90.0, 0.0, 45.0], abs=1e-3)


# ---- Biwi --------------------------------------------------------------------------------------


def rotation_rows(yaw, pitch, roll):
    """Rows of a pose file for known angles (degrees), inverting the documented formulas."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    rz = np.array([[math.cos(-r), -math.sin(-r), 0], [math.sin(-r), math.cos(-r), 0], [0, 0, 1]])
    ry = np.array([[math.cos(-y), 0, math.sin(-y)], [0, 1, 0], [-math.sin(-y), 0, math.cos(-y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    return (rz @ ry @ rx).T  # the file stores R transposed


def write_pose(path, yaw, pitch, roll):
    rows = rotation_rows(yaw, pitch, roll)
    text = "\n".join(" ".join(f"{v:.9f}" for v in row) for row in rows) + "\n\n10.0 20.0 900.0\n"
    path.write_text(text)


def test_rotation_angles_round_trip():
    assert angles_from_rotation(rotation_rows(30, -20, 10)) == pytest.approx(
        (30, -20, 10), abs=1e-6
    )


def test_biwi_raw_sequences_keep_the_person(tmp_path):
    for sequence, angles in (("01", (10, 5, 0)), ("15", (-20, 0, 15))):
        folder = tmp_path / "hpdb" / sequence
        write_image(folder / "frame_00003_rgb.png", np.full((30, 40, 3), 90, np.uint8))
        write_pose(folder / "frame_00003_pose.txt", *angles)
    data = load_raw(tmp_path, size=(16, 16))
    assert data.images.shape == (2, 3, 16, 16)
    assert data.groups.tolist() == [1, 3]  # sequence 15 is person 3 again
    assert data.targets.tolist() == [
        pytest.approx([10, 5, 0], abs=1e-4),
        pytest.approx([-20, 0, 15], abs=1e-4),
    ]


def test_biwi_raw_errors(tmp_path):
    folder = tmp_path / "hpdb" / "02"
    write_image(folder / "frame_00001_rgb.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataFormatError, match="missing pose file"):
        load_raw(tmp_path, size=(8, 8))
    (folder / "frame_00001_pose.txt").write_text("1 0 0\n0 1\n")
    with pytest.raises(DataFormatError, match="frame_00001_pose.txt: not a Biwi pose file"):
        read_pose(folder / "frame_00001_pose.txt")


def test_biwi_npz_bgr_and_errors(tmp_path):
    images = np.zeros((3, 64, 64, 3), np.uint8)
    images[..., 0] = 200  # blue in BGR
    pose = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.float32)
    np.savez(tmp_path / "BIWI_train.npz", image=images, pose=pose)
    data = load_npz(tmp_path / "BIWI_train.npz")
    assert data.images[0, 2, 0, 0].item() == 200 and data.images[0, 0, 0, 0].item() == 0
    assert data.targets[1].tolist() == [4, 5, 6] and data.groups is None
    np.savez(tmp_path / "bad.npz", image=images, pose=pose[:2])
    with pytest.raises(DataFormatError, match="'pose' must be"):
        load_npz(tmp_path / "bad.npz")
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataFormatError, match="broken.npz: not a Biwi npz"):
        load_npz(tmp_path / "broken.npz")


# ---- protocols ---------------------------------------------------------------------------------


def people(subjects=4, per=10):
    groups = torch.arange(subjects).repeat_interleave(per)
    n = subjects * per
    return ImageDataset(
        torch.zeros(n, 3, 2, 2, dtype=torch.uint8), torch.zeros(n, 2), groups=groups
    )


def test_subject_split_never_shares_a_subject():
    train, test = subject_split(people(), 0.25, torch.Generator().manual_seed(0))
    assert len(test) == 10 and len(train) == 30
    assert not set(train.groups.tolist()) & set(test.groups.tolist())
    train, test = subject_split(people(), test_subjects=[1, 2])
    assert set(test.groups.tolist()) == {1, 2}
    with pytest.raises(ConfigError, match=r"test subjects \[9\] do not exist"):
        subject_split(people(), test_subjects=[9])


def test_leave_one_subject_out_and_reference_000_split():
    folds = list(leave_one_subject_out(people()))
    assert [s for s, _, _ in folds] == [0, 1, 2, 3]
    assert all(len(tr) == 30 and set(te.groups.tolist()) == {s} for s, tr, te in folds)
    pre, fine, test = finetune_split(people(per=30), held_out=2, finetune_count=10)
    assert 2 not in pre.groups.tolist() and len(pre) == 90
    assert set(fine.groups.tolist()) == {2} and len(fine) == 10 and len(test) == 20
    with pytest.raises(ConfigError, match="fine-tune count 30 must be between 1 and 29"):
        finetune_split(people(per=30), held_out=2, finetune_count=30)


def test_protocols_need_subjects():
    data = ImageDataset(
        torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4, 3), metadata={"source": "x.npz"}
    )
    with pytest.raises(
        ConfigError, match="protocol 'leave-one-subject-out' needs subject ids, and x.npz has none"
    ):
        list(leave_one_subject_out(data))
