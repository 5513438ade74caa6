"""``emkit tune SEG_INPUT GT_URL --out FILE``: search segmentation parameters on an annotated crop."""
from __future__ import annotations

import json

from .helpfmt import ExamplesHelpFormatter

DESCRIPTION = """\
Search watershed and agglomeration parameters and the cut threshold on an annotated crop and
write them to a JSON parameter file that `emkit segment --params FILE` uses:
  {"watershed": {...}, "agglomeration": {...}, "threshold": T, "scores": {...}, "tuned_on": {...}}
SEG_INPUT is what `emkit segment` takes (an affinities layer, a probability layer with
affinity_z/y/x channels, or a 1-channel boundary-probability layer); GT_URL a segmentation layer
with the same size, voxel offset and resolution (label 0 = unlabelled, not scored). A small
coordinate search (emkit.segment.tune): every parameter set is segmented and every cut of its
merge history scored (adapted Rand error, or VOI with --key voi); sets are ranked by how they hold
on unseen data (cut chosen on one half of the crop, scored on the other; cut off by 2x in odds).
Tune on one part of your annotation (--bbox) and check on another: the score on the part tuned on
is optimistic. The search starts from the default parameters, or for a 1-channel boundary map
from emkit.segment.params.BOUNDARY_MAP_WATERSHED (made for such saturated maps).
"""

EPILOG = """\
examples:
  emkit tune data/ph/affinities data/ph/gt/image_frame/segmentation --out data/ph/tuned_arand.json --bbox 0:16,0:128,0:128
  emkit segment data/ph/affinities data/ph/seg_tuned_arand --params data/ph/tuned_arand.json --workers 0
  emkit tune data/ph/affinities data/ph/gt/image_frame/segmentation --out data/ph/tuned_voi.json --key voi --bbox 0:16,0:128,0:128
"""


def register(sub) -> None:
    p = sub.add_parser(
        "tune", help="search watershed/agglomeration parameters and threshold on an annotated crop",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("seg_input", metavar="SEG_INPUT", help="affinities (or boundary-probability) layer URL or path")
    p.add_argument("gt_url", metavar="GT_URL", help="ground-truth segmentation layer URL or path")
    p.add_argument("--out", required=True, metavar="FILE", help="parameter file to write (JSON)")
    p.add_argument("--bbox", metavar="Z0:Z1,Y0:Y1,X0:X1",
                   help="half-open box in voxels (layer coordinates, voxel offset included) to tune on; default: all")
    p.add_argument("--key", choices=("arand", "voi"), default="arand", help="score to minimise (default arand)")
    p.add_argument("--thresholds", metavar="T,T,...",
                   help="cuts to score (mean affinity); default 0.01 ... 0.95 (23 values)")
    p.add_argument("--rounds", type=int, default=2, metavar="N", help="rounds of the coordinate search (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing parameter file")
    p.add_argument("--quiet", action="store_true", help="do not print each parameter set as it is scored")
    p.set_defaults(func=run)


def run(args) -> int:
    import os
    import sys

    from ..errors import InputError, LayerExistsError
    from ..geometry import parse_bbox
    from ..io import Layer, check_same_grid
    from ..segment.params import BOUNDARY_MAP_WATERSHED
    from ..segment.pipeline import open_segment_input
    from ..segment.tune import DEFAULT_THRESHOLDS, save_params, tune

    out = os.fspath(args.out)
    local = out[len("file://"):] if out.startswith("file://") else out
    if "://" not in local and os.path.exists(local) and not args.overwrite:
        raise LayerExistsError(f"{out} exists; pass --overwrite to replace it")
    if args.thresholds:
        try:
            ts = tuple(float(t) for t in args.thresholds.split(","))
        except ValueError:
            raise InputError(f"--thresholds must be comma-separated numbers in [0, 1], got {args.thresholds!r}") from None
    else:
        ts = DEFAULT_THRESHOLDS
    layer, source, form = open_segment_input(args.seg_input)
    gt = Layer.open(args.gt_url)
    check_same_grid(layer, gt, what="ground truth")
    if gt.kind.name != "segmentation":
        raise InputError(f"{gt.url} is a {gt.kind.name} layer; expected a segmentation layer as ground truth")
    bbox = parse_bbox(args.bbox) if args.bbox else layer.bbox
    if bbox.empty or not layer.bbox.contains(bbox):
        raise InputError(f"--bbox {bbox} is empty or not inside the layer's {layer.bbox} (layer coordinates)")
    aff = source.read(bbox.translate(tuple(-int(o) for o in layer.voxel_offset)))
    labels = gt.read(bbox)
    if labels.ndim == 4:
        labels = labels[0]

    def show(row):
        if not args.quiet:
            w = row["watershed"]
            print(f"  high {w['high']:g} low {w['low']:g} merge_affinity {w['merge_affinity']:g} size_threshold "
                  f"{w['size_threshold']} dust_size {w['dust_size']} {row['agglomeration']}: best {args.key} "
                  f"{row['best_' + args.key]:.4f}, cross-validated {row['cv_' + args.key]:.4f}, cut {row['threshold']:g} "
                  f"({row['supervoxels']} supervoxels)", file=sys.stderr, flush=True)

    # a boundary map's affinities are saturated: start from the parameters made for them
    start = BOUNDARY_MAP_WATERSHED if form == "boundary probability" else None
    res = tune(aff, labels, watershed_params=start, thresholds=ts, key=args.key, rounds=args.rounds, progress=show)
    content = res.to_dict(tuned_on={"input": layer.url, "input_form": form, "ground_truth": gt.url,
                                    "bbox": str(bbox), "voxels": int(labels.size)})
    save_params(out, content, overwrite=args.overwrite)
    print(json.dumps({"out": out, "threshold": content["threshold"], "watershed": content["watershed"],
                      "agglomeration": content["agglomeration"], "scores": content["scores"],
                      "tuned_on": content["tuned_on"]}, indent=2))
    return 0
