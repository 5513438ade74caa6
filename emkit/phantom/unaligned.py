"""An unaligned phantom: what cutting, collection and imaging do to sections before alignment.

:func:`make_unaligned` takes an aligned volume (a :class:`~emkit.phantom.Phantom` or a plain
image ``(z, y, x)``) and moves every section in-plane by

* a rigid (optionally affine) offset: translation of tens of pixels, rotation of a few degrees
  about the section's centre, independent per section;
* a slow drift along z: a random walk of the translation, accumulated section by section;
* a smooth nonlinear distortion: a random field with a correlation length of tens of pixels
  and an amplitude of a few pixels, independent per section.

It records the true field of every section in the convention of :mod:`emkit.align.fields`
(and :mod:`emkit.defects`): ``fields[z]`` is float32 ``(2, y, x)``, ``(dy, dx)`` in pixels of the
image grid, on the *unaligned* grid::

    unaligned[z, y, x] == aligned[z, y - dy, x - dx]        (fields[z] = (dy, dx))

and ``inverse[z]`` (on the aligned grid) undoes it: ``warp(unaligned[z], inverse[z]) ≈
aligned[z]`` wherever the aligned pixel was imaged. ``inverse`` is what a perfect aligner
returns. With ``params.fix_reference`` (default) the first section is not moved, as
``emkit align`` keeps the first section as the reference, so an aligner's output can be
compared to the aligned volume and its fields to ``inverse`` directly.

Pixels that come from outside the aligned section read 0 (no data, like the border of a
real section's image); ``valid`` marks the rest.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields as dc_fields

import numpy as np

from ..errors import InputError

__all__ = ["UnalignedParams", "Unaligned", "make_unaligned", "section_matrices", "read_fields"]


@dataclass(frozen=True)
class UnalignedParams:
    """How far sections move before alignment (pixels of the image grid, degrees).

    Defaults give the "rough misalignment" of issue 9 §1 (paper, *Rough alignment*: sections
    are collected and imaged at offsets of tens of µm and rotations of a few degrees; at the
    8 nm phantom pixel, scaled down to a few tens of pixels so that a small phantom keeps most
    of its field of view).
    """

    shift_px: float = 12.0
    """Standard deviation of the per-section translation (each of y, x)."""
    max_shift_px: float = 30.0
    """Translations are clipped to this (each of y, x)."""
    rotation_deg: float = 1.0
    """Standard deviation of the per-section rotation about the section's centre."""
    max_rotation_deg: float = 3.0
    """Rotations are clipped to this."""
    affine: float = 0.0
    """Standard deviation of the non-rigid affine part (scale and shear, fraction; 0 = rigid)."""
    drift_px: float = 0.5
    """Standard deviation of the per-section step of the slow drift (a random walk along z)."""
    distortion_px: float = 1.5
    """RMS of the smooth nonlinear distortion (0 = none)."""
    distortion_length_px: float = 48.0
    """Correlation length of the distortion (Gaussian smoothing of white noise)."""
    fix_reference: bool = True
    """Leave the first section where it is (the reference of an aligner)."""

    def __post_init__(self):
        for f in dc_fields(self):
            v = getattr(self, f.name)
            if f.name != "fix_reference" and not (isinstance(v, (int, float)) and np.isfinite(v) and v >= 0):
                raise InputError(f"UnalignedParams.{f.name} must be a finite number >= 0, got {v!r}")
        if self.distortion_length_px <= 0:
            raise InputError(f"UnalignedParams.distortion_length_px must be > 0, got {self.distortion_length_px}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Unaligned:
    """Output of :func:`make_unaligned` (unpacks as ``image, fields, inverse``).

    image : the unaligned volume (z, y, x), dtype of the input.
    fields : float32 (z, 2, y, x): ``image[z, y, x] == aligned[z, y - dy, x - dx]`` (unaligned grid).
    inverse : float32 (z, 2, y, x): ``warp(image[z], inverse[z]) ≈ aligned[z]`` (aligned grid).
    valid : uint8 (z, y, x), 1 where ``image`` holds data of the aligned section.
    matrices : float64 (z, 2, 3): the rigid/affine part with its drift (convention of
        :func:`emkit.align.fields.affine_field`: unaligned pixel ``p`` reads the aligned section at
        ``matrices[z, :, :2] @ p + matrices[z, :, 2]``).
    phantom : for a Phantom input, the phantom with its image, masks and ``displacement`` (now
        clean → unaligned, the composition of the defects and ``fields``) in the unaligned frame;
        its ground truth stays in the clean, aligned frame. None for an image input.
    aligned : the input image (aligned frame).
    params, seed : what made it.
    """

    image: np.ndarray
    fields: np.ndarray
    inverse: np.ndarray
    valid: np.ndarray
    matrices: np.ndarray
    aligned: np.ndarray
    params: UnalignedParams
    seed: int
    phantom: object = None

    def __iter__(self):
        return iter((self.image, self.fields, self.inverse))


def section_matrices(nz: int, shape, params: UnalignedParams, rng) -> np.ndarray:
    """Random rigid/affine matrices (z, 2, 3) with drift, for sections of ``shape`` (y, x)."""
    c = (np.asarray(shape, float) - 1) / 2
    out = np.zeros((nz, 2, 3))
    drift = np.cumsum(rng.normal(0, params.drift_px, (nz, 2)), axis=0)
    t = np.clip(rng.normal(0, params.shift_px, (nz, 2)), -params.max_shift_px, params.max_shift_px)
    th = np.deg2rad(np.clip(rng.normal(0, params.rotation_deg, nz), -params.max_rotation_deg, params.max_rotation_deg))
    aff = rng.normal(0, params.affine, (nz, 3))
    if params.fix_reference:
        drift -= drift[0]
        t[0] = 0
        th[0] = 0
        aff[0] = 0
    for z in range(nz):
        R = np.array([[np.cos(th[z]), -np.sin(th[z])], [np.sin(th[z]), np.cos(th[z])]])
        S = np.array([[1 + aff[z, 0], aff[z, 2]], [0.0, 1 + aff[z, 1]]])
        A = R @ S
        out[z, :, :2] = A
        out[z, :, 2] = c - A @ c + t[z] + drift[z]
    return out


def _distortion(shape, params, rng) -> np.ndarray:
    """Smooth random (2, y, x) displacement with RMS ``distortion_px``."""
    from scipy.ndimage import gaussian_filter, zoom

    if params.distortion_px == 0:
        return np.zeros((2, *shape), np.float32)
    L = params.distortion_length_px
    step = max(1.0, L / 4)  # noise on a coarse grid, smoothed, then upsampled (cubic)
    cs = [int(np.ceil(s / step)) + 8 for s in shape]
    out = np.zeros((2, *shape), np.float32)
    for k in range(2):
        n = gaussian_filter(rng.normal(size=cs), L / step, mode="wrap")
        up = zoom(n, step, order=3)
        o = [(u - s) // 2 for u, s in zip(up.shape, shape)]
        out[k] = up[o[0]:o[0] + shape[0], o[1]:o[1] + shape[1]]
    rms = float(np.sqrt((out ** 2).sum(0).mean()))
    return out * (params.distortion_px / rms) if rms > 0 else out


def make_unaligned(phantom_or_image, *, params: UnalignedParams | None = None, seed: int = 0) -> Unaligned:
    """Move the sections of an aligned volume as cutting, collection and imaging do.

    Parameters
    ----------
    phantom_or_image : a :class:`~emkit.phantom.Phantom` (its ``image``, defects included, is
        moved; masks and ``displacement`` follow) or an image (z, y, x), uint8 or float.
    params : :class:`UnalignedParams` (pixels of the image grid, degrees).
    seed : everything is deterministic given the seed (and the input and params).

    Returns
    -------
    :class:`Unaligned` — ``image, fields, inverse = make_unaligned(...)`` also works. Fields are
    float32 ``(z, 2, y, x)`` (dy, dx) pixels; see the module docstring for the convention.
    """
    import torch

    from ..align import fields as F
    from .model import Phantom

    params = UnalignedParams() if params is None else params
    if not isinstance(params, UnalignedParams):
        raise InputError(f"params must be an UnalignedParams, got {type(params).__name__}")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be an integer, got {seed!r}") from None
    ph = phantom_or_image if isinstance(phantom_or_image, Phantom) else None
    image = np.asarray(ph.image if ph is not None else phantom_or_image)
    if image.ndim != 3 or min(image.shape[1:]) < 8:
        raise InputError(f"make_unaligned needs an image (z, y, x) of at least 8 pixels in y and x, got shape {image.shape}")
    if not (image.dtype == np.uint8 or np.issubdtype(image.dtype, np.floating)):
        raise InputError(f"make_unaligned works on uint8 or float images, got dtype {image.dtype}")
    nz, ny, nx = image.shape
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xA11]))
    mats = section_matrices(nz, (ny, nx), params, rng)
    with torch.no_grad():
        fld = F.affine_field(mats, (ny, nx)).astype(np.float32)
        for z in range(nz):
            if z == 0 and params.fix_reference:
                continue
            # the distortion is applied in the aligned section before the rigid move:
            # unaligned = warp(warp(aligned, distortion), rigid)
            fld[z] = F.compose(_distortion((ny, nx), params, rng), fld[z])
        inv = F.invert(fld, iterations=60, tol=1e-4).astype(np.float32)
        out = F.warp(image, fld)
        valid = F.warp_labels(np.ones(image.shape, np.uint8), fld)
        out = np.where(valid > 0, out, 0).astype(image.dtype)
        for z in range(nz):  # sections that do not move are copied exactly
            if not np.any(fld[z]):
                out[z], valid[z] = image[z], 1
    new_ph = None
    if ph is not None:
        masks = {k: F.warp_labels(m, fld) for k, m in ph.masks.items()}
        disp = np.ascontiguousarray(F.compose(np.moveaxis(ph.displacement, 0, 1), fld).transpose(1, 0, 2, 3))
        new_ph = dataclasses.replace(ph, image=out, masks=masks, displacement=disp.astype(np.float32))
    return Unaligned(image=out, fields=fld, inverse=inv, valid=valid, matrices=mats, aligned=image,
                     params=params, seed=seed, phantom=new_ph)


def read_fields(dataset) -> dict:
    """The true fields of an unaligned phantom dataset written by ``write_phantom`` /
    ``emkit phantom --unaligned``: ``{"field", "inverse", "matrices", "valid", "resolution_nm",
    "seed", "params"}`` (arrays as in :class:`Unaligned`; ``params`` a dict)."""
    import io
    import json

    from cloudfiles import CloudFiles

    from ..io import join_url

    raw = CloudFiles(join_url(dataset, "gt")).get("fields.npz")
    if raw is None:
        raise InputError(f"{join_url(dataset)} holds no gt/fields.npz (not an unaligned phantom: "
                         "emkit phantom --unaligned writes one)")
    with np.load(io.BytesIO(raw)) as z:
        out = {k: z[k] for k in z.files}
    out["params"] = json.loads(str(out["params"]))
    out["seed"] = int(out["seed"])
    return out
