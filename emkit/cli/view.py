"""``emkit view URL [URL…]``: open layers in Neuroglancer served from this machine."""
from __future__ import annotations

import sys

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit view data/ph
  emkit view data/sstem/image data/sstem/affinities --name em affinities --no-block
  emkit view data/ph/seg/segmentation --layout 3d
"""


def register(sub) -> None:
    p = sub.add_parser(
        "view", help="open layers (or a dataset folder) in Neuroglancer and print the link",
        description="Serve layers with Neuroglancer's Python server on 127.0.0.1 and print the viewer link. "
                    "A URL may be a layer (local path, file://, gs://, s3://) or a dataset folder, whose "
                    "layers (image, gt/segmentation, masks/…) are all added. Serves until Ctrl-C.",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("urls", nargs="+", metavar="URL", help="layer or dataset folder (local path or URL)")
    p.add_argument("--name", nargs="+", action="extend", metavar="NAME", dest="names",
                   help="display name for each URL (a dataset folder's name prefixes its layers)")
    p.add_argument("--port", type=int, default=0, help="port of the viewer page (default: any free port)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--layout", default="auto",
                   help="Neuroglancer layout: 4panel, xy, xz, yz, 3d, xy-3d (default auto: xy-3d when meshes "
                        "are shown, else 4panel)")
    p.add_argument("--segments", metavar="ID,ID",
                   help="segments to select, whose meshes show in 3D, e.g. --segments 12,40 (default: the 5 largest "
                        "segments of each segmentation layer that has meshes, e.g. from `emkit mesh`)")
    p.add_argument("--no-block", action="store_true",
                   help="print the link and return at once (the link works only while a server runs; for scripts "
                        "that check the layers open)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError
    from ..view import serve

    if not 0 <= args.port < 65536:
        raise InputError(f"--port must be in 0..65535, got {args.port}")
    handle = serve(args.urls, names=args.names, bind=args.bind, port=args.port, layout=args.layout,
                   segments=args.segments)
    try:  # a Ctrl-C from here on stops the server and exits 0
        for ref in handle.layers:
            where = f"  {ref.name:<24} {ref.kind:<13} {ref.url}"
            print(where, file=sys.stderr)
            ids = handle.segments.get(ref.name)
            if ids:
                what = "meshes of segments" if ref.mesh else "selected segments"
                print(f"  {'':<24} {what} {','.join(map(str, ids))}", file=sys.stderr)
        print(handle.url, flush=True)
        if args.no_block:
            return 0
        print("serving; press Ctrl-C to stop", file=sys.stderr, flush=True)
        handle.wait()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        handle.stop()
    return 0
