"""``emkit evaluate SEG_URL GT_URL``: score a segmentation (or, with ``--semantic``, semantic labels;
with ``--synapses``, a synapse output folder) against ground truth, as JSON."""
from __future__ import annotations

import json
import math

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit evaluate data/ph/seg/segmentation data/ph/gt/image_frame/segmentation
  emkit evaluate --semantic data/ph/semantic_prob data/ph/gt/image_frame/semantic
  emkit evaluate --synapses data/ph/synapses_oracle data/ph
"""


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a segmentation against ground truth (VOI, adapted Rand, worst objects) as JSON",
        description="Compare a segmentation layer with a ground-truth segmentation layer and print JSON: "
                    "voi_split, voi_merge, voi (bits), arand (adapted Rand error), its precision and recall, "
                    "and the worst split (ground-truth ids) and merged (segmentation ids) objects. Voxels "
                    "whose ground truth is 0 are not counted. Both layers must have the same size, voxel "
                    "offset and resolution. With --semantic, SEG_URL holds semantic classes (one integer "
                    "channel, 0..5) or the semantic net's probabilities (5 channels, as 'emkit infer semantic' "
                    "writes them; the most probable class is taken) and GT_URL the true classes; the JSON gives "
                    "the IoU of each class (soma, axon, dendrite, glia, vessel) and their mean, over voxels "
                    "whose true class is not 0. With --synapses, SEG_URL is an `emkit synapses` output folder and GT_URL "
                    "a phantom dataset folder (gt/synapses.parquet, gt/clefts; or another synapses output folder): "
                    "synapse precision, recall and F1 (overlap >= 1 voxel, after the pipeline's 700 nm merge), "
                    "partner-assignment accuracy over matched synapses (partner ids of another segmentation "
                    "mapped to the true segments they overlap most) and the wiring diagram compared edge by "
                    "edge (found, missed, spurious; weighted by synapse count).",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("seg_url", metavar="SEG_URL", help="segmentation layer URL or local path")
    p.add_argument("gt_url", metavar="GT_URL", help="ground-truth segmentation layer URL or local path")
    p.add_argument("--bbox", metavar="Z0:Z1,Y0:Y1,X0:X1",
                   help="half-open box in voxels in layer coordinates (voxel offset included); default: all")
    p.add_argument("--worst", metavar="K", type=int, default=10,
                   help="how many worst split and merged objects to list (default 10)")
    p.add_argument("--semantic", action="store_true",
                   help="score semantic labels (per-class IoU) instead of a segmentation")
    p.add_argument("--synapses", action="store_true",
                   help="score an `emkit synapses` output folder (SEG_URL) against a phantom dataset folder (GT_URL)")
    p.add_argument("--mask", metavar="URL", help="with --semantic: count only voxels where this mask layer is nonzero")
    p.set_defaults(func=run)


def _check_same_grid(seg, gt) -> None:
    from ..errors import InputError
    from ..io import check_same_grid

    check_same_grid(seg, gt, what="ground truth")
    for layer in (seg, gt):
        if layer.kind.name != "segmentation":
            raise InputError(f"{layer.url} is a {layer.kind.name} layer; expected a segmentation layer")


def _json_safe(value):
    """NaN and infinities become null (so the output is valid JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run(args) -> int:
    from ..errors import InputError
    from ..evaluate import evaluate
    from ..geometry import parse_bbox
    from ..io import Layer

    if args.worst < 0:
        raise InputError(f"--worst must be >= 0, got {args.worst}")
    if args.synapses:
        if args.semantic or args.mask or args.bbox:
            raise InputError("--synapses takes no --semantic, --mask or --bbox")
        from ..evaluate.synapses import synapse_scores_dirs

        res = synapse_scores_dirs(args.seg_url, args.gt_url)
        print(json.dumps(_json_safe(res), indent=2, allow_nan=False))
        return 0
    if args.semantic:
        from ..evaluate.semantic_layers import semantic_iou_layers

        res = semantic_iou_layers(args.seg_url, args.gt_url, bbox=parse_bbox(args.bbox) if args.bbox else None,
                                  mask_url=args.mask)
        print(json.dumps(_json_safe(res), indent=2, allow_nan=False))
        return 0
    if args.mask:
        raise InputError("--mask is for --semantic scores only")
    seg = Layer.open(args.seg_url)
    gt = Layer.open(args.gt_url)
    _check_same_grid(seg, gt)
    bbox = parse_bbox(args.bbox) if args.bbox else seg.bbox
    res = evaluate(seg.read(bbox), gt.read(bbox), k=args.worst)
    out = {"seg": seg.url, "gt": gt.url, "bbox": str(bbox), **res}
    print(json.dumps(_json_safe(out), indent=2, allow_nan=False))
    return 0
