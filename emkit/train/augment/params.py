"""Typed parameters of the training augmentations, with the paper's values as defaults.

Paper: Methods, "Boundary detection / Training details" (the list of ten augmentations and the
misalignment severities d_max = 10/30/50 voxels, step p = 0.7 / slip p = 0.3), "Semantic
labeling" (five augmentations, d_max = 5/15/25) and "Dataset augmentation" (what each one does,
the missing-section counts, the out-of-focus counts, lost sections, and the mutual exclusivity of
misalignment / missing / misalignment + missing / lost / lost + missing).

Where the paper gives no number (how often each augmentation fires, the brightness/contrast and
warp strengths), the defaults are ours and the field says so; the brightness/contrast factors
follow Lee et al. 2017 (ElektroNN-style contrast/brightness/gamma perturbation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from emkit.defects import DefectSpec
from emkit.errors import InputError

__all__ = ["AugmentParams", "EXCLUSIVE", "preset", "PRESETS"]

EXCLUSIVE = ("misalignment", "missing_section", "misalignment_missing", "lost_section", "lost_missing")
"""The augmentations of which at most one is applied per sample (paper, Dataset augmentation,
"Lost + missing section": these five are mutually exclusive)."""

_PROBS = ("flip_rotate", "brightness_contrast", "warp", "out_of_focus", *EXCLUSIVE, "step_probability",
          "per_section_probability", "missing_partial_probability", "blur_partial_probability")


@dataclass(frozen=True)
class AugmentParams:
    """Which augmentations fire, how often and how strongly. Probabilities are per sample.

    The five :data:`EXCLUSIVE` probabilities are the chances of picking each one of them (at most
    one per sample), so they must sum to at most 1.
    """

    # (1) flip & rotation ----------------------------------------------------------------------
    flip_rotate: float = 1.0
    """Probability of drawing one of the 16 configurations (flip z, y, x; transpose y/x), identity
    included (paper: every patch is flipped/rotated at random)."""

    # (2) brightness & contrast ----------------------------------------------------------------
    brightness_contrast: float = 0.5
    """Probability (ours; the paper gives none)."""
    contrast_factor: float = 0.3
    """Contrast: image × (1 + (u − ½)·factor), u ~ U[0, 1) (Lee et al. 2017)."""
    brightness_factor: float = 0.3
    """Brightness: image + (u − ½)·factor (image in [0, 1]; Lee et al. 2017)."""
    per_section_probability: float = 0.5
    """Chance of perturbing each section independently rather than the whole patch ("mix" of 2D
    and 3D perturbation, Lee et al. 2017)."""

    # (3) warping --------------------------------------------------------------------------------
    warp: float = 0.5
    """Probability (ours)."""
    warp_rotation_deg: float = 15.0
    """Max |continuous in-plane rotation| (degrees; ours)."""
    warp_shear: float = 0.1
    """Max |shear| (dimensionless; ours)."""
    warp_scale: float = 0.1
    """Max |relative scale change| per axis (ours)."""
    warp_stretch: float = 0.1
    """Max |perspective stretch|: relative change of x scale across y and of y scale across x."""
    warp_twist_deg: float = 5.0
    """Max |twist|: extra rotation from the first to the last section (degrees; ours)."""
    warp_margin_fraction: float = 0.15
    """In-plane context the warp asks for, each side, as a fraction of the larger side of the
    window it warps (output + misalignment context); warps too strong for it are weakened until
    the window samples only real context (ours)."""

    # (4) misalignment (10) slip interpolation -------------------------------------------------
    misalignment: float = 0.3
    """Probability (ours); exclusive group."""
    d_max: tuple[int, ...] = (10, 30, 50)
    """Severities: maximum displacement (voxels, in y and x); one level is picked uniformly per
    sample and each of |dy|, |dx| is uniform on the integers [0, d_max] (paper: boundary net)."""
    step_probability: float = 0.7
    """Chance of a "step" misalignment; otherwise "slip" (p = 0.3) (paper)."""
    slip_target: bool = False
    """False: "slip interpolation" (Lee et al. 2021; paper) — the slip is in the input only and
    the target is untouched. True: the slip of Lee et al. 2017, applied to the target too."""

    # (5) missing section ----------------------------------------------------------------------
    missing_section: float = 0.2
    """Probability (ours); exclusive group."""
    missing_consecutive: int = 2
    """Consecutive missing sections always simulated (paper: two)."""
    missing_max_single: int = 7
    """Up to this many further independent single missing sections (paper: seven)."""
    missing_partial_probability: float = 0.5
    """Chance that a missing section is partial rather than full (paper: randomly chosen)."""

    # (6) out-of-focus section -----------------------------------------------------------------
    out_of_focus: float = 0.3
    """Probability (ours); not exclusive."""
    blur_max_sections: int = 7
    """Up to this many independent single blurred sections (paper: seven)."""
    blur_partial_probability: float = 0.5
    """Chance that the blur covers only part of a section (paper: randomly chosen)."""

    # (7) misalignment + missing, (8) lost, (9) lost + missing --------------------------------
    misalignment_missing: float = 0.1
    """Probability (ours); exclusive group."""
    lost_section: float = 0.1
    """Probability (ours); exclusive group. Single and double lost sections are drawn
    independently, at least one of them (1 to 3 sections lost; paper)."""
    lost_missing: float = 0.1
    """Probability (ours); exclusive group."""

    defect_spec: DefectSpec = field(default_factory=DefectSpec)
    """Sizes used by :mod:`emkit.defects` (partial-missing rectangle, blur sigma)."""

    def __post_init__(self):
        for name in _PROBS:
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise InputError(f"AugmentParams.{name} must be a probability in [0, 1], got {v!r}")
        total = sum(getattr(self, k) for k in EXCLUSIVE)
        if total > 1.0 + 1e-9:
            raise InputError(f"AugmentParams: the exclusive probabilities {EXCLUSIVE} sum to {total:.3g} > 1")
        d = tuple(self.d_max) if isinstance(self.d_max, (list, tuple)) else (self.d_max,)
        if not d or any(int(x) != x or x < 0 for x in d):
            raise InputError(f"AugmentParams.d_max must be non-negative integers (voxels), got {self.d_max!r}")
        object.__setattr__(self, "d_max", tuple(int(x) for x in d))
        for name in ("missing_consecutive", "missing_max_single", "blur_max_sections"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise InputError(f"AugmentParams.{name} must be a non-negative integer, got {v!r}")
        for name in ("contrast_factor", "brightness_factor", "warp_rotation_deg", "warp_shear", "warp_scale",
                     "warp_stretch", "warp_twist_deg", "warp_margin_fraction"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise InputError(f"AugmentParams.{name} must be a non-negative number, got {v!r}")
        if self.warp_scale >= 1 or self.warp_shear >= 1 or self.warp_stretch >= 1:
            raise InputError("AugmentParams.warp_scale, warp_shear and warp_stretch must be < 1, got "
                             f"{self.warp_scale}, {self.warp_shear}, {self.warp_stretch}")
        if not isinstance(self.defect_spec, DefectSpec):
            raise InputError(f"AugmentParams.defect_spec must be a DefectSpec, got {type(self.defect_spec).__name__}")

    # JSON round trip --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AugmentParams":
        """Inverse of :meth:`to_dict`; unknown keys raise InputError."""
        names = {f.name for f in fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise InputError(f"unknown AugmentParams field(s) {bad}; valid: {sorted(names)}")
        kw = dict(d)
        if "defect_spec" in kw and isinstance(kw["defect_spec"], dict):
            kw["defect_spec"] = DefectSpec(**{k: tuple(v) if isinstance(v, list) else v
                                              for k, v in kw["defect_spec"].items()})
        if "d_max" in kw:
            kw["d_max"] = tuple(kw["d_max"]) if isinstance(kw["d_max"], (list, tuple)) else (kw["d_max"],)
        return cls(**kw)

    def replace(self, **changes) -> "AugmentParams":
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)


PRESETS = {
    # Boundary net: all ten augmentations, d_max 10/30/50 (paper, Boundary detection).
    "boundary": AugmentParams(),
    # Semantic net: flip & rotate, brightness & contrast, misalignment, missing section,
    # misalignment + missing (paper, Semantic labeling), d_max 5/15/25. Slip interpolation is not in
    # that list, so the slip type is that of Lee et al. 2017 (target slipped too).
    "semantic": AugmentParams(warp=0.0, out_of_focus=0.0, lost_section=0.0, lost_missing=0.0, d_max=(5, 15, 25),
                              slip_target=True, misalignment=0.4, missing_section=0.3, misalignment_missing=0.1),
    # Cleft net: the paper's list for it is the semantic net's — flip & rotate, brightness & contrast,
    # misalignment, missing section, misalignment + missing (Methods, Synapse detection); the paper gives
    # no d_max for it, so the semantic net's 5/15/25 (and its target slip) are kept.
    "cleft": AugmentParams(warp=0.0, out_of_focus=0.0, lost_section=0.0, lost_missing=0.0, d_max=(5, 15, 25),
                           slip_target=True, misalignment=0.4, missing_section=0.3, misalignment_missing=0.1),
    # Isotropic FIB-SEM (ours; the paper's data was ssTEM): the volume is milled, not cut into sections,
    # so the section defects of ssTEM (lost sections, large misalignments) are rare; keep flips, intensity,
    # warps and mild section-wise blur / misalignment / missing slices (d_max 2/4/8 voxels).
    "isotropic": AugmentParams(out_of_focus=0.1, blur_max_sections=2, misalignment=0.1, d_max=(2, 4, 8),
                               missing_section=0.05, missing_max_single=1, misalignment_missing=0.0,
                               lost_section=0.0, lost_missing=0.0),
    # Nothing but identity (for validation samples and tests).
    "none": AugmentParams(flip_rotate=0.0, brightness_contrast=0.0, warp=0.0, out_of_focus=0.0, misalignment=0.0,
                          missing_section=0.0, misalignment_missing=0.0, lost_section=0.0, lost_missing=0.0),
}


def preset(name: str) -> AugmentParams:
    """The named preset: ``"boundary"`` (d_max 10/30/50), ``"semantic"`` and ``"cleft"`` (5/15/25), ``"isotropic"``
    (FIB-SEM: no lost sections, d_max 2/4/8) or ``"none"``."""
    try:
        return PRESETS[str(name).lower()]
    except KeyError:
        raise InputError(f"unknown augmentation preset {name!r}; valid: {', '.join(PRESETS)}") from None
