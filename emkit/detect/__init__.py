"""Defect detection and segmentation masks (paper, Methods, *Segmentation masks*).

:mod:`.misalignment` — misalignment maps between each section and its neighbours, step/slip
classification; :mod:`.masks` — the boundary net's input and output masks.
"""
from .masks import consecutive_runs, segmentation_masks, segmentation_masks_layers
from .misalignment import (MisalignmentParams, classify_misalignments, classify_regions, misaligned,
                           misalignment_maps, patch_extent, upsample_patches)

__all__ = ["MisalignmentParams", "misalignment_maps", "misaligned", "classify_misalignments", "classify_regions",
           "patch_extent", "upsample_patches", "segmentation_masks", "segmentation_masks_layers", "consecutive_runs"]
