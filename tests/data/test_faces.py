"""The procedural face renderer: determinism, labels consistent with the pixels, subjects."""

import math
import time

import pytest
import torch

from triggerlab.data.faces import (
    HAIR,
    NOSE,
    PUPIL,
    SCLERA,
    Subjects,
    head_rotation,
    render,
    trace,
)
from triggerlab.data.gaze import angles, direction
from triggerlab.data.synthetic import synthetic_faces
from triggerlab.errors import ConfigError
from triggerlab.progress import reporting

DEG = math.pi / 180


PEOPLE = Subjects.draw(3, torch.Generator().manual_seed(1))


def one(pose=(0.0, 0.0, 0.0), gaze=(0.0, 0.0), subject=0, size=64, seed=0, noise=0.0):
    p, g = torch.tensor([pose]) * DEG, torch.tensor([gaze]) * DEG
    return render(
        torch.tensor([subject]),
        p,
        g,
        PEOPLE,
        (size, size),
        torch.Generator().manual_seed(seed),
        noise,
    )[0]


def materials(pose=(0.0, 0.0, 0.0), gaze=(0.0, 0.0), size=64):
    p, g = torch.tensor([pose]) * DEG, torch.tensor([gaze]) * DEG
    return trace(torch.tensor([0]), p, g, PEOPLE, (size, size))[0][0].view(size, size)


def centroid(material_map: torch.Tensor, material: int) -> tuple[float, float]:
    where = (material_map == material).nonzero().float()
    assert len(where), f"no pixel of material {material}"
    return float(where[:, 0].mean()), float(where[:, 1].mean())


def test_pitch_yaw_vector_round_trip():
    pitch = torch.tensor([0.0, 0.3, -0.5, 1.2])
    yaw = torch.tensor([0.0, -0.7, 0.4, 2.5])
    v = direction(pitch, yaw)
    assert torch.allclose(v.norm(dim=-1), torch.ones(4))
    assert torch.allclose(
        direction(torch.tensor(0.0), torch.tensor(0.0)), torch.tensor([0.0, 0.0, -1.0])
    )
    back_pitch, back_yaw = angles(v)
    assert torch.allclose(back_pitch, pitch, atol=1e-6) and torch.allclose(back_yaw, yaw, atol=1e-6)


def test_head_rotation_faces_its_pose_direction():
    yaw, pitch, roll = torch.tensor([0.4]), torch.tensor([-0.2]), torch.tensor([0.3])
    facing = head_rotation(yaw, pitch, roll) @ torch.tensor([0.0, 0.0, -1.0])
    assert torch.allclose(facing, direction(pitch, yaw), atol=1e-6)
    assert torch.allclose(head_rotation(*(torch.zeros(1),) * 3), torch.eye(3))


def test_rendering_is_deterministic_and_noise_is_seeded():
    assert torch.equal(one(seed=3, noise=0.02), one(seed=3, noise=0.02))
    assert not torch.equal(one(seed=3, noise=0.02), one(seed=4, noise=0.02))


def test_zero_pose_is_frontal_and_symmetric():
    frontal = materials()
    assert (frontal == frontal.flip(1)).float().mean() > 0.995  # mirror image of itself
    row, col = centroid(frontal, NOSE)
    assert abs(col - 31.5) < 0.5 and row > 31.5  # the nose is centred, below the middle
    assert (materials(pose=(20, 0, 0)) != materials(pose=(20, 0, 0)).flip(1)).any()


def test_gaze_yaw_moves_the_pupils_sideways_and_pitch_up():
    row, col = centroid(materials(), PUPIL)
    _, left = centroid(materials(gaze=(0, 25)), PUPIL)
    _, right = centroid(materials(gaze=(0, -25)), PUPIL)
    assert left < col - 1 and right > col + 1  # positive yaw looks towards the image's left
    up, _ = centroid(materials(gaze=(25, 0)), PUPIL)
    assert up < row - 1  # positive pitch looks up
    assert torch.equal(materials(gaze=(0, 25)) == HAIR, materials() == HAIR)  # only the eyes move


def test_head_pose_turns_and_tilts_the_face():
    _, centre = centroid(materials(), NOSE)
    _, turned = centroid(materials(pose=(30, 0, 0)), NOSE)
    assert turned < centre - 3  # positive yaw turns the face towards the image's left
    row, _ = centroid(materials(), NOSE)
    up, _ = centroid(materials(pose=(0, 25, 0)), NOSE)
    assert up < row - 1
    rolled = materials(pose=(0, 0, 30))
    assert (rolled != rolled.flip(1)).float().mean() > 0.02


def test_rendered_pixels_follow_the_materials():
    image, mats = one(noise=0.0), materials()
    pupils = image.float().sum(0)[mats == PUPIL]
    assert pupils.max() < 3 * 0.05 * 255  # near black
    assert image.float().sum(0)[mats == SCLERA].mean() > 3 * 0.5 * 255


def test_subjects_differ_in_appearance():
    a, b = one(subject=0), one(subject=1)
    assert (a.float() - b.float()).abs().mean() > 10


def test_synthetic_dataset_labels_and_subjects():
    gaze = synthetic_faces("gaze", count=40, subjects=4, resolution=32, seed=2)
    assert gaze.images.shape == (40, 3, 32, 32) and gaze.targets.shape == (40, 2)
    assert gaze.labels.kind.label_unit == "radians" and gaze.labels.names == ("pitch", "yaw")
    assert torch.equal(torch.bincount(gaze.groups), torch.full((4,), 10))
    assert gaze.targets.abs().max() < (20 + 25) * DEG + 1e-6  # head yaw 20 + gaze offset 25
    pose = synthetic_faces("headpose", count=40, subjects=4, resolution=32, seed=2)
    assert pose.targets.shape == (40, 3) and pose.labels.kind.label_unit == "degrees"
    assert torch.equal(pose.images, gaze.images)  # same renderer and seed, different labels
    assert pose.targets[:, 0].abs().max() <= 20 + 1e-4
    with pytest.raises(ConfigError, match="labels must be"):
        synthetic_faces("age")


def test_faces_render_fast_enough_for_ten_thousand_in_seconds():
    """Measured: 10,000 faces of 64x64 take about 14 s on one thread (benchmarks/faces.py).
    Timed in this process's CPU seconds, which other work on the machine does not inflate."""
    start = time.process_time()
    data = synthetic_faces("gaze", count=1000, resolution=64)
    elapsed = time.process_time() - start
    assert data.images.shape == (1000, 3, 64, 64)
    assert elapsed < 5.0, f"1,000 faces took {elapsed:.1f} CPU s (about 1.3 s expected)"


def test_rendering_reports_progress_to_the_reporter_of_the_call():
    updates = []
    with reporting(updates.append):
        synthetic_faces("gaze", 600, 3, 16, 20, 15, 5, 25, 0)
    assert [(u.stage, u.done, u.total) for u in updates] == [
        ("rendering faces", 256, 600),
        ("rendering faces", 512, 600),
        ("rendering faces", 600, 600),
    ]
    assert updates[-1].milestone and "rendered 600 synthetic faces at 16 px in" in updates[-1].note
    synthetic_faces("gaze", 20, 2, 16, 20, 15, 5, 25, 0)  # outside the block: nobody to tell
    assert len(updates) == 3
