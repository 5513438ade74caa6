"""Synapses in Neuroglancer: an annotation layer of points at the synapse centroids.

Each point carries its synapse id (the annotation id and property ``synapse_id``), its size,
cleft and assignment scores (properties) and its partners as two relationships, ``pre`` and
``post``, linked to the segmentation layer the synapses were found on: selecting a synapse in
Neuroglancer's annotation list centres the view on it and shows its partners' segments;
selecting segments filters the list to their synapses. The layer is local to the viewer state
(``local://annotations``), so it needs no files beyond ``synapses.parquet``.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..errors import InputError
from ..io.layer import local_path, normalize_url

__all__ = ["find_synapse_folders", "synapse_annotation_layer", "center_on_synapse", "synapse_position"]

_TABLE = "synapses.parquet"
_PROPS = (("synapse_id", "uint32"), ("size_voxels", "uint32"), ("cleft_score", "float32"),
          ("assignment_score", "float32"))
SHADER = ("void main() {\n  setColor(vec3(1.0, 0.0, 1.0));\n  setPointMarkerSize(9.0);\n"
          "  setPointMarkerBorderColor(vec4(0.0, 0.0, 0.0, 1.0));\n}\n")


def find_synapse_folders(url, max_depth: int = 3) -> dict[str, str]:
    """``{name: folder}`` of synapse output folders (``synapses.parquet`` + ``synapses.json``) at or below a
    local ``url`` (up to ``max_depth`` levels). Names: ``synapses`` for the folder itself, else
    the relative path (``synapses``, ``runs/synapses_on_gt``)."""
    path = local_path(normalize_url(url))
    if path is None or not os.path.isdir(path):
        return {}
    if _is_synapse_folder(path, os.listdir(path)):
        return {os.path.basename(path.rstrip(os.sep)) or "synapses": path}
    found = {}
    for root, dirs, files in os.walk(path):
        rel = os.path.relpath(root, path)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        dirs.sort()
        if depth and _is_synapse_folder(root, files):
            found[rel.replace(os.sep, "/")] = root
            dirs[:] = []
        elif depth >= max_depth or "info" in files:
            dirs[:] = []
    return found


def _is_synapse_folder(path, files) -> bool:
    """An ``emkit synapses`` output: ``synapses.parquet`` with its ``synapses.json`` (a phantom's
    ``gt/synapses.parquet`` is a truth table, not one)."""
    return _TABLE in files and "synapses.json" in files


def _provenance(folder: str) -> dict:
    p = os.path.join(folder, "synapses.json")
    if os.path.isfile(p):
        with open(p) as f:
            return json.load(f)
    return {}


def synapse_annotation_layer(table, resolution, *, name: str = "synapses", segmentation_layer: str | None = None,
                             dimensions_resolution=None, max_synapses: int = 100_000) -> dict:
    """Neuroglancer JSON of a local annotation layer with one point per synapse.

    Parameters
    ----------
    table : synapse table (``id``, ``pre_id``, ``post_id``, ``centroid_{z,y,x}_nm``, ``size_voxels``,
        ``cleft_score``, ``assignment_score``).
    resolution : voxel size (z, y, x nm) of the viewer's coordinates (the first layer's).
    name : layer name.
    segmentation_layer : name of the segmentation layer whose segments ``pre``/``post`` refer to.
    max_synapses : refuse larger tables (the state travels to the browser whole).
    """
    if len(table) > max_synapses:
        raise InputError(f"{len(table)} synapses is too many for a local annotation layer (max {max_synapses}); "
                         "view a part of the table")
    res = np.asarray([float(v) for v in resolution], np.float64)
    dims = {ax: [res[i] * 1e-9, "m"] for ax, i in (("x", 2), ("y", 1), ("z", 0))}
    anns = []
    col = {c: table[c].to_numpy() for c in ("id", "pre_id", "post_id", "size_voxels", "cleft_score",
                                           "assignment_score", "centroid_z_nm", "centroid_y_nm", "centroid_x_nm")}
    for i in range(len(table)):
        zyx = np.array([col["centroid_z_nm"][i], col["centroid_y_nm"][i], col["centroid_x_nm"][i]], float) / res
        sid, pre, post = int(col["id"][i]), int(col["pre_id"][i]), int(col["post_id"][i])
        anns.append({"type": "point", "id": str(sid), "point": [float(zyx[2]), float(zyx[1]), float(zyx[0])],
                     "segments": [[str(pre)], [str(post)]],
                     "props": [sid, int(col["size_voxels"][i]), float(col["cleft_score"][i]),
                               float(col["assignment_score"][i])],
                     "description": f"synapse {sid}: {pre} → {post}"})
    layer = {"type": "annotation", "name": name,
             "source": {"url": "local://annotations", "transform": {"outputDimensions": dims}},
             "annotationProperties": [{"id": i, "type": t} for i, t in _PROPS],
             "annotationRelationships": ["pre", "post"], "annotations": anns, "shader": SHADER}
    if segmentation_layer:
        layer["linkedSegmentationLayer"] = {"pre": segmentation_layer, "post": segmentation_layer}
        layer["filterBySegmentation"] = []
    return layer


def synapse_position(table, synapse_id: int, resolution) -> tuple[float, float, float]:
    """The centroid of synapse ``synapse_id`` in voxels (z, y, x) of ``resolution``."""
    rows = table[table["id"].astype(np.int64) == int(synapse_id)]
    if not len(rows):
        ids = table["id"].astype(np.int64)
        raise InputError(f"no synapse {synapse_id} in the table (ids {int(ids.min()) if len(ids) else '-'}.."
                         f"{int(ids.max()) if len(ids) else '-'})")
    r = rows.iloc[0]
    res = [float(v) for v in resolution]
    return (float(r.centroid_z_nm) / res[0], float(r.centroid_y_nm) / res[1], float(r.centroid_x_nm) / res[2])


def center_on_synapse(handle, synapse_id: int, *, layer: str | None = None, zoom_nm: float | None = 2000.0,
                      select_partners: bool = True) -> tuple[float, float, float]:
    """Centre a running viewer (:func:`emkit.view.serve`) on a synapse.

    Parameters
    ----------
    handle : :class:`~emkit.view.ViewerHandle` showing a synapse annotation layer.
    synapse_id : the synapse's id in its table.
    layer : the synapse annotation layer's name (default: the only / first one).
    zoom_nm : field of view of the cross-sections in nm (None: keep the zoom).
    select_partners : show the pre- and postsynaptic segments in the linked segmentation layer.

    Returns
    -------
    the new position in voxels (z, y, x).
    """
    syn = getattr(handle, "synapses", None) or {}
    if not syn:
        raise InputError("this viewer shows no synapses (give emkit.view.serve a synapse output folder)")
    if layer is None:
        layer = next(iter(syn))
    if layer not in syn:
        raise InputError(f"no synapse layer {layer!r}; the viewer has {sorted(syn)}")
    info = syn[layer]
    table, res = info["table"], handle.state["dimensions"]
    vox = [res["z"][0] * 1e9, res["y"][0] * 1e9, res["x"][0] * 1e9]
    pos = synapse_position(table, synapse_id, vox)
    row = table[table["id"].astype(np.int64) == int(synapse_id)].iloc[0]
    with handle.viewer.txn() as s:
        s.position = [pos[2], pos[1], pos[0]]
        if zoom_nm:
            s.cross_section_scale = float(zoom_nm) / vox[2] / 600.0
        seg = info.get("segmentation_layer")
        if select_partners and seg and seg in s.layers:
            s.layers[seg].segments = {int(row.pre_id), int(row.post_id)}
            s.layers[seg].visible = True
        s.selected_layer.layer = layer
    return pos
