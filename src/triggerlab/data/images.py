"""Decoding image files (PNG, JPEG, PPM, BMP) into one uint8 tensor, in parallel threads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from triggerlab.data.memory import check_fits
from triggerlab.errors import DataFormatError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")

Box = tuple[int, int, int, int]  # left, upper, right, lower (PIL crop box)


def _decode(path: Path, size: tuple[int, int] | None, box: Box | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if box is not None:
                rgb = rgb.crop(box)
            if size is not None and rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise DataFormatError(
            f"{path}: declares more pixels than an image may have here ({exc})"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataFormatError(f"{path}: cannot decode image ({exc})") from None


def read_images(
    paths: Sequence[Path],
    size: tuple[int, int] | None = None,
    boxes: Sequence[Box] | None = None,
) -> torch.Tensor:
    """RGB uint8 ``[N, 3, H, W]`` from image files; greyscale files become RGB.

    ``size`` (H, W) resizes each image bilinearly (PIL antialiases when shrinking);
    without it every image must already have the same size. ``boxes`` crops first.
    """
    if not paths:
        return torch.empty((0, 3, *(size or (0, 0))), dtype=torch.uint8)
    if size is not None:
        check_fits(len(paths), 3, *size, "data.resize")
    crop = boxes if boxes is not None else [None] * len(paths)
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(
            pool.map(lambda args: _decode(args[0], size, args[1]), zip(paths, crop, strict=True))
        )
    odd = next((i for i, a in enumerate(arrays) if a.shape != arrays[0].shape), None)
    if odd is not None:
        (h, w, _), (h0, w0, _) = arrays[odd].shape, arrays[0].shape
        raise DataFormatError(
            f"{paths[odd]} is {h}x{w} but {paths[0]} is {h0}x{w0}: images differ in size; "
            "set data.resize to bring them to one size"
        )
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
