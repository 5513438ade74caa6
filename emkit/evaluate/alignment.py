"""Alignment residual: how far an aligner's fields are from the true ones (issue 9 §6).

A field maps the aligned grid to the unaligned image (:mod:`emkit.align.fields` convention:
``aligned[z, y, x] = image[z, y - dy, x - dx]``, ``(dy, dx)`` in pixels of the image grid). The
residual at a pixel is ``|field - truth|`` (pixels). For a phantom the truth is the inverse of
everything that moved its image away from the clean frame (``gt/displacement.npz``: the
misalignment defects — slips, steps, folds, cracks — and, for an unaligned phantom, the section
moves: rigid offsets, drift, smooth distortion), so a perfect aligner gives back the clean frame,
with the first section as the reference. It is taken over tissue: pixels that were imaged
(an unaligned phantom's ``valid``), outside the defect masks (folds, cracks, missing data: there
the truth itself tears or nothing is seen), and not on the first section (the reference, kept
in place).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["alignment_residual", "alignment_residual_dirs"]


def alignment_residual(fields, truth, where=None) -> dict:
    """Residual of ``fields`` against ``truth`` over ``where``.

    Parameters
    ----------
    fields, truth : float (z, 2, y, x): ``(dy, dx)`` pixels per section, the same shape.
    where : bool (z, y, x), pixels to score (default all but the first section).

    Returns
    -------
    dict: ``median_px``, ``p95_px``, ``max_px`` (over all scored pixels), ``n_pixels``,
    ``section_median_px`` (list, one per section; None where no pixel is scored) and
    ``worst_section`` (the section with the largest median).
    """
    f = np.asarray(fields, np.float32)
    t = np.asarray(truth, np.float32)
    if f.ndim != 4 or f.shape[1] != 2:
        raise InputError(f"fields must be (z, 2, y, x), got shape {f.shape}")
    if f.shape != t.shape:
        raise InputError(f"fields of shape {f.shape} and truth of shape {t.shape} differ")
    if where is None:
        where = np.ones((f.shape[0],) + f.shape[2:], bool)
        where[0] = False
    where = np.asarray(where, bool)
    if where.shape != (f.shape[0],) + f.shape[2:]:
        raise InputError(f"where must be (z, y, x) = {(f.shape[0],) + f.shape[2:]}, got {where.shape}")
    if not where.any():
        raise InputError("no pixel to score the alignment on (where is empty)")
    err = np.hypot(f[:, 0] - t[:, 0], f[:, 1] - t[:, 1])
    per = [float(np.median(err[z][where[z]])) if where[z].any() else None for z in range(len(err))]
    scored = [(m, z) for z, m in enumerate(per) if m is not None]
    e = err[where]
    return {"median_px": float(np.median(e)), "p95_px": float(np.percentile(e, 95)), "max_px": float(e.max()),
            "n_pixels": int(e.size), "section_median_px": per, "worst_section": int(max(scored)[1])}


def alignment_residual_dirs(field_url, phantom_dir) -> dict:
    """:func:`alignment_residual` of an ``emkit align`` output against a phantom's truth.

    Parameters
    ----------
    field_url : the ``field`` layer ``emkit align`` wrote (2 channels dy, dx; the image's grid).
    phantom_dir : the phantom's folder (``emkit phantom DIR [--unaligned]``): its
        ``gt/displacement.npz`` (clean frame → image), ``gt/fields.npz`` (an unaligned phantom:
        where sections were imaged) and ``masks/*`` (the defects, image frame).

    Returns
    -------
    the dict of :func:`alignment_residual`, with ``unaligned_median_px`` (the residual of no
    alignment at all, over the same pixels) and ``field``.
    """
    import io

    from cloudfiles import CloudFiles

    from ..align.fields import invert, warp_labels
    from ..defects import DEFECT_KINDS
    from ..io import Layer, join_url, layer_exists

    gt = CloudFiles(join_url(phantom_dir, "gt"))
    raw = gt.get("displacement.npz")
    if raw is None:
        raise InputError(f"{join_url(phantom_dir)} has no gt/displacement.npz: not a phantom folder "
                         "(emkit phantom DIR --unaligned)")
    with np.load(io.BytesIO(raw)) as z:
        disp = np.stack([z["dy"], z["dx"]], axis=1).astype(np.float32)  # (z, 2, y, x)
    truth = invert(disp, iterations=60)
    layer = Layer.open(field_url)
    if layer.num_channels != 2:
        raise InputError(f"{layer.url} has {layer.num_channels} channels; an alignment field has 2 (dy, dx)")
    fields = layer.read().transpose(1, 0, 2, 3)
    if fields.shape != truth.shape:
        raise InputError(f"the field {layer.url} is {fields.shape[0]}×{fields.shape[2]}×{fields.shape[3]}, the "
                         f"phantom {truth.shape[0]}×{truth.shape[2]}×{truth.shape[3]}")
    where = np.ones((truth.shape[0],) + truth.shape[2:], bool)
    raw = gt.get("fields.npz")
    if raw is not None:
        with np.load(io.BytesIO(raw)) as z:
            where &= warp_labels(z["valid"], truth) > 0
    for kind in DEFECT_KINDS:
        url = join_url(phantom_dir, "masks", kind)
        if layer_exists(url):
            where &= ~(warp_labels(Layer.open(url).read(), truth) > 0)
    where[0] = False
    out = alignment_residual(fields, truth, where)
    out["unaligned_median_px"] = alignment_residual(np.zeros_like(truth), truth, where)["median_px"]
    out["field"] = layer.url
    return out
