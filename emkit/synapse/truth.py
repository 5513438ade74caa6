"""Ground truth of a phantom dataset folder for the synapse stage, and an oracle partner assignment.

* :func:`load_truth` — ``gt/synapses.parquet`` and ``gt/clefts`` of a dataset folder as written by
  :func:`emkit.phantom.write_phantom`. ``gt/clefts`` is drawn in the phantom's clean frame; the
  image (and every layer predicted from it) shows the tissue displaced by the phantom's
  misalignments, so the clefts are warped into the image frame with ``gt/displacement.npz``
  (nearest neighbour, :func:`emkit.defects.warp`), as ``gt/image_frame/segmentation`` is.
* :func:`truth_partners` — an *oracle*: each cleft takes the partners of the true cleft it
  overlaps most (``assignment_score`` = the share of its voxels in that true cleft); a cleft that
  overlaps no true cleft stays unassigned (pre_id = post_id = 0). Used to score cleft detection
  alone (the partners of every found cleft are then right) and to run the synapse stage where no
  partner net is installed; results made with it are labelled ``truth`` wherever reported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from emkit.errors import InputError

__all__ = ["Truth", "load_truth", "truth_partners", "truth_table"]


@dataclass
class Truth:
    """A dataset's synapse ground truth: ``table`` (cleft_id, pre_id, post_id, centroids nm, size),
    ``clefts`` (uint64 z, y, x, image frame, ids = cleft_id), ``resolution`` (z, y, x nm) and
    ``segmentation_url`` (the true segmentation in the image frame, when the folder has it)."""

    table: object
    clefts: np.ndarray
    resolution: tuple
    segmentation_url: str | None = None
    folder: str = ""


def truth_table(table):
    """A true synapse table in the synapse-table shape: ``id`` (= cleft id), ``pre_id``,
    ``post_id``, ``cleft_ids`` ([cleft_id]), centroids, size. Takes the phantom's
    ``gt/synapses.parquet`` (cleft_id, …) or a synapse table (returned as is)."""
    if "cleft_ids" in table.columns:
        return table
    if "cleft_id" not in table.columns:
        raise InputError(f"a true synapse table needs cleft_id, pre_id, post_id columns; it has {list(table.columns)}")
    t = table.copy()
    t["id"] = t["cleft_id"].astype(np.uint64)
    t["cleft_ids"] = [[int(c)] for c in t["cleft_id"]]
    return t


def load_truth(folder, *, frame: str = "image") -> Truth:
    """The synapse ground truth of a dataset folder (``gt/synapses.parquet``, ``gt/clefts``;
    warped into the image frame with ``gt/displacement.npz`` when present — or
    ``gt/image_frame/clefts`` when the folder has it).

    ``frame="clean"``: the truth as it is, in the clean frame (``gt/clefts``,
    ``gt/segmentation``): the frame an aligner should give back (the sections' moves and the
    misalignment defects undone), to score synapses found on an ``emkit align`` output.
    """
    if frame not in ("image", "clean"):
        raise InputError(f"frame must be 'image' or 'clean', got {frame!r}")
    import io

    import pandas as pd
    from cloudfiles import CloudFiles

    from emkit.io import Layer, join_url, layer_exists

    base = join_url(folder)
    cf = CloudFiles(base)
    raw = cf.get("gt/synapses.parquet")
    if raw is None:
        raise InputError(f"{folder} has no gt/synapses.parquet (a phantom dataset folder holds one: "
                         "emkit phantom DIR)")
    table = pd.read_parquet(io.BytesIO(raw))
    if frame == "clean":
        url, seg = join_url(base, "gt/clefts"), join_url(base, "gt/segmentation")
        if not layer_exists(url):
            raise InputError(f"{folder} has no gt/clefts layer")
        layer = Layer.open(url)
        return Truth(table=table, clefts=layer.read(), resolution=tuple(layer.resolution),
                     segmentation_url=seg if layer_exists(seg) else None, folder=base)
    frame = join_url(base, "gt/image_frame/clefts")
    url = frame if layer_exists(frame) else join_url(base, "gt/clefts")
    if not layer_exists(url):
        raise InputError(f"{folder} has no gt/clefts layer")
    layer = Layer.open(url)
    clefts = layer.read()
    if url != frame:
        disp = cf.get("gt/displacement.npz")
        if disp is not None:
            from emkit.defects import warp

            with np.load(io.BytesIO(disp)) as z:
                d = np.stack([z["dy"], z["dx"]]).astype(np.float32)
            if d.shape[1:] == clefts.shape:
                clefts = warp(clefts, d, order=0)
    seg = join_url(base, "gt/image_frame/segmentation")
    return Truth(table=table, clefts=clefts, resolution=tuple(layer.resolution),
                 segmentation_url=seg if layer_exists(seg) else None, folder=base)


def truth_partners(clefts, gt_clefts, gt_table, *, segmentation=None, gt_segmentation=None,
                   margin_voxels=(2, 32, 32)):
    """Oracle partner assignment (see the module docstring).

    Parameters
    ----------
    clefts : (z, y, x) cleft component ids (0 = none).
    gt_clefts : (z, y, x) true cleft ids, same shape, image frame.
    gt_table : the true synapse table (``cleft_id``, ``pre_id``, ``post_id``).
    segmentation, gt_segmentation : the segmentation the synapses are assigned in and the true one
        (same shape). When given, the true partners are expressed in ``segmentation``'s ids: near
        each cleft (its bounding box grown by ``margin_voxels``), the segment covering most of the
        true partner's voxels; 0 when none does. Default: the true ids.

    Returns
    -------
    DataFrame: cleft_id, pre_id, post_id, pre_score, post_score, assignment_score; one row per
    cleft id present in ``clefts``.
    """
    import pandas as pd

    a = np.asarray(clefts)
    b = np.asarray(gt_clefts)
    if a.shape != b.shape:
        raise InputError(f"clefts have shape {a.shape} but the true clefts {b.shape}; they must match")
    ids, sizes = np.unique(a[a > 0], return_counts=True)
    both = (a > 0) & (b > 0)
    pre = np.zeros(ids.size, np.uint64)
    post = np.zeros(ids.size, np.uint64)
    score = np.zeros(ids.size, np.float64)
    if both.any() and ids.size:
        pairs, counts = np.unique(np.stack([a[both].astype(np.uint64), b[both].astype(np.uint64)], 1), axis=0,
                                  return_counts=True)
        # for each predicted id, the true cleft with most overlap (ties: smaller true id)
        order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
        pairs, counts = pairs[order], counts[order]
        first = np.r_[True, pairs[1:, 0] != pairs[:-1, 0]]
        best, cnt = pairs[first], counts[first]
        t = truth_table(gt_table)
        lut = {int(c): (int(p), int(q)) for c, p, q in zip(t["cleft_ids"].map(lambda v: v[0]), t["pre_id"],
                                                            t["post_id"])}
        idx = np.searchsorted(ids, best[:, 0])
        for i, g, n in zip(idx, best[:, 1].tolist(), cnt.tolist()):
            if g in lut:
                pre[i], post[i] = lut[g]
                score[i] = n / sizes[i]
    if (segmentation is None) != (gt_segmentation is None):
        raise InputError("give both segmentation and gt_segmentation (or neither)")
    if segmentation is not None and ids.size:
        from scipy.ndimage import find_objects

        seg, gseg = np.asarray(segmentation), np.asarray(gt_segmentation)
        if seg.shape != a.shape or gseg.shape != a.shape:
            raise InputError(f"segmentation {seg.shape} and gt_segmentation {gseg.shape} must have the clefts' "
                             f"shape {a.shape}")
        dense = np.zeros(a.shape, np.int64)
        dense[a > 0] = np.searchsorted(ids, a[a > 0].astype(np.uint64)) + 1
        boxes = find_objects(dense, max_label=ids.size)
        for i, box in enumerate(boxes):
            if box is None or not (pre[i] or post[i]):
                continue
            grown = tuple(slice(max(0, b.start - m), min(n, b.stop + m)) for b, m, n in
                          zip(box, margin_voxels, a.shape))
            sg, gg = seg[grown], gseg[grown]
            for arr in (pre, post):
                on = sg[(gg == arr[i]) & (sg > 0)]
                if on.size:
                    v, c = np.unique(on, return_counts=True)
                    arr[i] = v[np.argmax(c)]
                else:
                    arr[i] = 0
    return pd.DataFrame({"cleft_id": ids.astype(np.uint64), "pre_id": pre, "post_id": post, "pre_score": score,
                         "post_score": score, "assignment_score": score})


def is_truth_ref(ref) -> bool:
    """True for ``"truth:DATASET_DIR"`` model references (the oracle)."""
    return isinstance(ref, str) and ref.startswith("truth:")


def truth_folder(ref: str) -> str:
    folder = ref[len("truth:"):]
    if not folder:
        raise InputError("'truth:' needs a dataset folder: truth:DATASET_DIR (e.g. truth:data/ph)")
    if "://" not in folder and not os.path.isdir(folder):
        raise InputError(f"truth:{folder}: no such dataset folder")
    return folder
