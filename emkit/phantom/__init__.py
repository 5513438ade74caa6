"""Synthetic serial-section EM of neural tissue with dense ground truth and simulated defects.

``make_phantom`` builds it in memory, ``write_phantom`` writes it as Precomputed layers.
Neurites are tubes along random smooth 3D paths packed by an additively weighted Voronoi
labelling (:mod:`.neurites`, :mod:`.raster`), with organelles (:mod:`.organelles`) and synapses
(:mod:`.synapses`), rendered like TEM (:mod:`.render`); defects come from :mod:`emkit.defects`.
``make_unaligned`` (:mod:`.unaligned`) moves its sections as before alignment, with the true fields.
"""
from .model import Phantom, make_phantom
from .params import PhantomParams
from .unaligned import Unaligned, UnalignedParams, make_unaligned, read_fields
from .writer import write_phantom

__all__ = ["make_phantom", "write_phantom", "Phantom", "PhantomParams", "make_unaligned", "Unaligned",
           "UnalignedParams", "read_fields"]
