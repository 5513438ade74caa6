"""One check that layers used together lie on the same voxel grid.

Every stage that reads more than one layer (segmentation with semantic labels, inference with
masks, evaluation against ground truth, …) calls :func:`check_same_grid` before it reads a
voxel: layers that differ in size, voxel offset or resolution would otherwise be silently
misregistered.
"""
from __future__ import annotations

from emkit.errors import InputError

__all__ = ["check_same_grid", "GRID_FACTS"]

#: What two layers must share to be used voxel for voxel (each z, y, x).
GRID_FACTS = ("size", "voxel_offset", "resolution")


def _fmt(value) -> str:
    return "(" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + ")"


def check_same_grid(reference, *others, what: str = "layer", facts=GRID_FACTS) -> None:
    """Raise :class:`InputError` unless every layer in ``others`` has the same size, voxel
    offset and resolution (z, y, x) as ``reference``.

    Parameters
    ----------
    reference : :class:`emkit.io.Layer` that fixes the grid (e.g. the affinities or the image).
    others : layers (``None`` entries are skipped) that must match it.
    what : how the message names the other layers (``"semantic layer"``, ``"mask"``, …).
    facts : the properties compared (default :data:`GRID_FACTS`).

    Raises
    ------
    InputError : naming the first property that differs, both values and both URLs.
    """
    for other in others:
        if other is None:
            continue
        for fact in facts:
            a, b = tuple(getattr(reference, fact)), tuple(getattr(other, fact))
            if a != b:
                unit = " nm" if fact == "resolution" else ""
                raise InputError(
                    f"{what} {other.url} has {fact} {_fmt(b)}{unit} (z, y, x) but {reference.url} has "
                    f"{_fmt(a)}{unit}; layers used together must share size, voxel offset and resolution "
                    f"(crop or resample one of them first)")
