"""Training targets and their loss masks, computed from (augmented) ground-truth patches.

Every function returns ``(target, valid)``: float32 arrays of the same shape ``(C, z, y, x)``;
``valid`` is 1 where the target is known and the loss counts, 0 elsewhere.

Conventions: affinity channels as in :mod:`emkit.affinity` (offset o links v and v − o);
``voxel_mask`` (z, y, x) is 1 where the voxel may count (0: masked out, e.g. ``masks/<name>``).
Unlabelled voxels (label 0) are either ignored (``background="ignore"``, default: sparse or
partial annotation, vessel lumen of the phantom) or taken as boundary (``"boundary"``: every
edge touching label 0 has target 0 and counts). ``"auto"`` (:func:`resolve_background`) picks
"boundary" when label 0 is a thin layer that separates the bodies everywhere (no two bodies touch,
as in FlyEM's FIB-SEM ground truth, where membranes are labelled 0) — there "ignore" would drop
every edge between two bodies and leave the net nothing to learn — and "ignore" otherwise.
"""
from __future__ import annotations

import numpy as np

from ..affinity import NN_OFFSETS, affinities_from_labels
from ..errors import InputError

__all__ = ["affinity_targets", "binary_target", "cleft_target", "zero_separates_labels", "resolve_background",
           "vessel_wall_target",
           "semantic_targets", "make_targets",
           "N_SEMANTIC", "VESSEL_CLASS"]

N_SEMANTIC = 5
"""Semantic classes 1..5: soma+nucleus, axon, dendrite, glia, blood vessel (0: background)."""
VESSEL_CLASS = 5


def _voxel_valid(shape, voxel_mask):
    if voxel_mask is None:
        return np.ones(shape, bool)
    m = np.asarray(voxel_mask)
    if m.shape != tuple(shape):
        raise InputError(f"voxel_mask shape {m.shape} differs from the labels' shape {tuple(shape)}")
    return m.astype(bool)


def zero_separates_labels(labels, axes=(0, 1, 2)) -> bool:
    """True when label 0 separates the bodies everywhere: at least two bodies, some voxels of
    label 0, and no two different non-zero labels face-adjacent along ``axes`` (default z, y and
    x; (1, 2) for labels drawn section by section).

    Ground truth drawn this way (membranes labelled 0 between the bodies) needs
    ``background="boundary"``: with "ignore" every edge between two bodies touches label 0 and
    would be dropped from the loss.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise InputError(f"labels must be a (z, y, x) array, got shape {lab.shape}")
    if not (lab == 0).any():
        return False
    nz = lab[lab != 0]
    if nz.size == 0 or (nz == nz.flat[0]).all():
        return False
    for ax in axes:
        a = np.moveaxis(lab, ax, 0)
        u, v = a[1:], a[:-1]
        if np.any((u != v) & (u != 0) & (v != 0)):
            return False
    return True


def resolve_background(background: str, label_arrays, axes=(0, 1, 2)) -> str:
    """``"ignore"`` or ``"boundary"`` for the setting ``background`` (``"auto"``: "boundary" when
    :func:`zero_separates_labels` (along ``axes``) holds for every array of ``label_arrays`` that
    has two bodies, and for at least one; else "ignore")."""
    if background in ("ignore", "boundary"):
        return background
    if background != "auto":
        raise InputError(f"background must be 'auto', 'ignore' or 'boundary', got {background!r}")
    verdicts = []
    for lab in label_arrays:
        lab = np.asarray(lab)
        if len(np.unique(lab[lab != 0])) < 2:
            continue
        verdicts.append(zero_separates_labels(lab, axes))
    return "boundary" if verdicts and all(verdicts) else "ignore"


def affinity_targets(labels, offsets=NN_OFFSETS, voxel_mask=None, background: str = "ignore", planar: bool = False):
    """Affinity targets of a label patch and where they are valid.

    Parameters
    ----------
    labels : (z, y, x) integer array, 0 = unlabelled/background.
    offsets : (dz, dy, dx) per channel (default nearest neighbours z, y, x).
    voxel_mask : (z, y, x), optional; edges with an end outside it do not count.
    background : "ignore" (edges touching label 0 do not count) or "boundary" (they count, target 0).
    planar : the labels were drawn section by section (2D ids, e.g. from per-section membrane
        masks; nothing says which ids continue across sections): every channel whose offset
        crosses sections (dz != 0) is not valid anywhere (loss-masked).

    Returns
    -------
    target, valid : (len(offsets), z, y, x) float32. An edge is valid when both ends lie inside
    the patch, inside ``voxel_mask`` and (with ``"ignore"``) are both labelled.
    """
    if background not in ("ignore", "boundary"):
        raise InputError(f"background must be 'ignore' or 'boundary', got {background!r}")
    labels = np.asarray(labels)
    target = affinities_from_labels(labels, offsets)
    ok = _voxel_valid(labels.shape, voxel_mask)
    if background == "ignore":
        ok = ok & (labels != 0)
    # "valid" is an affinity of the indicator: both ends inside the patch and ok
    valid = affinities_from_labels(ok.astype(np.uint8), offsets)
    if planar:
        for c, o in enumerate(offsets):
            if o[0] != 0:
                valid[c] = 0
    return target, valid


def binary_target(mask_array, voxel_mask=None):
    """(1, z, y, x) target of a binary layer (e.g. gt/myelin, nonzero = positive); all voxels in
    ``voxel_mask`` are valid."""
    a = np.asarray(mask_array)
    t = (a != 0).astype(np.float32)[None]
    v = _voxel_valid(a.shape, voxel_mask).astype(np.float32)[None]
    return t, v


def cleft_target(clefts, voxel_mask=None):
    """(1, z, y, x) synaptic-cleft target: 1 where ``clefts`` (cleft ids, or a 0/1 mask) is
    nonzero, 0 elsewhere; every voxel in ``voxel_mask`` is valid (paper, Methods *Synapse
    detection*: each voxel "synaptic" or "non-synaptic", binary cross-entropy)."""
    a = np.asarray(clefts)
    if a.ndim != 3:
        raise InputError(f"clefts must be a (z, y, x) array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise InputError(f"clefts must be integer cleft ids (0 = none) or a boolean mask, got dtype {a.dtype}")
    return binary_target(a, voxel_mask)


def vessel_wall_target(semantic, labels, voxel_mask=None):
    """(1, z, y, x) blood-vessel wall target: semantic class 5 with a cell id (the lumen has
    id 0 in the phantom), valid wherever ``voxel_mask`` allows."""
    sem = np.asarray(semantic)
    lab = np.asarray(labels)
    if sem.shape != lab.shape:
        raise InputError(f"semantic shape {sem.shape} differs from labels shape {lab.shape}")
    t = ((sem == VESSEL_CLASS) & (lab != 0)).astype(np.float32)[None]
    v = _voxel_valid(sem.shape, voxel_mask).astype(np.float32)[None]
    return t, v


def semantic_targets(semantic, voxel_mask=None):
    """(5, z, y, x) one-hot of classes 1..5; voxels of class 0 (unlabelled) do not count."""
    sem = np.asarray(semantic)
    if sem.ndim != 3:
        raise InputError(f"semantic must be a (z, y, x) array, got shape {sem.shape}")
    if sem.size and int(sem.max()) > N_SEMANTIC:
        raise InputError(f"semantic classes must be 0..{N_SEMANTIC}, found {int(sem.max())}")
    t = np.stack([(sem == c) for c in range(1, N_SEMANTIC + 1)]).astype(np.float32)
    v = (_voxel_valid(sem.shape, voxel_mask) & (sem != 0)).astype(np.float32)
    return t, np.broadcast_to(v, t.shape).copy()


def make_targets(sample: dict, config, background: str = "ignore",
                 planar: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{head name: (target, valid)}`` for every head of ``config`` (a NetConfig).

    ``sample`` holds (z, y, x) arrays: ``labels`` (needed by affinity, long_range, vessel),
    ``semantic`` (semantic, vessel), ``myelin`` (myelin), ``clefts`` (cleft), optional ``mask``
    (1 = voxel counts).
    A head whose ground truth is missing from the sample raises InputError naming it.
    ``background`` and ``planar``: see :func:`affinity_targets`.
    """
    vm = sample.get("mask")
    out = {}

    def need(key, head):
        if sample.get(key) is None:
            raise InputError(f"head {head.name!r} (kind {head.kind}) needs ground truth {key!r}, which this "
                             f"dataset lacks (gt/{'segmentation' if key == 'labels' else key})")
        return sample[key]

    for h in config.heads:
        if h.kind == "affinity":
            out[h.name] = affinity_targets(need("labels", h), NN_OFFSETS, vm, background, planar)
        elif h.kind == "long_range":
            out[h.name] = affinity_targets(need("labels", h), config.offsets, vm, background, planar)
        elif h.kind == "myelin":
            out[h.name] = binary_target(need("myelin", h), vm)
        elif h.kind == "vessel":
            out[h.name] = vessel_wall_target(need("semantic", h), need("labels", h), vm)
        elif h.kind == "semantic":
            out[h.name] = semantic_targets(need("semantic", h), vm)
        elif h.kind == "cleft":
            out[h.name] = cleft_target(need("clefts", h), vm)
        else:  # pragma: no cover - HeadSpec validates kinds
            raise InputError(f"unknown head kind {h.kind!r}")
    return out
