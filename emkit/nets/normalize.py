"""The one image normalisation used by training and inference alike."""
from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["normalize"]


def normalize(image) -> np.ndarray:
    """EM image -> float32 in [0, 1] (any shape, e.g. (z, y, x)).

    uint8 is divided by 255, uint16 by 65535; float arrays are taken as already in [0, 1] and
    only cast to float32. Anything else raises :class:`~emkit.errors.InputError`.
    """
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return a.astype(np.float32) * np.float32(1.0 / 255.0)
    if a.dtype == np.uint16:
        return a.astype(np.float32) * np.float32(1.0 / 65535.0)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32, copy=False)
    raise InputError(f"image dtype must be uint8, uint16 or float, got {a.dtype}")
