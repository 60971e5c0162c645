"""Gaze and head directions: (pitch, yaw) <-> 3-D unit vectors, and the angle between two.

MPIIFaceGaze's camera convention: x to the image's right, y down, z away from
the camera; ``v = (-cos p sin y, -sin p, -cos p cos y)``, so (0, 0) looks
straight into the camera, positive pitch looks up and positive yaw towards the
image's left. Back: ``pitch = asin(-v_y)``, ``yaw = atan2(-v_x, -v_z)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def direction(pitch: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Unit vectors ``[..., 3]`` of (pitch, yaw) in radians."""
    return torch.stack(
        (-torch.cos(pitch) * torch.sin(yaw), -torch.sin(pitch), -torch.cos(pitch) * torch.cos(yaw)),
        dim=-1,
    )


def angles(vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pitch, yaw) in radians of vectors ``[..., 3]`` of any length; inverts ``direction``."""
    v = F.normalize(vector, dim=-1)
    return torch.asin((-v[..., 1]).clamp(-1, 1)), torch.atan2(-v[..., 0], -v[..., 2])


def angular_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Degrees between the directions of (pitch, yaw) rows ``[N, 2]``; cosine clipped to [-1, 1]."""
    a, b = a.double(), b.double()
    cosine = (direction(a[:, 0], a[:, 1]) * direction(b[:, 0], b[:, 1])).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cosine))
