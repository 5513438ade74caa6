"""Defect detection and segmentation masks (paper, Methods, *Segmentation masks*).

:mod:`.misalignment` — misalignment maps between each section and its neighbours, step/slip
classification; :mod:`.masks` — the boundary net's input and output masks; :mod:`.unet2d` — the
paper's 2D U-Net; :mod:`.defect_masks` — fold, crack and resin masks from it; :mod:`.train` —
training it on simulated defects (torch is imported only when a net runs).
"""
from .defect_masks import (DefectParams, block_px, defect_probabilities, detect_defects, detect_defects_layers,
                           predicted_mask_layers, predicted_masks)
from .masks import (consecutive_runs, segmentation_masks, segmentation_masks_layers, slip_interpolated_truth,
                    true_segmentation_masks)
from .misalignment import (MisalignmentParams, classify_misalignments, classify_regions, misaligned,
                           misalignment_maps, patch_extent, upsample_patches)

__all__ = ["MisalignmentParams", "misalignment_maps", "misaligned", "classify_misalignments", "classify_regions",
           "patch_extent", "upsample_patches", "segmentation_masks", "segmentation_masks_layers", "consecutive_runs",
           "true_segmentation_masks", "slip_interpolated_truth",
           "DefectParams", "detect_defects", "detect_defects_layers", "defect_probabilities", "predicted_masks",
           "predicted_mask_layers", "block_px"]
