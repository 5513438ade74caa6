"""Synapses as a Precomputed annotation layer (Neuroglancer's ``neuroglancer_annotations_v1``).

``emkit synapses`` writes ``OUT_DIR/annotations``: one point per synapse at its centroid, with the
relationships ``pre_segment`` and ``post_segment`` (so Neuroglancer lists, for a selected segment,
the synapses it makes or receives) and the properties ``size_voxels``, ``cleft_score`` and
``assignment_score``. Any Neuroglancer opens it as ``precomputed://URL`` — on ``file://`` through
``emkit view``, on ``gs://``/``s3://`` directly — which is how a table is shared beyond Python.

The files follow Neuroglancer's specification of the format (one spatial chunk: a little-endian
uint64 count, the records — position as float32 x, y, z, then the properties, all 4-byte — then
the uint64 ids; ``by_id/ID``: one record and, per relationship, a uint32 count and the uint64
segment ids; ``rel_NAME/SEGMENT``: like the spatial chunk). They are encoded here rather than by
``neuroglancer.write_annotations.AnnotationWriter``, whose 2.41 release pads 4-byte properties
to odd offsets (a ``uint32`` after a ``float32`` lands at byte 22 of a 28-byte record) and so
writes records that Neuroglancer itself misreads. Files go through CloudFiles, so the same call
writes to cloud storage; :func:`read_synapse_annotations` decodes a layer back.
"""
from __future__ import annotations

import json

import numpy as np

from emkit.errors import InputError, LayerExistsError

__all__ = ["write_synapse_annotations", "read_synapse_annotations", "ANNOTATIONS_DIR", "PROPERTIES"]

#: Folder of the annotation layer inside a synapse output folder.
ANNOTATIONS_DIR = "annotations"
#: Per-synapse properties stored with each point: (table column, Neuroglancer type).
PROPERTIES = (("size_voxels", "uint32"), ("cleft_score", "float32"), ("assignment_score", "float32"))
_RELATIONSHIPS = ("pre_segment", "post_segment")


def write_synapse_annotations(table, url, resolution, *, overwrite: bool = False) -> str:
    """Write the synapse ``table`` as a Precomputed point-annotation layer at ``url``.

    Parameters
    ----------
    table : synapse table (:data:`emkit.synapse.table.SYNAPSE_COLUMNS`; ``id``, ``pre_id``,
        ``post_id``, ``centroid_{z,y,x}_nm`` and the :data:`PROPERTIES` columns are used).
    url : folder of the layer (path, ``file://``, ``gs://``, ``s3://``).
    resolution : (z, y, x) nm per voxel of the image the synapses were found in; the points are
        stored in its voxel coordinates (centroid nm / resolution), so they overlay its layers.
    overwrite : replace an existing layer at ``url`` (refused otherwise: LayerExistsError).

    Returns
    -------
    The layer's URL (``precomputed://`` + it opens it in Neuroglancer).
    """
    from cloudfiles import CloudFiles

    from emkit.io.layer import normalize_url

    res = np.asarray(resolution, dtype=float)
    if res.shape != (3,) or not np.all(res > 0):
        raise InputError(f"resolution must be 3 positive numbers (z, y, x nm), got {resolution!r}")
    need = ("id", "pre_id", "post_id", "centroid_z_nm", "centroid_y_nm", "centroid_x_nm") + tuple(c for c, _ in PROPERTIES)
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise InputError(f"the synapse table lacks columns {missing}")
    dest = normalize_url(url).rstrip("/")
    cf = CloudFiles(dest)
    if cf.exists("info"):
        if not overwrite:
            raise LayerExistsError(f"an annotation layer already exists at {url}; pass overwrite=True (--overwrite) "
                                   "to replace it")
        cf.delete(list(cf.list()))
    pos = (table[["centroid_x_nm", "centroid_y_nm", "centroid_z_nm"]].to_numpy(float) / res[::-1]).astype("<f4")
    ids = table["id"].to_numpy().astype("<u8")
    rec = np.zeros(len(table), _record_dtype())
    rec["pos"] = pos
    for c, _ in PROPERTIES:
        rec[c] = table[c].to_numpy()
    rels = {"pre_segment": table["pre_id"].to_numpy().astype("<u8"),
            "post_segment": table["post_id"].to_numpy().astype("<u8")}
    files = [("spatial0/0_0_0", _encode_many(rec, ids))]
    for i in range(len(table)):        # by id: the record, then per relationship a count and the ids
        tail = b"".join(np.uint32(1).astype("<u4").tobytes() + rels[r][i:i + 1].tobytes() for r in _RELATIONSHIPS)
        files.append((f"by_id/{int(ids[i])}", rec[i:i + 1].tobytes() + tail))
    for r in _RELATIONSHIPS:           # per segment: the synapses it takes part in this role
        for seg in np.unique(rels[r]):
            sel = rels[r] == seg
            files.append((f"rel_{r}/{int(seg)}", _encode_many(rec[sel], ids[sel])))
    lo = pos.min(axis=0) if len(pos) else np.zeros(3)
    hi = pos.max(axis=0) + 1 if len(pos) else np.ones(3)
    info = {"@type": "neuroglancer_annotations_v1",
            "dimensions": {a: [float(r) * 1e-9, "m"] for a, r in zip("xyz", res[::-1])},
            "lower_bound": [float(v) for v in lo], "upper_bound": [float(v) for v in hi],
            "annotation_type": "POINT",
            "properties": [{"id": c, "type": t} for c, t in PROPERTIES],
            "relationships": [{"id": r, "key": f"rel_{r}"} for r in _RELATIONSHIPS],
            "by_id": {"key": "by_id"},
            "spatial": [{"key": "spatial0", "grid_shape": [1, 1, 1],
                         "chunk_size": [float(max(1.0, h - l)) for l, h in zip(lo, hi)], "limit": max(1, len(table))}]}
    cf.puts(files, compress=None, content_type="application/octet-stream")
    cf.put_json("info", info, compress=None)   # last: a layer with an info is complete
    return dest


def _record_dtype() -> np.dtype:
    return np.dtype([("pos", "<f4", 3)] + [(c, "<u4" if t == "uint32" else "<f4") for c, t in PROPERTIES])


def _encode_many(rec, ids) -> bytes:
    return np.uint64(len(rec)).astype("<u8").tobytes() + rec.tobytes() + ids.astype("<u8").tobytes()


def read_synapse_annotations(url):
    """Decode a layer written by :func:`write_synapse_annotations` into a DataFrame.

    Columns: ``id``, ``x``, ``y``, ``z`` (voxels of the layer's coordinate space), the
    :data:`PROPERTIES`, and ``pre_segment`` / ``post_segment`` read from the relationship index
    (each segment's file lists the ids of its synapses).
    """
    import pandas as pd
    from cloudfiles import CloudFiles

    from emkit.io.layer import normalize_url

    cf = CloudFiles(normalize_url(url).rstrip("/"))
    raw = cf.get("info")
    if raw is None:
        raise InputError(f"no annotation layer at {url} (no info file)")
    info = json.loads(raw)
    if info.get("@type") != "neuroglancer_annotations_v1" or str(info.get("annotation_type", "")).lower() != "point":
        raise InputError(f"{url} is not a point-annotation layer: {info.get('@type')!r} {info.get('annotation_type')!r}")
    props = info.get("properties", [])
    if any(p["type"] not in ("uint32", "float32") for p in props):
        raise InputError(f"{url}: only uint32/float32 properties are read here, got {[p['type'] for p in props]}")
    rec = np.dtype([("pos", "<f4", 3)] + [(p["id"], "<u4" if p["type"] == "uint32" else "<f4") for p in props])

    def decode(blob):
        n = int(np.frombuffer(blob[:8], "<u8")[0])
        recs = np.frombuffer(blob[8:8 + n * rec.itemsize], rec)
        ids = np.frombuffer(blob[8 + n * rec.itemsize:8 + n * rec.itemsize + 8 * n], "<u8")
        return recs, ids

    spatial = info["spatial"][0]["key"]
    chunk = cf.get(f"{spatial}/0_0_0")
    recs, ids = decode(chunk) if chunk else (np.zeros(0, rec), np.zeros(0, np.uint64))
    df = pd.DataFrame({"id": ids.astype(np.int64), "x": recs["pos"][:, 0], "y": recs["pos"][:, 1],
                       "z": recs["pos"][:, 2], **{p["id"]: recs[p["id"]] for p in props}})
    for rel in info.get("relationships", []):
        owner = {}
        key = rel["key"]
        for path in cf.list(prefix=key + "/"):
            _, sids = decode(cf.get(path))
            for sid in sids:
                owner[int(sid)] = int(path.rsplit("/", 1)[1])
        df[rel["id"]] = [owner.get(int(i), 0) for i in df["id"]]
    return df
