"""Semantic scores over layers, chunk by chunk: the layer form of :func:`emkit.evaluate.semantic_iou`.

The prediction is either a class-label layer (one integer channel, classes 0..5) or the semantic
net's probability layer (five float channels in class order, as ``emkit infer semantic`` writes
it), which is turned into classes by :func:`emkit.evaluate.semantic_classes` chunk by chunk.
Confusion tables of the chunks add up, so the result equals the array form on the whole volume.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..geometry import Bbox, chunk_grid
from .semantic import SEMANTIC_CLASS_NAMES, iou_from_confusion, semantic_classes, semantic_confusion

__all__ = ["semantic_iou_layers", "read_semantic_classes"]

#: voxels (z, y, x) read at a time: a few hundred MB of float32 probabilities at most.
DEFAULT_CHUNK = (64, 512, 512)


def _is_probability(layer) -> bool:
    return layer.num_channels == len(SEMANTIC_CLASS_NAMES) and np.issubdtype(layer.dtype, np.floating)


def _check_prediction(layer) -> None:
    if _is_probability(layer):
        return
    if layer.num_channels == 1 and np.issubdtype(layer.dtype, np.integer):
        return
    raise InputError(f"{layer.url} must be semantic classes (one integer channel, 0..5) or the semantic net's "
                     f"probabilities (5 float channels); it has {layer.num_channels} channel(s) of {layer.dtype}")


def read_semantic_classes(layer, bbox: Bbox) -> np.ndarray:
    """Classes ``(z, y, x)`` (uint8, 0..5) in ``bbox`` of a class layer or a 5-channel probability layer."""
    _check_prediction(layer)
    a = layer.read(bbox)
    if _is_probability(layer):
        return semantic_classes(a)
    if a.size and (int(a.min()) < 0 or int(a.max()) > 5):
        raise InputError(f"{layer.url} holds values {int(a.min())}..{int(a.max())} in {bbox}; semantic classes are 0..5")
    return a.astype(np.uint8)


def semantic_iou_layers(pred_url, gt_url, *, bbox: Bbox | None = None, mask_url=None, ignore_gt=(0,),
                        chunk_size=DEFAULT_CHUNK, progress: bool = False) -> dict:
    """Per-class IoU of a predicted semantic layer against a ground-truth class layer.

    Parameters
    ----------
    pred_url : class layer (integer, 0..5) or 5-channel probability layer (argmax per voxel).
    gt_url : ground-truth class layer (integer, 0..5; 0 = unlabelled, not counted).
    bbox : box in layer coordinates (voxel offset included), default the whole layer.
    mask_url : optional mask layer; only voxels where it is nonzero are counted.

    All layers must share size, voxel offset and resolution (:func:`emkit.io.check_same_grid`;
    :class:`InputError` naming the differing value otherwise).
    ignore_gt : ground-truth classes left out (default 0).
    chunk_size : (z, y, x) voxels read at a time.
    progress : tqdm bar over chunks.

    Returns
    -------
    dict as :func:`emkit.evaluate.semantic_iou`, plus ``pred``, ``gt`` (URLs), ``bbox`` and
    ``prediction`` (``"probabilities"`` or ``"classes"``).
    """
    from ..io import Layer

    pred, gt = Layer.open(pred_url), Layer.open(gt_url)
    mask = None if mask_url is None else Layer.open(mask_url)
    from ..io import check_same_grid

    check_same_grid(pred, gt, what="semantic ground truth")
    check_same_grid(pred, mask, what="mask")
    _check_prediction(pred)
    if gt.num_channels != 1 or not np.issubdtype(gt.dtype, np.integer):
        raise InputError(f"ground truth {gt.url} must be one integer channel of classes 0..5; it has "
                         f"{gt.num_channels} channel(s) of {gt.dtype}")
    box = pred.bbox if bbox is None else bbox
    if not pred.bbox.contains(box):
        raise InputError(f"bbox {box} is not inside the layers' bounds {pred.bbox}")
    boxes = list(chunk_grid(box, chunk_size))
    if progress:
        from tqdm.auto import tqdm

        boxes = tqdm(boxes, desc="semantic IoU", unit="chunk")
    conf = np.zeros((6, 6), np.int64)
    for b in boxes:
        g = gt.read(b)
        conf += semantic_confusion(read_semantic_classes(pred, b), g.astype(np.int64), ignore_gt=ignore_gt,
                                   mask=None if mask is None else mask.read(b))
    res = iou_from_confusion(conf)
    return {"pred": pred.url, "gt": gt.url, "bbox": str(box),
            "prediction": "probabilities" if _is_probability(pred) else "classes", **res}
