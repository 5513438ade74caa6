"""Training augmentations of the paper (Methods, "Dataset augmentation"), built on :mod:`emkit.defects`.

(1) flip & rotation, (2) brightness & contrast, (3) warping, (4) misalignment (step p = 0.7 /
slip p = 0.3, severities d_max), (5) missing section, (6) out-of-focus section,
(7) misalignment + missing section, (8) lost section, (9) lost + missing section,
(10) slip interpolation — each a plain function ``(sample, rng, **kw) -> sample``
(:data:`AUGMENTATIONS`), and :class:`Augmenter`, which applies them all with the paper's
probabilities and exclusivity (:class:`AugmentParams`, presets ``"boundary"`` and ``"semantic"``).

Only numpy/scipy are imported (no torch).
"""
from __future__ import annotations

import numpy as np

from emkit.errors import InputError

from .augmenter import Augmenter
from .ops import (N_FLIP_ROTATE, brightness_contrast, draw_shift, flip_rotate, flip_rotate_array, invert_flip_rotate,
                  lost_missing, lost_section, misalignment, misalignment_missing, missing_section, out_of_focus,
                  slip_interpolation, warp, warp_field)
from .params import EXCLUSIVE, PRESETS, AugmentParams, preset
from .sample import check_sample, crop

__all__ = ["AUGMENTATIONS", "EXCLUSIVE", "PRESETS", "N_FLIP_ROTATE", "AugmentParams", "Augmenter", "preset",
           "augment_kwargs", "demo", "check_sample", "crop", "draw_shift",
           "flip_rotate", "invert_flip_rotate", "flip_rotate_array", "brightness_contrast", "warp", "warp_field",
           "misalignment", "missing_section", "out_of_focus", "misalignment_missing", "lost_section",
           "lost_missing", "slip_interpolation"]

AUGMENTATIONS = {
    "flip_rotate": flip_rotate,                     # (1)
    "brightness_contrast": brightness_contrast,     # (2)
    "warp": warp,                                   # (3)
    "misalignment": misalignment,                   # (4)
    "missing_section": missing_section,             # (5)
    "out_of_focus": out_of_focus,                   # (6)
    "misalignment_missing": misalignment_missing,   # (7)
    "lost_section": lost_section,                   # (8)
    "lost_missing": lost_missing,                   # (9)
    "slip_interpolation": slip_interpolation,       # (10)
}
"""The ten augmentations by name, in the paper's order."""


def augment_kwargs(name: str, params: AugmentParams | None = None) -> dict:
    """Keyword arguments of augmentation ``name`` taken from ``params`` (default: boundary preset);
    misalignments use the largest severity ``max(params.d_max)``."""
    p = preset("boundary") if params is None else params
    d = max(p.d_max)
    table = {
        "flip_rotate": {},
        "brightness_contrast": dict(contrast_factor=p.contrast_factor, brightness_factor=p.brightness_factor,
                                    per_section_probability=p.per_section_probability),
        "warp": dict(rotation_deg=p.warp_rotation_deg, shear=p.warp_shear, scale=p.warp_scale,
                     stretch=p.warp_stretch, twist_deg=p.warp_twist_deg),
        "misalignment": dict(d_max=d, kind="step"),
        "missing_section": dict(consecutive=p.missing_consecutive, max_single=p.missing_max_single,
                                partial_probability=p.missing_partial_probability, spec=p.defect_spec),
        "out_of_focus": dict(max_sections=p.blur_max_sections, partial_probability=p.blur_partial_probability,
                             spec=p.defect_spec),
        "misalignment_missing": dict(d_max=d),
        "lost_section": {},
        "lost_missing": {},
        "slip_interpolation": dict(d_max=d),
    }
    if name not in table:
        raise InputError(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENTATIONS)} (or 'all')")
    return table[name]


def demo(name: str, sample: dict, seed: int = 0, params: AugmentParams | None = None) -> tuple[dict, dict]:
    """``(before, after)`` samples for showing augmentation ``name`` on ``sample`` (explorer, notebooks).

    ``name`` is one of :data:`AUGMENTATIONS` (applied alone, with :func:`augment_kwargs`, to the
    whole sample) or ``"all"``: an :class:`Augmenter` with ``params`` on the sample, ``before``
    being the central crop of the sample to the augmenter's output shape.
    """
    rng = np.random.default_rng(int(seed))
    if name == "all":
        aug = Augmenter(params, rng)
        shape = check_sample(sample)
        out = aug.output_shape_for(shape)
        after = aug(sample, out)
        before = crop(sample, [(s - o) // 2 for s, o in zip(shape, out)], out)
        return before, after
    kw = augment_kwargs(name, params)
    return dict(sample), AUGMENTATIONS[name](sample, rng, **kw)
