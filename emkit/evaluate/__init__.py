"""Scores of a segmentation against ground truth: VOI, adapted Rand error, worst objects; per-class IoU of
semantic labels."""
from emkit.evaluate.metrics import (
    Contingency,
    adapted_rand_error,
    contingency,
    evaluate,
    voi,
    worst_merges,
    worst_splits,
)
from emkit.evaluate.sweep import best_threshold, cut_contingency, sweep
from emkit.evaluate.semantic import SEMANTIC_CLASS_NAMES, semantic_classes, semantic_iou

__all__ = ["Contingency", "contingency", "voi", "adapted_rand_error", "worst_splits", "worst_merges", "evaluate",
           "sweep", "cut_contingency", "best_threshold", "semantic_iou", "semantic_classes", "SEMANTIC_CLASS_NAMES"]
from emkit.evaluate.synapses import (  # noqa: E402
    CleftScores,
    cleft_precision_recall,
    connectivity_scores,
    segment_map,
    synapse_scores,
    synapse_scores_dirs,
)

__all__ += ["CleftScores", "cleft_precision_recall", "synapse_scores", "synapse_scores_dirs", "connectivity_scores",
            "segment_map"]
from emkit.evaluate.alignment import alignment_residual, alignment_residual_dirs  # noqa: E402

__all__ += ["alignment_residual", "alignment_residual_dirs"]
