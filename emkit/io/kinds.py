"""The kinds of layer emkit writes, with their dtype, channels and encodings."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

__all__ = ["LayerKind", "KINDS", "get_kind"]


@dataclass(frozen=True)
class LayerKind:
    """What a kind of layer holds.

    Attributes
    ----------
    name : kind name (``image``, ``affinities``, ``probability``, ``segmentation``, ``mask``).
    dtype : numpy dtype of the voxels.
    layer_type : Precomputed ``type`` (``image`` or ``segmentation``).
    num_channels : fixed channel count, or None when the caller chooses (``probability``).
    encoding : default Precomputed encoding.
    encodings : encodings this kind accepts (``compressed_segmentation`` needs uint32/uint64, so
        masks, which are uint8, cannot use it).
    compress : default gzip of chunk files. ``raw`` floats are gzipped (the view server serves
        ``.gz`` files with ``Content-Encoding``); encodings that compress themselves are not.
    channel_names : default meaning of each channel.
    """

    name: str
    dtype: np.dtype
    layer_type: str
    num_channels: int | None
    encoding: str
    encodings: tuple[str, ...]
    compress: bool
    channel_names: tuple[str, ...] = ()


KINDS: dict[str, LayerKind] = {
    k.name: k
    for k in [
        LayerKind("image", np.dtype(np.uint8), "image", 1, "raw", ("raw", "jpeg", "png"), False, ("intensity",)),
        LayerKind("affinities", np.dtype(np.float32), "image", 3, "raw", ("raw", "fpzip", "zfpc"), True,
                  ("z", "y", "x")),
        LayerKind("probability", np.dtype(np.float32), "image", None, "raw", ("raw", "fpzip", "zfpc"), True),
        LayerKind("segmentation", np.dtype(np.uint64), "segmentation", 1, "compressed_segmentation",
                  ("compressed_segmentation", "compresso", "raw"), False, ("id",)),
        LayerKind("mask", np.dtype(np.uint8), "image", 1, "raw", ("raw", "png"), False,
                  ("mask",)),
    ]
}


def get_kind(name: str) -> LayerKind:
    """The :class:`LayerKind` called ``name``, or InputError listing the known kinds."""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown layer kind {name!r}; expected one of {', '.join(KINDS)}") from None
