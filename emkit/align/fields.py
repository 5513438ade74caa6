"""Displacement fields of serial sections, on torch (gradients flow), with numpy in/out.

Convention
----------
A field is float ``(2, y, x)`` for one section or ``(z, 2, y, x)`` for a stack: ``(dy, dx)`` in
**pixels of the grid it is defined on** (state the resolution next to it, e.g. ``resolution``
of the image layer, or the mip it was computed at). It is the convention of
:mod:`emkit.defects`: the field lives on the grid of the *output* image and says where each
output pixel's content comes from::

    warp(image, field)[y, x] == image[y - dy(y, x), x - dx(y, x)]

i.e. content moves by ``(+dy, +dx)``. A phantom's ``displacement`` (clean → damaged image) and
an aligner's field (unaligned → aligned image) are both such fields.

Rules that follow from it (all implemented and tested here):

* ``compose(f, g)``: warping by ``f`` then by ``g`` equals warping once by
  ``compose(f, g) = g + warp(f, g)``.
* ``invert(f)``: the ``g`` with ``compose(f, g) ≈ 0`` (``warp(warp(a, f), g) ≈ a``), found by
  the fixed-point iteration ``g ← -warp(f, g)``.
* ``resample(f, scale)``: the same motion on a grid ``scale`` times finer (``scale=2``: one mip
  finer; ``0.5``: one mip coarser). Pixel centres follow the mip pyramid convention (a coarse
  pixel ``i`` covers fine pixels ``[s·i, s·(i+1))``), values are multiplied by ``scale``.
* ``jacobian_det(f)``: determinant of the Jacobian of the sampling map ``p ↦ p - f(p)``; the
  field folds over (two output pixels read the same tissue in reverse order) where it is ≤ 0.

Every function takes numpy arrays or torch tensors and returns the type it was given (numpy
in → numpy out; torch in → torch out, differentiable with respect to the field and the image
where the operation is). Outside the input grid, images read ``cval`` (default 0) and fields
are extended by their border values.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["warp", "warp_labels", "compose", "invert", "resample", "identity", "affine_field",
           "field_to_affine", "jacobian_det", "folds", "smoothness", "norm", "to_torch", "to_numpy"]


# -- type plumbing ------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def to_torch(x, dtype=None):
    """``x`` as a torch tensor (float32 unless ``dtype``); tensors pass through (cast if asked)."""
    torch = _torch()
    if _is_torch(x):
        return x if dtype is None else x.to(dtype)
    a = np.asarray(x)
    if dtype is None:
        dtype = torch.float32
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64 if dtype == torch.float64 else np.float32)).to(dtype)


def to_numpy(x) -> np.ndarray:
    """``x`` as a numpy array (detached from any graph)."""
    if _is_torch(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _field(field, what="field"):
    """(N, 2, H, W) float tensor and whether the input was a single (2, H, W) field."""
    f = to_torch(field) if not _is_torch(field) else field
    if not f.is_floating_point():
        f = f.float()
    if f.ndim == 3 and f.shape[0] == 2:
        return f[None], True
    if f.ndim == 4 and f.shape[1] == 2:
        return f, False
    raise InputError(f"{what} must have shape (2, y, x) or (z, 2, y, x) with (dy, dx) first, got {tuple(f.shape)}")


def _out(t, like_numpy: bool, single: bool, dtype=None):
    if single:
        t = t[0]
    if like_numpy:
        a = t.detach().cpu().numpy()
        return a.astype(dtype) if dtype is not None else a
    return t


def _base_grid(h, w, like):
    torch = _torch()
    yy = torch.arange(h, dtype=like.dtype, device=like.device)
    xx = torch.arange(w, dtype=like.dtype, device=like.device)
    return torch.stack(torch.meshgrid(yy, xx, indexing="ij"))  # (2, H, W)


def _sample_grid(f):
    """grid_sample grid (N, H, W, 2) of the source points ``p - f(p)`` (align_corners=True)."""
    torch = _torch()
    n, _, h, w = f.shape
    src = _base_grid(h, w, f)[None] - f  # (N, 2, H, W) in pixels (y, x)
    gy = src[:, 0] * (2.0 / max(h - 1, 1)) - 1.0
    gx = src[:, 1] * (2.0 / max(w - 1, 1)) - 1.0
    return torch.stack([gx, gy], dim=-1)


def _sample(img, f, mode="bilinear", padding="zeros"):
    """img (N, C, H, W) sampled at p - f(p)."""
    F = _torch().nn.functional
    return F.grid_sample(img, _sample_grid(f), mode=mode, padding_mode=padding, align_corners=True)


# -- warping --------------------------------------------------------------------------------------
def warp(image, field, *, cval: float = 0.0, mode: str = "bilinear"):
    """Warp an image by a field: ``out[..., y, x] = image[..., y - dy, x - dx]`` (bilinear).

    Parameters
    ----------
    image : ``(y, x)`` or ``(c, y, x)`` with a ``(2, y, x)`` field; ``(z, y, x)`` or
        ``(z, c, y, x)`` with a ``(z, 2, y, x)`` field. Any real dtype (computed in float32;
        numpy integer images come back rounded and clipped to their dtype).
    field : (dy, dx) pixels on the output grid (see the module docstring). A field may also be
        another field (warping a field moves its vectors without changing them).
    cval : value read outside the image.
    mode : ``"bilinear"`` (images) or ``"nearest"`` (grid_sample's nearest; for labels use
        :func:`warp_labels`, exact for any dtype).

    Returns
    -------
    The warped image, same shape and type (numpy or torch) as ``image``.
    """
    f, single = _field(field)
    numpy_in = not _is_torch(image)
    img = to_torch(image) if numpy_in else image
    in_dtype = np.asarray(image).dtype if numpy_in else None
    if not img.is_floating_point():
        img = img.float()
    shape = tuple(img.shape)
    hw = tuple(f.shape[-2:])
    if tuple(shape[-2:]) != hw:
        raise InputError(f"image of shape {shape} and field of shape {tuple(f.shape)} differ in (y, x)")
    if single:
        if img.ndim not in (2, 3):
            raise InputError(f"a (2, y, x) field warps a (y, x) or (c, y, x) image, got shape {shape}")
        x = img.reshape(1, -1, *hw)
    else:
        if img.ndim not in (3, 4) or shape[0] != f.shape[0]:
            raise InputError(f"a field of shape {tuple(f.shape)} warps a (z, y, x) or (z, c, y, x) image with "
                             f"z={f.shape[0]}, got shape {shape}")
        x = img.reshape(shape[0], -1, *hw)
    f = f.to(x.dtype)
    if cval:
        out = _sample(x - cval, f, mode=mode) + cval
    else:
        out = _sample(x, f, mode=mode)
    out = out.reshape(shape)
    if numpy_in:
        a = out.detach().numpy()
        if np.issubdtype(in_dtype, np.integer):
            info = np.iinfo(in_dtype)
            a = np.clip(np.rint(a), info.min, info.max)
        return a.astype(in_dtype if np.issubdtype(in_dtype, np.number) else np.float32)
    return out


def _nearest_index(f):
    torch = _torch()
    n, _, h, w = f.shape
    src = _base_grid(h, w, f)[None] - f
    iy = torch.floor(src[:, 0] + 0.5).long()
    ix = torch.floor(src[:, 1] + 0.5).long()
    inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
    return iy.clamp(0, h - 1), ix.clamp(0, w - 1), inside


def warp_labels(labels, field, *, cval=0):
    """Warp labels (or masks) by a field, nearest neighbour: values are copied exactly.

    ``out[y, x] = labels[round(y - dy), round(x - dx)]`` (halves round up), ``cval`` outside.
    Shapes as in :func:`warp` (``(y, x)`` with a ``(2, y, x)`` field, ``(z, y, x)`` with a
    ``(z, 2, y, x)`` field). Any dtype, uint64 ids included (numpy); not differentiable.
    """
    f, single = _field(field)
    numpy_in = not _is_torch(labels)
    lab = np.asarray(labels) if numpy_in else labels
    shape = tuple(lab.shape)
    if shape[-2:] != tuple(f.shape[-2:]) or len(shape) != (2 if single else 3) or (not single and shape[0] != f.shape[0]):
        raise InputError(f"labels of shape {shape} do not fit a field of shape {tuple(f.shape)} "
                         "(expected (y, x) with (2, y, x), or (z, y, x) with (z, 2, y, x))")
    iy, ix, inside = _nearest_index(f.detach())
    lab3 = lab[None] if single else lab
    if numpy_in:
        iy, ix, inside = iy.numpy(), ix.numpy(), inside.numpy()
        zz = np.arange(lab3.shape[0])[:, None, None]
        out = np.where(inside, lab3[zz, iy, ix], np.asarray(cval, lab3.dtype))
    else:
        torch = _torch()
        zz = torch.arange(lab3.shape[0])[:, None, None]
        out = torch.where(inside, lab3[zz, iy, ix], torch.as_tensor(cval, dtype=lab3.dtype))
    return out[0] if single else out


# -- algebra ----------------------------------------------------------------------------------------
def _warp_field(f, g):
    """Field ``f`` (N,2,H,W) sampled at ``p - g(p)`` with border extension."""
    return _sample(f, g, padding="border")


def compose(first, second):
    """The field of warping by ``first`` and then by ``second``.

    ``warp(warp(a, first), second) == warp(a, compose(first, second))`` (up to interpolation);
    ``compose(first, second)(p) = second(p) + first(p - second(p))``. Both on the same grid.
    """
    numpy_in = not (_is_torch(first) or _is_torch(second))
    f, single = _field(first, "first")
    g, single2 = _field(second, "second")
    if f.shape != g.shape:
        raise InputError(f"cannot compose fields of shapes {tuple(f.shape)} and {tuple(g.shape)}")
    g = g.to(f.dtype)
    return _out(g + _warp_field(f, g), numpy_in, single)


def invert(field, *, iterations: int = 30, tol: float = 1e-3):
    """The inverse field: ``g`` with ``compose(field, g) ≈ 0``, so ``warp(warp(a, field), g) ≈ a``.

    Fixed-point iteration ``g ← -field(p - g(p))`` from ``g = -field``; it converges for fields
    whose Jacobian stays away from folding (``|∇field| < 1``), i.e. every smooth field an aligner
    makes. Stops after ``iterations`` or when no vector changes by more than ``tol`` px.
    Where the inverse reads ``field`` outside its grid the field's border value is used.
    """
    numpy_in = not _is_torch(field)
    f, single = _field(field)
    g = -f
    for _ in range(int(iterations)):
        new = -_warp_field(f, g)
        delta = (new - g).abs().max()
        g = new
        if float(delta) < tol:
            break
    return _out(g, numpy_in, single)


def identity(shape, *, like=None):
    """A zero field of ``(2, y, x)`` or ``(z, 2, y, x)`` shape (numpy, or torch when ``like`` is a tensor)."""
    if like is not None and _is_torch(like):
        return _torch().zeros(tuple(shape), dtype=like.dtype, device=like.device)
    return np.zeros(tuple(shape), np.float32)


def affine_field(matrix, shape):
    """The field of an affine map of pixel coordinates.

    ``matrix`` (2, 3) (or (z, 2, 3)) maps an output pixel ``p = (y, x)`` to the input pixel it
    reads: ``src = matrix[:, :2] @ p + matrix[:, 2]``; the field is ``p - src`` (module
    convention), shape ``(2, *shape)`` (or ``(z, 2, *shape)``). Differentiable in ``matrix``.
    """
    numpy_in = not _is_torch(matrix)
    m = to_torch(matrix) if numpy_in else matrix
    single = m.ndim == 2
    if single:
        m = m[None]
    if m.ndim != 3 or tuple(m.shape[1:]) != (2, 3):
        raise InputError(f"affine matrix must have shape (2, 3) or (z, 2, 3), got {tuple(m.shape)}")
    h, w = (int(s) for s in shape)
    p = _base_grid(h, w, m)  # (2, H, W)
    src = (m[:, :, :2] @ p.reshape(2, -1)[None]).reshape(m.shape[0], 2, h, w) + m[:, :, 2, None, None]
    return _out(p[None] - src, numpy_in, single)


def field_to_affine(field, mask=None) -> np.ndarray:
    """Least-squares affine matrix (2, 3) (convention of :func:`affine_field`) of a ``(2, y, x)``
    field over the pixels of ``mask`` (default all): the affine part of a field."""
    f = to_numpy(field).astype(np.float64)
    if f.ndim != 3 or f.shape[0] != 2:
        raise InputError(f"field_to_affine takes one (2, y, x) field, got shape {f.shape}")
    h, w = f.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sel = np.ones((h, w), bool) if mask is None else np.asarray(mask, bool)
    if sel.sum() < 3:
        raise InputError("field_to_affine needs at least 3 pixels in the mask")
    A = np.stack([yy[sel], xx[sel], np.ones(sel.sum())], 1)
    src = np.stack([yy[sel] - f[0][sel], xx[sel] - f[1][sel]], 1)
    sol, *_ = np.linalg.lstsq(A, src, rcond=None)
    return sol.T.copy()


def resample(field, scale: float, *, size=None):
    """The same motion on a grid ``scale`` times finer (2: one mip finer, 0.5: one mip coarser).

    Values are multiplied by ``scale``; the grid is resized with bilinear interpolation on
    pixel centres (``align_corners=False``; area-averaged when coarsening). ``size`` (y, x) of
    the new grid defaults to ``round(scale · old size)``.
    """
    torch = _torch()
    F = torch.nn.functional
    numpy_in = not _is_torch(field)
    f, single = _field(field)
    scale = float(scale)
    if not scale > 0:
        raise InputError(f"scale must be > 0, got {scale}")
    h, w = f.shape[-2:]
    size = (max(1, int(round(h * scale))), max(1, int(round(w * scale)))) if size is None else tuple(int(s) for s in size)
    if scale < 1 and h % size[0] == 0 and w % size[1] == 0 and h // size[0] == w // size[1]:
        out = F.avg_pool2d(f, h // size[0])
    else:
        out = F.interpolate(f, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    return _out(out * scale, numpy_in, single)


# -- measures ------------------------------------------------------------------------------------------
def _grads(f):
    """Central differences (edges one-sided) of f (N,2,H,W): d/dy, d/dx each (N,2,H,W)."""
    torch = _torch()
    gy, gx = torch.gradient(f, dim=(2, 3)) if min(f.shape[-2:]) > 1 else (torch.zeros_like(f), torch.zeros_like(f))
    return gy, gx


def jacobian_det(field):
    """Determinant of the Jacobian of the sampling map ``p ↦ p - field(p)``, shape ``(y, x)``
    (or ``(z, y, x)``). 1 for a translation or rotation, < 1 where tissue is stretched on the
    output, ≤ 0 where the field folds over."""
    numpy_in = not _is_torch(field)
    f, single = _field(field)
    gy, gx = _grads(f)
    a = 1 - gy[:, 0]   # d(y - dy)/dy
    b = -gx[:, 0]      # d(y - dy)/dx
    c = -gy[:, 1]      # d(x - dx)/dy
    d = 1 - gx[:, 1]   # d(x - dx)/dx
    return _out(a * d - b * c, numpy_in, single)


def folds(field, *, eps: float = 0.0):
    """Boolean map (``(y, x)`` or ``(z, y, x)``) of where the field folds over: ``det J ≤ eps``."""
    det = jacobian_det(field)
    return det <= eps


def smoothness(field, *, order: int = 1):
    """Mean squared finite difference of the field (px² per px², per section).

    ``order=1``: mean over pixels of ``|∂f/∂y|² + |∂f/∂x|²`` (summed over dy, dx) — 0 for a
    translation, ``2·(2 - 2 cos θ)`` for a rotation by θ. ``order=2``: the same of the second
    differences (bending; 0 for any affine field). Returns a scalar for a ``(2, y, x)`` field,
    ``(z,)`` for a stack; differentiable (usable as a loss penalty).
    """
    numpy_in = not _is_torch(field)
    f, single = _field(field)
    gy, gx = _grads(f)
    if order == 2:
        gyy, gyx = _grads(gy)
        _, gxx = _grads(gx)
        val = (gyy ** 2 + 2 * gyx ** 2 + gxx ** 2).sum(1).mean(dim=(1, 2))
    elif order == 1:
        val = (gy ** 2 + gx ** 2).sum(1).mean(dim=(1, 2))
    else:
        raise InputError(f"smoothness order must be 1 or 2, got {order}")
    if single:
        val = val[0]
    if numpy_in:
        return float(val) if single else val.detach().numpy()
    return val


def norm(field):
    """Length of every vector, ``(y, x)`` or ``(z, y, x)`` (px)."""
    numpy_in = not _is_torch(field)
    f, single = _field(field)
    return _out(f.pow(2).sum(1).sqrt(), numpy_in, single)
