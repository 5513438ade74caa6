"""``emkit demo [OUT_DIR]``: the pipeline on the built-in phantom, then a viewer link."""
from __future__ import annotations

import sys

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit demo data/demo --size 64,256,256 --serve no
"""


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the pipeline on the built-in phantom and print the scores and a viewer link",
        description="`emkit run` of the shipped phantom configuration (emkit/pipeline/configs/phantom.yaml; "
                    "`emkit run phantom` runs the same) into OUT_DIR, with the options below applied to it: "
                    "generate the phantom dataset (image, ground truth, defect masks), predict affinities (shipped "
                    "boundary net), segment them (watershed + constrained mean-affinity agglomeration; semantic "
                    "input per --semantic, none by default), find the synapses on that segmentation (shipped cleft "
                    "and partner nets; the phantom's true clefts/partners, labelled an oracle, where a net is not "
                    "installed), add pyramids, meshes and skeletons, score the segmentation, the synapses and the "
                    "wiring diagram against the phantom's, and serve everything in Neuroglancer on 127.0.0.1 "
                    "(meshes included). The ground truth is used only for scoring unless --semantic oracle asks "
                    "for it (the output then says 'oracle'). Stages done in OUT_DIR are reused, never "
                    "overwritten; a rerun with other options is refused, naming the changed fields, unless "
                    "--overwrite. OUT_DIR/provenance/ records what each stage used; `emkit status phantom "
                    "--output OUT_DIR` shows it.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("out_dir", nargs="?", default="demo-data", help="dataset folder or gs:// / s3:// prefix (default: demo-data)")
    p.add_argument("--size", default=None, help="phantom size z,y,x in voxels at 40,8,8 nm (default: 64,256,256)")
    p.add_argument("--seed", type=int, default=None, help="phantom random seed (default: 0)")
    p.add_argument("--defects", default=None, help="comma-separated defect kinds, 'default' (the default) or 'none'")
    p.add_argument("--model", default=None, help="boundary model name or checkpoint (default: shipped 'boundary')")
    p.add_argument("--semantic", choices=["none", "net", "oracle"], default="none",
                   help="semantic input of the agglomeration: none (default), net (the shipped semantic net's "
                        "probabilities, written to OUT_DIR/semantic) or oracle (the phantom's ground-truth classes: "
                        "an oracle run, labelled so; its scores are not the pipeline's)")
    p.add_argument("--semantic-model", default="semantic",
                   help="semantic model name or checkpoint for --semantic net (default: shipped 'semantic')")
    p.add_argument("--threshold", type=float, default=None, help="agglomeration threshold (mean affinity, default 0.5)")
    p.add_argument("--workers", type=int, default=None,
                   help="local dask workers shared by the stages (default 0: in process)")
    p.add_argument("--no-synapses", action="store_true", help="stop after the segmentation (no synapse stage)")
    p.add_argument("--cleft-model", default=None,
                   help="cleft net name or checkpoint (default: shipped 'cleft' if installed, else the true clefts)")
    p.add_argument("--partner-model", default=None,
                   help="partner net name or checkpoint (default: shipped 'partner' if installed, else the true partners)")
    p.add_argument("--unaligned", action="store_true",
                   help="move the phantom's sections as cutting and imaging do (rigid offsets, drift, smooth "
                        "distortion; `emkit phantom --unaligned`), add the align stage, and print the alignment "
                        "residual against the true fields; scores are then taken in the aligned frame")
    p.add_argument("--overwrite", action="store_true",
                   help="recompute the stages whose options changed (and those after them that read their outputs)")
    p.add_argument("--serve", choices=["auto", "yes", "no"], default="auto",
                   help="keep serving the viewer until Ctrl-C: yes, no, or auto (when run from a terminal)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..demo import run_demo
    from ..geometry import parse_vec3

    size = None if args.size is None else parse_vec3(args.size, "--size", positive=True)
    defects = (args.defects if args.defects in (None, "default", "none")
               else [d for d in args.defects.split(",") if d])
    res = run_demo(args.out_dir, size=size, seed=args.seed, defects=defects, model=args.model,
                   semantic=args.semantic, semantic_model=args.semantic_model, threshold=args.threshold,
                   workers=args.workers, synapses=not args.no_synapses, cleft_model=args.cleft_model,
                   partner_model=args.partner_model, unaligned=args.unaligned, overwrite=args.overwrite,
                   echo=print)
    if res.reused:
        print(f"reused from {res.out_dir}: {', '.join(res.reused)} (pass --overwrite to recompute)")
    print(f"affinities: {res.affinity_source}")
    print(f"semantic input: {res.semantic_source}")
    for stage, sec in res.timings.items():
        print(f"{stage:>13}: {sec:6.1f} s")
    s = res.scores
    label = " [oracle: ground-truth semantic labels; not the pipeline's score]" if res.oracle else ""
    if res.alignment is not None:
        a = res.alignment
        print(f"alignment vs the true fields: residual median {a['median_px']:.2f} px (unaligned "
              f"{a['unaligned_median_px']:.2f} px), 95th percentile {a['p95_px']:.2f} px, max {a['max_px']:.1f} px "
              f"(worst section z={a['worst_section']})")
    frame = "clean frame" if res.alignment is not None else "image frame"
    print(f"segmentation vs ground truth ({frame}){label}: adapted Rand error {s['arand']:.4f}, "
          f"VOI split {s['voi_split']:.3f}, VOI merge {s['voi_merge']:.3f} bits")
    if res.synapses is not None:
        syn = res.synapses
        sc, sm = syn["scores"], syn["summary"]
        print(f"clefts: {syn['sources']['cleft']}")
        print(f"partners: {syn['sources']['partner']}")
        acc = "n/a" if sc["partner_accuracy"] is None else f"{sc['partner_accuracy']:.3f}"
        olabel = " [oracle: ground-truth stand-in, see above]" if syn["oracle"] else ""
        print(f"synapses: {syn['n_synapses']} found{olabel}; vs the phantom's {sc['n_true']}: precision "
              f"{sc['precision']:.3f}, recall {sc['recall']:.3f}, partner accuracy {acc}")
        print(f"connectivity: {sm.get('neurons', 0)} neurons, {sm.get('edges', 0)} edges, {sm.get('synapses', 0)} "
              f"synapses; vs truth ({sc['edges_true']} edges): {sc['edges_found']} found, {sc['edges_missed']} "
              f"missed, {sc['edges_spurious']} spurious")
    if res.products:
        print("; ".join(f"{k}: {v}" for k, v in res.products.items()))
    print(f"dataset {res.out_dir}:")
    for name, url in res.layers.items():
        print(f"  {name:<28} {url}")

    from ..view import serve

    handle = serve(res.out_dir)
    print(f"\nNeuroglancer: {handle.url}")
    block = args.serve == "yes" or (args.serve == "auto" and sys.stdin.isatty())
    if block:
        print("serving on 127.0.0.1 — press Ctrl-C to stop")
        try:
            handle.wait()
        except KeyboardInterrupt:
            pass
    else:
        print(f"(the link works while a server runs: `emkit view {args.out_dir}` serves it again)")
    handle.stop()
    return 0
