"""The :class:`Augmenter`: all of the paper's augmentations on one sample, with its exclusivity.

Order of application (each with its probability from :class:`AugmentParams`):

1. flip & rotation (one of 16 configurations) on the whole input;
2. brightness & contrast; 3. out-of-focus sections (both image only);
4. warping — or a plain crop — down to the output's (y, x) plus the misalignment context;
5. at most ONE of misalignment (step / slip interpolation), missing section,
   misalignment + missing, lost section, lost + missing (paper: mutually exclusive), after
   cutting z to the output's depth plus the sections a lost-type augmentation removes;
6. a final (y, x) crop to the output shape that avoids the border a shift uncovered.

The sampler asks :meth:`Augmenter.required_input_shape` for the patch to cut (extra sections
for lost sections, extra in-plane context for misalignment and warping), and the augmenter
returns a sample of exactly the output shape, always with a ``"mask"``.
"""
from __future__ import annotations

import math

import numpy as np

from emkit.errors import InputError
from emkit.geometry import as_vec3

from .ops import (brightness_contrast, draw_shift, flip_rotate, lost_missing, lost_section, misalignment,
                  misalignment_missing, missing_section, out_of_focus, warp)
from .params import EXCLUSIVE, AugmentParams, preset
from .sample import check_sample, crop, ensure_mask

__all__ = ["Augmenter"]


class Augmenter:
    """Random training augmentation of samples (dicts of (z, y, x) arrays).

    Parameters
    ----------
    params : :class:`AugmentParams`, a preset name (``"boundary"``, ``"semantic"``, ``"none"``)
        or None (boundary preset).
    rng : numpy Generator, an int seed, or None (fresh entropy). Same seed + same samples →
        same augmentations.

    Examples
    --------
    >>> aug = Augmenter("boundary", rng=0)
    >>> shape = aug.required_input_shape((16, 96, 96))     # cut patches of this size...
    >>> out = aug(sample, (16, 96, 96))                      # ...and get (16, 96, 96) back
    >>> [a["name"] for a in out["_applied"]]                 # what was applied
    """

    def __init__(self, params: AugmentParams | str | None = None, rng=None):
        if params is None:
            params = preset("boundary")
        elif isinstance(params, str):
            params = preset(params)
        if not isinstance(params, AugmentParams):
            raise InputError(f"params must be an AugmentParams or a preset name, got {type(params).__name__}")
        self.params = params
        if rng is None or isinstance(rng, (int, np.integer)):
            rng = np.random.default_rng(rng)
        if not isinstance(rng, np.random.Generator):
            raise InputError(f"rng must be a numpy Generator, an int seed or None, got {type(rng).__name__}")
        self.rng = rng

    # geometry -------------------------------------------------------------------------------
    @property
    def z_context(self) -> int:
        """Extra sections a sample needs: up to 3 lost sections, 2 for lost + missing."""
        p = self.params
        return max(3 if p.lost_section > 0 else 0, 2 if p.lost_missing > 0 else 0)

    @property
    def shift_context(self) -> int:
        """Extra voxels in y and in x for a misalignment: the largest d_max."""
        p = self.params
        return max(p.d_max) if (p.misalignment > 0 or p.misalignment_missing > 0) else 0

    def warp_context(self, output_yx: int) -> int:
        """Extra voxels in y and in x for the warp (both sides together) of a window of
        ``output_yx`` voxels (the output plus the misalignment context)."""
        p = self.params
        return 2 * math.ceil(p.warp_margin_fraction * output_yx) if p.warp > 0 else 0

    def _min_input(self, out) -> tuple[int, int, int]:
        oz, oy, ox = out
        m = self.shift_context + self.warp_context(max(oy, ox) + self.shift_context)
        return oz + self.z_context, oy + m, ox + m

    def required_input_shape(self, output_shape) -> tuple[int, int, int]:
        """Shape (z, y, x) of the patch to cut so that this augmenter returns ``output_shape``.

        Adds :attr:`z_context` sections and :attr:`shift_context` + :meth:`warp_context` voxels
        in y and x; when flips are on and y != x, y and x both take the larger size so that all
        16 flip/rotation configurations (with a y/x transpose) are possible.
        """
        out = as_vec3(output_shape, "output_shape", positive=True)
        p = self.params
        if out[0] < 3 and any(getattr(p, k) > 0 for k in EXCLUSIVE):
            raise InputError(f"output_shape {tuple(out)} has {out[0]} section(s); the section augmentations "
                             f"({', '.join(EXCLUSIVE)}) need at least 3 (or use the 'none' preset)")
        z, y, x = self._min_input(tuple(int(v) for v in out))
        if p.flip_rotate > 0 and y != x:
            y = x = max(y, x)
        return int(z), int(y), int(x)

    def output_shape_for(self, input_shape) -> tuple[int, int, int]:
        """The largest output shape a sample of ``input_shape`` (z, y, x) allows."""
        nz, ny, nx = (int(v) for v in as_vec3(input_shape, "input_shape", positive=True))
        oz = nz - self.z_context
        for m in range(max(ny, nx)):
            oy, ox = ny - self.shift_context - m, nx - self.shift_context - m
            if oy < 1 or ox < 1:
                break
            if self.warp_context(max(oy, ox) + self.shift_context) <= m:
                if oz >= 1:
                    return oz, oy, ox
                break
        raise InputError(f"a sample of shape {(nz, ny, nx)} is too small for this augmenter "
                         f"(context: {self.z_context} sections, {self.shift_context} + warp voxels in y/x)")

    # augmentation ---------------------------------------------------------------------------
    def _choose_exclusive(self) -> str | None:
        u = self.rng.random()
        acc = 0.0
        for name in EXCLUSIVE:
            acc += getattr(self.params, name)
            if u < acc:
                return name
        return None

    def __call__(self, sample: dict, output_shape=None) -> dict:
        """Augment ``sample`` (not modified) and return a new one of ``output_shape``.

        ``output_shape`` None takes the largest that the sample allows
        (:meth:`output_shape_for`). The result carries ``"_applied"``, the list of records of what
        was done (``[{"name": ..., ...}, ...]``), and a uint8 ``"mask"`` (ones when the input had
        none).
        """
        shape = check_sample(sample)
        out = self.output_shape_for(shape) if output_shape is None else tuple(
            int(v) for v in as_vec3(output_shape, "output_shape", positive=True))
        self.required_input_shape(out)                     # validates the output shape
        need = self._min_input(out)
        if any(s < n for s, n in zip(shape, need)):
            raise InputError(f"sample of shape {shape} is smaller than the {need} this augmenter needs for an "
                             f"output of {out}; cut patches of required_input_shape({out}) = "
                             f"{self.required_input_shape(out)}")
        p, rng = self.params, self.rng
        s = dict(sample)
        s["_applied"] = list(sample.get("_applied", []))
        if rng.random() < p.flip_rotate:
            s = flip_rotate(s, rng)
        if rng.random() < p.brightness_contrast:
            s = brightness_contrast(s, rng, contrast_factor=p.contrast_factor, brightness_factor=p.brightness_factor,
                                    per_section_probability=p.per_section_probability)
        if rng.random() < p.out_of_focus:
            s = out_of_focus(s, rng, max_sections=p.blur_max_sections, partial_probability=p.blur_partial_probability,
                             spec=p.defect_spec)
        # (y, x) down to output + misalignment context: warped, or a plain random crop
        wy, wx = out[1] + self.shift_context, out[2] + self.shift_context
        nz, ny, nx = s["image"].shape
        if rng.random() < p.warp:
            s = warp(s, rng, out_shape=(wy, wx), rotation_deg=p.warp_rotation_deg, shear=p.warp_shear,
                     scale=p.warp_scale, stretch=p.warp_stretch, twist_deg=p.warp_twist_deg)
        else:
            s = crop(s, (0, rng.integers(0, ny - wy + 1), rng.integers(0, nx - wx + 1)), (nz, wy, wx))
        # at most one of the exclusive section augmentations
        choice = self._choose_exclusive()
        single = double = False
        removed = 0
        if choice == "lost_section":
            c = int(rng.integers(0, 3))
            single, double = c != 1, c != 0
            removed = int(single) + 2 * int(double)
        elif choice == "lost_missing":
            removed = 2
        nz = s["image"].shape[0]
        s = crop(s, (rng.integers(0, nz - (out[0] + removed) + 1), 0, 0), (out[0] + removed, wy, wx))
        shift = (0, 0)
        if choice in ("misalignment", "misalignment_missing"):
            d = int(rng.choice(p.d_max))
            shift = draw_shift(rng, d)
            if choice == "misalignment":
                s = misalignment(s, rng, d_max=d, shift=shift, step_probability=p.step_probability,
                                 slip_target=p.slip_target)
            else:
                s = misalignment_missing(s, rng, d_max=d, shift=shift)
        elif choice == "missing_section":
            s = missing_section(s, rng, consecutive=p.missing_consecutive, max_single=p.missing_max_single,
                                partial_probability=p.missing_partial_probability, spec=p.defect_spec)
        elif choice == "lost_section":
            s = lost_section(s, rng, single=single, double=double)
        elif choice == "lost_missing":
            s = lost_missing(s, rng)
        # final (y, x) crop, away from the border a shift left uncovered
        starts = [0]
        for axis, d in ((1, shift[0]), (2, shift[1])):
            lo, hi = max(d, 0), s["image"].shape[axis] - out[axis] + min(d, 0)
            starts.append(int(rng.integers(lo, hi + 1)))
        s = crop(s, starts, out)
        s["mask"] = ensure_mask(s)
        return s

    def __repr__(self):
        return f"Augmenter(params={self.params!r})"
