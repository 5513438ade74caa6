"""Open emkit layers in napari, at their physical scale.

Every napari layer gets ``scale`` = the layer's resolution in nm (z, y, x) and ``translate`` =
voxel offset × resolution, so layers of different resolutions line up in nm. Kinds map to:

=============  =====================================================================
image          image layer, gray, contrast 0–255
affinities     three image layers (``channel_axis=0``), z/y/x → red/green/blue, additive
probability    one image layer per channel (``channel_axis=0``), additive
segmentation   labels layer
mask           labels layer, half transparent
=============  =====================================================================

When an image is among the layers, affinities and probability layers start hidden (as in the
Neuroglancer view), so the image, labels and masks are what one sees first.

napari is imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

from emkit.errors import InputError
from emkit.geometry import Bbox, parse_bbox

__all__ = ["add_layers", "open_in_napari", "layer_bbox_for"]

_PROB_COLOURS = ("magenta", "green", "cyan", "yellow", "red", "blue")


def _as_layers(urls_or_layers) -> list[tuple[str, object]]:
    """``[(name, emkit.io.Layer)]`` from URLs, paths, dataset folders, ``{name: url}`` or Layers."""
    from emkit.io import Layer
    from emkit.view import resolve_layers

    if isinstance(urls_or_layers, dict):
        return [(r.name, Layer.open(r.url)) for r in resolve_layers(urls_or_layers)]
    if isinstance(urls_or_layers, (str, os.PathLike, Layer)):
        items = [urls_or_layers]
    else:
        items = list(urls_or_layers)
    out: list[tuple[str, object]] = []
    for item in items:
        if isinstance(item, Layer):
            out.append((item.url.rstrip("/").rsplit("/", 1)[-1], item))
        else:
            out.extend((r.name, Layer.open(r.url)) for r in resolve_layers(item))
    if not out:
        raise InputError("no layers given to add to napari")
    return out


def layer_bbox_for(bbox: Bbox, bbox_resolution: Sequence[float], layer) -> Bbox:
    """The voxels of ``layer`` covering ``bbox`` (voxels at ``bbox_resolution`` nm, z, y, x).

    The result is clipped to the layer's bounds; no overlap at all raises InputError naming
    both boxes.
    """
    start_nm, stop_nm = bbox.to_nm(bbox_resolution)
    res = layer.resolution
    start = tuple(math.floor(a / r + 1e-9) for a, r in zip(start_nm, res))
    stop = tuple(math.ceil(b / r - 1e-9) for b, r in zip(stop_nm, res))
    out = Bbox(start, stop).intersect(layer.bbox)
    if out.empty:
        raise InputError(f"bbox {bbox} (z,y,x voxels at {tuple(bbox_resolution)} nm) does not overlap layer "
                         f"{layer.url} (bounds {layer.bbox} at {res} nm)")
    return out


def add_layers(viewer, urls_or_layers, *, bbox: Bbox | str | None = None, max_voxels: int = 2**28) -> list:
    """Add emkit layers to a napari viewer.

    Parameters
    ----------
    viewer : napari.Viewer
    urls_or_layers : a layer URL or local path, a dataset folder (all its layers), a list of
        these or of :class:`emkit.io.Layer`, or ``{name: url}``.
    bbox : region to load, in voxels (z, y, x) of the *first* layer (``Bbox`` or
        ``"z0:z1,y0:y1,x0:x1"``); other layers load the same region in nm. Default: everything.
    max_voxels : refuse to load more voxels than this per layer (memory guard; pass ``bbox``).

    Returns
    -------
    list of napari layers added (affinities and multi-channel probability add one per channel).
    """
    layers = _as_layers(urls_or_layers)
    if isinstance(bbox, str):
        bbox = parse_bbox(bbox)
    ref_res = layers[0][1].resolution
    # as in the Neuroglancer view: with an image present, channel layers start hidden (a click shows them)
    hide_channels = any(layer.kind.name == "image" for _, layer in layers)
    added = []
    for name, layer in layers:
        box = layer.bbox if bbox is None else layer_bbox_for(bbox, ref_res, layer)
        if box.size > max_voxels:
            raise InputError(f"layer {layer.url} region {box} has {box.size} voxels, more than max_voxels="
                             f"{max_voxels}; pass a smaller bbox='z0:z1,y0:y1,x0:x1'")
        data = layer.read(box)
        res = tuple(layer.resolution)
        translate = tuple(s * r for s, r in zip(box.start, res))
        common = dict(scale=res, translate=translate)
        kind = layer.kind.name
        if kind == "image":
            added.append(viewer.add_image(data, name=name, colormap="gray", contrast_limits=(0, 255), **common))
        elif kind == "segmentation":
            added.append(viewer.add_labels(data, name=name, **common))
        elif kind == "mask":
            added.append(viewer.add_labels(data, name=name, opacity=0.5, **common))
        elif kind == "affinities":
            names = [f"{name} {c}" for c in layer.channel_names]
            out = viewer.add_image(data, channel_axis=0, name=names, colormap=["red", "green", "blue"],
                                   blending="additive", contrast_limits=(0.0, 1.0), visible=not hide_channels,
                                   **common)
            added.extend(out)
        else:  # probability
            n = data.shape[0]
            if n == 1:
                added.append(viewer.add_image(data[0], name=name, colormap="gray", contrast_limits=(0.0, 1.0),
                                              visible=not hide_channels, **common))
            else:
                names = [f"{name} {c}" for c in layer.channel_names]
                cmaps = [_PROB_COLOURS[i % len(_PROB_COLOURS)] for i in range(n)]
                added.extend(viewer.add_image(data, channel_axis=0, name=names, colormap=cmaps,
                                              blending="additive", contrast_limits=(0.0, 1.0),
                                              visible=not hide_channels, **common))
    return added


def open_in_napari(urls_or_layers, *, bbox: Bbox | str | None = None, show: bool = True, ndisplay: int = 2,
                   title: str = "emkit"):
    """A new napari viewer showing the layers (see :func:`add_layers`), centred and zoomed to fit.

    Parameters
    ----------
    urls_or_layers, bbox : as for :func:`add_layers`.
    show : show the window (napari canvas screenshots need a shown window).
    ndisplay : 2 (slices, z slider) or 3 (volume rendering).

    Returns
    -------
    napari.Viewer
    """
    import napari

    if ndisplay not in (2, 3):
        raise InputError(f"ndisplay must be 2 or 3, got {ndisplay!r}")
    viewer = napari.Viewer(title=title, show=show, ndisplay=ndisplay)
    try:
        add_layers(viewer, urls_or_layers, bbox=bbox)
    except BaseException:
        viewer.close()
        raise
    viewer.reset_view()
    return viewer
