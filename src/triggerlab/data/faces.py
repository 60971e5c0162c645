"""Procedural 3-D faces with exact gaze and head-pose labels, rendered in torch.

The real gaze and head-pose datasets cannot be downloaded here, so triggerlab
renders its own: an orthographic camera looks at a head made of analytic
shapes (an ellipsoid skull, a nose, two ears, two eyeballs), intersected per
pixel, all images of a chunk at once.

Coordinates are the camera's, as in MPIIFaceGaze: x to the image's right, y
down, z away from the camera. A direction with pitch p and yaw y is
``v = (-cos p sin y, -sin p, -cos p cos y)``; (0, 0) looks straight into the
camera, positive pitch looks up, positive yaw towards the image's left.

* The head's facing direction is ``v(pitch, yaw)`` of its pose, and roll turns
  it about that axis: ``R = Ry(yaw) Rx(-pitch) Rz(roll)`` maps head to camera
  coordinates. Head pose labels are (yaw, pitch, roll) in degrees.
* Each eyeball looks along the gaze direction (camera coordinates): a surface
  point is iris where its direction from the eye centre is within 40 degrees
  of the gaze, pupil within 20. Gaze labels are (pitch, yaw) in radians.
* Appearance (skin, hair, iris, lips and background colours, head shape, eye
  spacing, hairline) belongs to a subject; light, background pattern and
  sensor noise change per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from triggerlab.data.gaze import direction

EYE_RADIUS = 0.2  # cartoon-sized eyes: the gaze must stay visible at 48-64 pixels
IRIS_COS = math.cos(math.radians(40))
PUPIL_COS = math.cos(math.radians(20))
VIEW_WIDTH = 2.9  # scene units across the image: the head (height 2) fills about 70 %
Z0 = -5.0  # where the orthographic rays start, in front of the face

# material ids
BACKGROUND, SKIN, HAIR, BROW, LIPS, SCLERA, IRIS, PUPIL, NOSE = range(9)


def head_rotation(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` head-to-camera rotations from (yaw, pitch, roll) in radians."""
    one, zero = torch.ones_like(yaw), torch.zeros_like(yaw)

    def matrix(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)

    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cx, sx = torch.cos(-pitch), torch.sin(-pitch)
    cz, sz = torch.cos(roll), torch.sin(roll)
    ry = matrix([[cy, zero, sy], [zero, one, zero], [-sy, zero, cy]])
    rx = matrix([[one, zero, zero], [zero, cx, -sx], [zero, sx, cx]])
    rz = matrix([[cz, -sz, zero], [sz, cz, zero], [zero, zero, one]])
    return ry @ rx @ rz


@dataclass(frozen=True)
class Subjects:
    """Appearance of each subject: tensors with a leading subject dimension."""

    skin: torch.Tensor  # [S, 3] RGB in [0, 1]
    hair: torch.Tensor
    iris: torch.Tensor
    lips: torch.Tensor
    background: torch.Tensor
    radii: torch.Tensor  # [S, 3] skull half-axes (x, y, z)
    eye_spacing: torch.Tensor  # [S]
    hairline: torch.Tensor  # [S]

    @staticmethod
    def draw(count: int, generator: torch.Generator) -> Subjects:
        def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            return low + (high - low) * torch.rand(*shape, generator=generator)

        tone = uniform(count, 1)
        skin = (
            torch.tensor([0.95, 0.80, 0.68]) * (1 - tone) + torch.tensor([0.42, 0.27, 0.17]) * tone
        )
        hair_dark = uniform(count, 1, low=0.05, high=0.9)
        hair = torch.cat(
            [hair_dark, hair_dark * uniform(count, 1, low=0.6, high=0.9), hair_dark * 0.5], dim=1
        )
        iris = torch.stack(
            [
                torch.tensor(c)
                for c in ([0.35, 0.22, 0.1], [0.2, 0.4, 0.65], [0.3, 0.45, 0.25], [0.15, 0.1, 0.08])
            ]
        )[torch.randint(4, (count,), generator=generator)] * uniform(count, 1, low=0.8, high=1.2)
        lips = skin * torch.tensor([0.85, 0.55, 0.55])
        radii = torch.stack(
            [
                uniform(count, low=0.68, high=0.8),
                uniform(count, low=0.95, high=1.05),
                uniform(count, low=0.8, high=0.9),
            ],
            dim=1,
        )
        return Subjects(
            skin=skin,
            hair=hair.clamp(0, 1),
            iris=iris.clamp(0, 1),
            lips=lips,
            background=uniform(count, 3, low=0.1, high=0.9),
            radii=radii,
            eye_spacing=uniform(count, low=0.26, high=0.34),
            hairline=uniform(count, low=-0.7, high=-0.5),
        )


def _smooth_noise(
    batch: int, size: tuple[int, int], cells: int, generator: torch.Generator
) -> torch.Tensor:
    """Low-frequency noise ``[B, 1, H, W]`` in [0, 1]: a random grid upsampled bicubically."""
    grid = torch.rand(batch, 1, cells, cells, generator=generator)
    return F.interpolate(grid, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def _parts(
    subject: torch.Tensor, subjects: Subjects
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Centres and half-axes ``[B, K, 3]`` (head coordinates) of the K ellipsoids of each head."""
    batch = subject.shape[0]
    radii = subjects.radii[subject]
    spacing = subjects.eye_spacing[subject]
    zero = torch.zeros(batch)
    eye = torch.full((batch, 3), EYE_RADIUS)
    shapes = {
        "skull": (torch.stack([zero, zero, zero], 1), radii),
        "nose": (
            torch.stack([zero, zero + 0.12, -radii[:, 2] * 0.93], 1),
            torch.tensor([0.11, 0.2, 0.16]).expand(batch, 3),
        ),
        "ear_l": (
            torch.stack([-radii[:, 0] * 0.97, zero + 0.05, zero + 0.05], 1),
            torch.tensor([0.07, 0.2, 0.12]).expand(batch, 3),
        ),
        "ear_r": (
            torch.stack([radii[:, 0] * 0.97, zero + 0.05, zero + 0.05], 1),
            torch.tensor([0.07, 0.2, 0.12]).expand(batch, 3),
        ),
        "eye_l": (torch.stack([-spacing, zero - 0.18, -radii[:, 2] * 0.86], 1), eye),
        "eye_r": (torch.stack([spacing, zero - 0.18, -radii[:, 2] * 0.86], 1), eye),
    }
    centres = torch.stack([c for c, _ in shapes.values()], dim=1)
    half_axes = torch.stack([r for _, r in shapes.values()], dim=1)
    return centres, half_axes, list(shapes)


def _intersect(
    x: torch.Tensor,
    y: torch.Tensor,
    to_head: torch.Tensor,
    centres: torch.Tensor,
    axes: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance ``[B, P]`` along each orthographic ray (from z = Z0) to the nearest ellipsoid,
    and that ellipsoid's index; rays that miss get an infinite distance.

    For each image and ellipsoid the ray-surface quadratic ``a t^2 + b t + c = 0``
    has ``a`` constant, ``b`` linear and ``c`` quadratic in the pixel coordinates
    (x, y): their coefficients are computed once per ellipsoid.
    """
    scaled = to_head[:, None, :, :] / axes[..., None]  # D M: [B, K, 3, 3]
    u, v = scaled[..., 0], scaled[..., 1]  # coefficients of x and y in o' = u x + v y + w
    w = scaled[..., 2] * Z0 - centres / axes
    d = scaled[..., 2]  # the ray direction (camera z) in scaled coordinates
    a = (d * d).sum(-1)[..., None]  # [B, K, 1]

    def dot(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return (p * q).sum(-1)[..., None]

    b = 2 * (dot(d, u) * x + dot(d, v) * y + dot(d, w))
    c = dot(u, u) * x * x + dot(v, v) * y * y + 2 * dot(u, v) * x * y
    c = c + 2 * dot(u, w) * x + 2 * dot(v, w) * y + dot(w, w) - 1
    disc = b * b - 4 * a * c
    t = (-b - torch.sqrt(disc.clamp_min(0))) / (2 * a)
    t = torch.where(disc >= 0, t, torch.full_like(t, math.inf))  # [B, K, P]
    return t.min(dim=1)


def _paint(
    point: torch.Tensor,
    centre: torch.Tensor,
    hit: torch.Tensor,
    nearest: torch.Tensor,
    names: list[str],
    subject: torch.Tensor,
    subjects: Subjects,
    gaze_head: torch.Tensor,
) -> torch.Tensor:
    """Material ids ``[B, P]`` of the hit points (head coordinates): skin, hair, brows, lips,
    nose, and eyes whose iris and pupil face the gaze direction."""
    material = torch.where(hit, SKIN, BACKGROUND)
    px, py, pz = point.unbind(-1)
    skull = hit & (nearest == names.index("skull"))
    spacing = subjects.eye_spacing[subject][:, None]
    hairline = subjects.hairline[subject][:, None]
    front = pz < -0.3
    material = torch.where(
        skull & ((py < hairline + 0.55 * pz.clamp_min(0)) | (pz > 0.35)), HAIR, material
    )
    brow = skull & front & (((px.abs() - spacing).abs() < 0.15) & (py > -0.5) & (py < -0.43))
    material = torch.where(brow, BROW, material)
    lips = skull & front & (px.abs() < 0.22 - 1.5 * (py - 0.52).abs()) & (py > 0.45) & (py < 0.6)
    material = torch.where(lips, LIPS, material)
    material = torch.where(hit & (nearest == names.index("nose")), NOSE, material)
    on_eye = hit & ((nearest == names.index("eye_l")) | (nearest == names.index("eye_r")))
    cosine = (F.normalize(point - centre, dim=-1) * gaze_head[:, None, :]).sum(-1)
    eye_material = torch.where(
        cosine > PUPIL_COS, PUPIL, torch.where(cosine > IRIS_COS, IRIS, SCLERA)
    )
    return torch.where(on_eye, eye_material, material)


def trace(
    subject: torch.Tensor,
    head_pose: torch.Tensor,
    gaze: torch.Tensor,
    subjects: Subjects,
    size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Material ids ``[B, P]``, unit normals ``[B, P, 3]`` and head rotations ``[B, 3, 3]``.

    Rays are orthographic; only the nearest hit of each becomes a 3-D point.
    """
    height, width = size
    scale = VIEW_WIDTH / min(height, width)
    rows = (torch.arange(height) + 0.5 - height / 2) * scale
    cols = (torch.arange(width) + 0.5 - width / 2) * scale
    ys, xs = torch.meshgrid(rows, cols, indexing="ij")
    x, y = xs.flatten(), ys.flatten()  # [P]
    rotation = head_rotation(head_pose[:, 0], head_pose[:, 1], head_pose[:, 2])  # head -> camera
    to_head = rotation.transpose(1, 2)  # camera -> head
    centres, half_axes, names = _parts(subject, subjects)
    distance, nearest = _intersect(x, y, to_head, centres, half_axes)
    hit = torch.isfinite(distance)
    pixels = torch.stack([x, y, torch.full_like(x, Z0)], dim=-1)  # camera coordinates [P, 3]
    point = (
        pixels @ rotation + distance.clamp(max=100)[..., None] * to_head[:, None, :, 2]
    )  # head coords
    centre = torch.gather(centres, 1, nearest[..., None].expand(-1, -1, 3))
    axes = torch.gather(half_axes, 1, nearest[..., None].expand(-1, -1, 3))
    normal = F.normalize((point - centre) / axes**2, dim=-1)
    gaze_head = (direction(gaze[:, 0], gaze[:, 1])[:, None, :] @ rotation).squeeze(1)
    material = _paint(point, centre, hit, nearest, names, subject, subjects, gaze_head)
    return material, normal, rotation


def render(
    subject: torch.Tensor,
    head_pose: torch.Tensor,
    gaze: torch.Tensor,
    subjects: Subjects,
    size: tuple[int, int],
    generator: torch.Generator,
    noise: float = 0.02,
) -> torch.Tensor:
    """Render faces as uint8 ``[B, 3, H, W]``.

    ``subject``: int ``[B]``; ``head_pose``: (yaw, pitch, roll) in radians ``[B, 3]``;
    ``gaze``: (pitch, yaw) in radians ``[B, 2]``, camera coordinates. The light,
    the background pattern, the skin texture and the sensor noise are drawn
    from ``generator``.
    """
    batch = subject.shape[0]
    height, width = size
    material, normal, rotation = trace(subject, head_pose, gaze, subjects, size)
    skin = subjects.skin[subject]
    palette = torch.stack(
        [
            subjects.background[subject],
            skin,
            subjects.hair[subject],
            subjects.hair[subject] * 0.6,
            subjects.lips[subject],
            torch.full((batch, 3), 0.93),
            subjects.iris[subject],
            torch.full((batch, 3), 0.03),
            skin,
        ],
        dim=1,
    )  # [B, materials, 3]
    colour = torch.gather(palette, 1, material[..., None].expand(-1, -1, 3))
    towards_light = torch.randn(batch, 3, generator=generator) * torch.tensor([0.6, 0.6, 0.3])
    light = F.normalize(
        towards_light + torch.tensor([0.0, -0.3, -1.0]), dim=-1
    )  # camera coordinates
    light_head = (light[:, None, :] @ rotation).squeeze(1)
    ambient = 0.35 + 0.15 * torch.rand(batch, 1, generator=generator)
    lambert = (normal * light_head[:, None, :]).sum(-1).clamp_min(0)
    texture = 1 + 0.06 * (torch.rand(batch, height * width, generator=generator) - 0.5)
    shade = (ambient + (1 - ambient) * lambert) * texture
    backdrop = 0.6 + 0.6 * _smooth_noise(batch, size, 4, generator).flatten(1)
    shade = torch.where(material == BACKGROUND, backdrop, shade)
    image = colour * shade[..., None] + noise * torch.randn(
        batch, height * width, 3, generator=generator
    )
    image = image.clamp(0, 1).transpose(1, 2).reshape(batch, 3, height, width)
    return image.mul(255).round().byte()
