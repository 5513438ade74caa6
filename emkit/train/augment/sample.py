"""What a training sample is, and the small helpers every augmentation uses on it.

A sample is a dict of numpy arrays with spatial axes (z, y, x):

``"image"``     float (0–1) or uint8 (0–255), (z, y, x) — the net's input.
``"labels"``    uint64 segmentation (0 = background).
``"semantic"``  optional uint8 classes.
``"mask"``      optional uint8 valid-voxel mask of the target (0 where the target is unknown).
any other array whose last three axes are the image's (z, y, x) — (z, y, x) or (c, z, y, x) —
is a target too and is moved like the labels (nearest neighbour).

Keys starting with ``"_"`` are metadata and pass through; ``"_applied"`` is the list of
augmentations applied so far (one dict each, ``{"name": ..., ...parameters}``). Targets such as
affinities are meant to be computed *after* augmentation, from the augmented labels.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from emkit.errors import InputError

__all__ = ["check_sample", "array_keys", "target_keys", "per_channel", "record", "crop", "ensure_mask"]


def check_sample(sample) -> tuple[int, int, int]:
    """Validate a sample and return its spatial shape (z, y, x).

    Raises InputError when ``sample`` is not a mapping with a 3-D uint8/float ``"image"``, or when
    an array of it does not end in the image's (z, y, x).
    """
    if not isinstance(sample, Mapping) or "image" not in sample:
        raise InputError(f"a sample must be a dict with an 'image' array, got {type(sample).__name__}"
                         + (f" with keys {sorted(sample)}" if isinstance(sample, Mapping) else ""))
    img = sample["image"]
    if not isinstance(img, np.ndarray) or img.ndim != 3:
        raise InputError(f"sample['image'] must be a (z, y, x) numpy array, got shape {getattr(img, 'shape', None)}")
    if not (img.dtype == np.uint8 or np.issubdtype(img.dtype, np.floating)):
        raise InputError(f"sample['image'] must be uint8 or float, got dtype {img.dtype}")
    shape = img.shape
    for k, v in sample.items():
        if str(k).startswith("_") or not isinstance(v, np.ndarray):
            continue
        if v.ndim not in (3, 4) or v.shape[-3:] != shape:
            raise InputError(f"sample[{k!r}] has shape {v.shape}; expected (z, y, x) = {shape} or (c, *{shape})")
    return shape


def array_keys(sample) -> list[str]:
    """Keys of the spatial arrays (image and targets), in sample order."""
    return [k for k, v in sample.items() if not str(k).startswith("_") and isinstance(v, np.ndarray)]


def target_keys(sample) -> list[str]:
    """Keys of the target arrays: every spatial array but the image."""
    return [k for k in array_keys(sample) if k != "image"]


def per_channel(arr: np.ndarray, func) -> np.ndarray:
    """Apply ``func`` (a (z, y, x) → (z', y', x') function) to a (z, y, x) or (c, z, y, x) array."""
    if arr.ndim == 3:
        return func(arr)
    return np.stack([func(a) for a in arr])


def record(sample: dict, name: str, **info) -> dict:
    """Append ``{"name": name, **info}`` to ``sample["_applied"]`` (a new list; returns sample)."""
    sample["_applied"] = list(sample.get("_applied", [])) + [{"name": name, **info}]
    return sample


def crop(sample, start, size) -> dict:
    """A new sample with every spatial array cut to ``[start, start + size)`` on (z, y, x)."""
    sl = tuple(slice(int(a), int(a) + int(n)) for a, n in zip(start, size))
    out = dict(sample)
    for k in array_keys(sample):
        out[k] = np.ascontiguousarray(sample[k][(Ellipsis, *sl)])
    return out


def ensure_mask(sample) -> np.ndarray:
    """The sample's target mask as uint8 (z, y, x) — ones when it has none (a copy either way)."""
    if "mask" in sample:
        return np.asarray(sample["mask"]).astype(np.uint8, copy=True)
    return np.ones(sample["image"].shape, np.uint8)
