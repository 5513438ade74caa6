"""Typed parameters of the phantom (:class:`PhantomParams`).

Lengths are in nm, densities per µm³ of tissue, intensities in grey levels (0-255). Defaults
give cortical neuropil as it looks in serial-section TEM at (40, 8, 8) nm: thin axons of
100-200 nm diameter, dendrites of 0.5-1.5 µm with spines, a few myelinated axons, glia filling
what is left, and about one synapse per µm³ (cortex has ~1 synapse/µm³).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import InputError

__all__ = ["PhantomParams"]


@dataclass(frozen=True)
class PhantomParams:
    """Parameters of :func:`emkit.phantom.make_phantom` (frozen; use ``dataclasses.replace``)."""

    # --- neurites (geometry) ----------------------------------------------------------------
    axon_radius_nm: tuple[float, float] = (50.0, 100.0)
    """Range of thin-axon radii (diameter 100-200 nm)."""
    axon_volume_fraction: float = 0.30
    """Fraction of the volume to fill with unmyelinated axon shafts (tube volume, boutons not counted)."""
    bouton_radius_nm: tuple[float, float] = (150.0, 260.0)
    """Radius of axonal swellings (boutons) that carry vesicles and make synapses."""
    bouton_spacing_nm: float = 3500.0
    """Mean distance between boutons along an axon."""
    dendrite_radius_nm: tuple[float, float] = (250.0, 650.0)
    """Range of dendrite shaft radii (diameter 0.5-1.3 µm)."""
    dendrite_volume_fraction: float = 0.22
    """Fraction of the volume to fill with dendrite shafts."""
    spine_spacing_nm: float = 900.0
    """Mean distance between spines along a dendrite."""
    spine_neck_radius_nm: tuple[float, float] = (40.0, 60.0)
    spine_neck_length_nm: tuple[float, float] = (350.0, 900.0)
    spine_head_radius_nm: tuple[float, float] = (150.0, 280.0)
    myelinated_per_100um3: float = 3.0
    """Number of myelinated axons per 100 µm³ (at least one when the volume is >= 20 µm³)."""
    myelin_axon_radius_nm: tuple[float, float] = (200.0, 350.0)
    """Radius of the axon inside the sheath."""
    myelin_sheath_nm: tuple[float, float] = (90.0, 150.0)
    """Thickness of the dark myelin sheath."""
    z_bias: float = 1.6
    """How much neurite directions favour the z axis (1 = isotropic; larger: more cross-sections)."""
    tortuosity: float = 0.25
    """Random turning of paths per step (radians-ish); larger = more wiggly neurites."""
    packing_margin_nm: float = 50.0
    """How far each neurite may grow beyond its tube radius to pack against its neighbours."""
    glia_per_um3: float = 0.6
    """Glial territories per µm³ that fill the space the neurites leave."""
    min_fragment_voxels: int = 40
    """Pieces of objects smaller than this are merged into a neighbour (no speckle in the GT)."""

    # --- big structures (only when the volume is large enough) -----------------------------
    soma_min_extent_nm: float = 3000.0
    """A soma (with nucleus) appears when y and x extents are both at least this."""
    soma_radius_nm: float = 2400.0
    nucleus_fraction: float = 0.62
    """Nucleus radius as a fraction of the soma radius."""
    vessel_min_extent_nm: float = 3000.0
    """A blood vessel appears when y and x extents are both at least this."""
    vessel_lumen_radius_nm: float = 900.0
    vessel_wall_nm: float = 300.0
    """Endothelial wall thickness around the lumen."""

    # --- organelles -------------------------------------------------------------------------
    mito_per_um: float = 1.3
    """Mitochondria per µm of dendrite (axons: 0.25 × this, thin axons none)."""
    mito_radius_nm: tuple[float, float] = (70.0, 140.0)
    mito_length_nm: tuple[float, float] = (300.0, 1400.0)
    er_per_um: float = 0.35
    """Tubules of endoplasmic reticulum per µm of dendrite length."""
    er_radius_nm: float = 22.0

    # --- synapses ---------------------------------------------------------------------------
    synapses_per_um3: float = 0.9
    cleft_radius_nm: tuple[float, float] = (110.0, 220.0)
    """Radius of the cleft (active zone) disc."""
    min_synapse_distance_nm: float = 450.0
    psd_thickness_nm: float = 32.0
    """Postsynaptic density: a dark layer this thick on the postsynaptic side."""
    vesicle_cloud_nm: float = 260.0
    """Vesicles lie within this distance of the cleft on the presynaptic side."""
    vesicle_radius_nm: float = 20.0
    vesicles_per_um2: float = 260.0
    """Vesicle density in a section of the vesicle cloud."""

    # --- rendering --------------------------------------------------------------------------
    cytoplasm_level: float = 158.0
    """Mean grey level of neurite cytoplasm."""
    object_level_jitter: float = 10.0
    """Per-object standard deviation of the cytoplasm level."""
    texture_amplitude: float = 20.0
    """Standard deviation of the fine cytoplasm texture."""
    membrane_level: float = 45.0
    membrane_strength: float = 0.82
    """How far membranes pull the grey level towards ``membrane_level`` (0-1)."""
    mito_level: float = 92.0
    myelin_level: float = 42.0
    nucleus_level: float = 150.0
    lumen_level: float = 222.0
    staining_variation: float = 0.07
    """Amplitude of the slow multiplicative staining field (fraction)."""
    section_gain_jitter: float = 0.035
    """Per-section brightness change (fraction), as sections are stained and imaged apart."""
    blur_px: float = 0.7
    """In-plane Gaussian point spread (pixels)."""
    noise_sigma: float = 11.0
    """Standard deviation of the additive imaging noise (grey levels)."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            vals = v if isinstance(v, tuple) else (v,)
            if any((not isinstance(x, (int, float))) or x < 0 for x in vals):
                raise InputError(f"PhantomParams.{f.name} must be a non-negative number (or a pair), got {v!r}")
            if isinstance(v, tuple) and (len(v) != 2 or v[0] > v[1]):
                raise InputError(f"PhantomParams.{f.name} must be a range (low, high) with low <= high, got {v!r}")
        for name in ("axon_volume_fraction", "dendrite_volume_fraction", "membrane_strength", "nucleus_fraction"):
            if getattr(self, name) > 1:
                raise InputError(f"PhantomParams.{name} must be between 0 and 1, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """JSON-able dict of the parameters."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "PhantomParams":
        """Inverse of :meth:`to_dict`; unknown keys raise InputError."""
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise InputError(f"unknown phantom parameter(s) {bad}; known: {', '.join(sorted(names))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
