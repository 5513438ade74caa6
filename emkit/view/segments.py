"""Which segments a view selects, so that their meshes show in Neuroglancer's 3D panel.

Neuroglancer draws a segmentation layer's meshes only for *selected* segments. A layer whose
``info`` names a mesh folder (``"mesh": "mesh"``, written by :func:`emkit.mesh.mesh_layers` or
Igneous) opens with its few largest segments selected:

* size = voxel count, read from the coarsest scale of the layer that holds at most
  ``max_voxels`` voxels (the pyramids :func:`emkit.pyramid` writes make this cheap for large
  layers); segment 0 (background) never counts;
* only segments that have a mesh are chosen, where that can be seen (a local legacy mesh folder:
  ``<id>:0`` manifests); where the volume is too large to count and the meshes are local, the
  largest meshes (bytes of their fragments) stand in for the largest segments.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..io.layer import local_path, normalize_url

__all__ = ["largest_segments", "mesh_segment_ids", "parse_segment_ids", "check_segments_have_meshes"]

_MANIFEST = re.compile(r"^(\d+):0$")
DEFAULT_N_SEGMENTS = 5
DEFAULT_MAX_VOXELS = 1 << 25  # 32 Mi voxels: 256 MiB of uint64 at most, read once


def _mesh_folder(url: str, mesh_dir: str) -> str | None:
    path = local_path(normalize_url(url))
    if path is None:
        return None
    folder = os.path.join(path, mesh_dir)
    return folder if os.path.isdir(folder) else None


def mesh_segment_ids(url: str, mesh_dir: str = "mesh") -> dict[int, int] | None:
    """``{segment id: bytes of its mesh fragments}`` of a local legacy mesh folder, else None.

    None means "cannot tell from here" (remote layer, sharded meshes, no folder), not "no meshes".
    """
    folder = _mesh_folder(url, mesh_dir)
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, "info")) as f:
            if "sharding" in json.load(f):
                return None  # sharded multi-resolution meshes: ids live inside the shards
    except (OSError, ValueError):
        pass
    out: dict[int, int] = {}
    for name in os.listdir(folder):
        m = _MANIFEST.match(name)
        if not m:
            continue
        size = 0
        try:
            with open(os.path.join(folder, name)) as f:
                frags = json.load(f).get("fragments", [])
        except (OSError, ValueError):
            frags = []
        for frag in frags:
            p = os.path.join(folder, frag)
            if os.path.isfile(p):
                size += os.path.getsize(p)
            elif os.path.isfile(p + ".gz"):
                size += os.path.getsize(p + ".gz")
        out[int(m.group(1))] = size
    return out


def _voxel_counts(url: str, max_voxels: int) -> dict[int, int] | None:
    """Voxel count per segment id (0 left out) at the coarsest scale of <= ``max_voxels`` voxels."""
    from ..io.layer import Layer

    info = Layer(url).info
    scales = info.get("scales") or []
    fits = [i for i, s in enumerate(scales) if int(np.prod(s["size"])) <= max_voxels]
    if not fits:
        return None
    mip = max(fits, key=lambda i: int(np.prod(scales[i]["resolution"])))  # the coarsest that fits
    from cloudvolume import CloudVolume

    import fastremap

    vol = CloudVolume(normalize_url(url), mip=mip, fill_missing=True, parallel=1, progress=False,
                      bounded=True)
    data = np.asarray(vol[vol.bounds])
    ids, counts = fastremap.unique(data, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i != 0}


def largest_segments(url: str, n: int = DEFAULT_N_SEGMENTS, *, mesh_dir: str | None = "mesh",
                     max_voxels: int = DEFAULT_MAX_VOXELS) -> list[int]:
    """The ``n`` largest segments of a segmentation layer that have meshes, largest first.

    Parameters
    ----------
    url : segmentation layer (local path or URL).
    n : how many (0: none).
    mesh_dir : the layer's mesh folder (its info's ``mesh`` entry), to keep only meshed segments
        where that can be seen; None: no such filter.
    max_voxels : the largest scale (voxels) read to count segment sizes; a layer with no scale that
        small is ranked by mesh size instead (local meshes) or gets no selection (remote).

    Returns
    -------
    list of int
        Segment ids, by voxel count (ties: smaller id first); may be shorter than ``n``.
    """
    if int(n) != n or n < 0:
        raise InputError(f"number of segments to select must be a whole number >= 0, got {n!r}")
    if n == 0:
        return []
    meshed = mesh_segment_ids(url, mesh_dir) if mesh_dir else None
    try:
        sizes = _voxel_counts(url, max_voxels)
    except Exception as exc:  # noqa: BLE001 - unreadable from here (private bucket, offline): rank otherwise
        if local_path(normalize_url(url)) is not None:
            raise InputError(f"cannot read segment sizes from {url}: {exc}") from exc
        sizes = None
    if sizes is None:
        sizes = meshed  # largest meshes stand in for the largest segments
    if not sizes:
        return []
    ids = [i for i in sizes if meshed is None or i in meshed]
    ids.sort(key=lambda i: (-sizes[i], i))
    return ids[:int(n)]


def parse_segment_ids(value: str | int | Iterable) -> list[int]:
    """Segment ids from ``"12,40"``, ``12`` or ``[12, 40]``; InputError naming a bad value."""
    if isinstance(value, (int, np.integer)):
        items: Sequence = [value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not items:
            raise InputError(f"no segment id in {value!r} (expected e.g. 12,40)")
    else:
        items = list(value)
    out = []
    for v in items:
        if isinstance(v, str):
            i = int(v) if re.fullmatch(r"\d+", v.strip()) else -1
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            i = int(v)
        else:
            i = -1
        if not 0 < i < 2 ** 64:
            raise InputError(f"segment ids must be whole numbers in 1..2^64-1, got {v!r}")
        out.append(i)
    return out


def check_segments_have_meshes(url: str, ids: Sequence[int], mesh_dir: str, layer_name: str) -> None:
    """InputError naming the ids that have no mesh, where the layer's meshes can be listed."""
    meshed = mesh_segment_ids(url, mesh_dir)
    if meshed is None:
        return
    missing = [i for i in ids if i not in meshed]
    if missing:
        some = ", ".join(str(i) for i in sorted(meshed)[:8]) or "none"
        raise InputError(f"segment(s) {missing} of layer {layer_name!r} have no mesh in {mesh_dir}/ "
                         f"(meshed segments include: {some})")
