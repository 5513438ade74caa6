"""``emkit import SRC DEST_URL --kind KIND``: a file (npz, npy, HDF5/CREMI, tiff, zarr) into a layer."""
from __future__ import annotations

import sys
import time

from .helpfmt import ExamplesHelpFormatter

EPILOG = """\
examples:
  emkit import tests/data/real_em/flyem_fib_10nm_crop_8x128x128.tif data/fib/image --kind image --resolution 10,10,10
  emkit import crop.npz data/crop/segmentation --kind segmentation --key data
"""


def register(sub) -> None:
    p = sub.add_parser(
        "import", help="import an array from npz/npy/HDF5/tiff/zarr into a Precomputed layer",
        description="Import an array (axes (c,) z, y, x) from .npz, .npy, HDF5 (incl. CREMI), a tiff "
                    "stack (multi-page file or folder of single-page files) or zarr into a new "
                    "Precomputed layer. Values are converted to the kind's dtype only when that is "
                    "exact (see --rescale for images).",
        epilog=EPILOG, formatter_class=ExamplesHelpFormatter)
    p.add_argument("src", metavar="SRC", help="input file or folder")
    p.add_argument("dest", metavar="DEST_URL", help="layer to create: local path, file://, gs:// or s3://")
    p.add_argument("--kind", required=True, metavar="KIND",
                   help="image (uint8), segmentation (uint64), mask (uint8 0/1), affinities (float32, 3 ch), "
                        "probability (float32, N ch; a uint8 0..255 map is stored as value/255)")
    p.add_argument("--key", metavar="NAME",
                   help="array inside an npz/HDF5/zarr file, e.g. volumes/raw (default: the only array; "
                        "CREMI: volumes/raw for image, volumes/labels/neuron_ids for segmentation)")
    p.add_argument("--resolution", metavar="Z,Y,X",
                   help="voxel size in nm (default: from the file, else 40,8,8)")
    p.add_argument("--offset", metavar="Z,Y,X", help="voxel offset of the first voxel (default: from the file, else 0,0,0)")
    p.add_argument("--chunk", metavar="Z,Y,X", help="storage chunk size in voxels (default 16,128,128)")
    p.add_argument("--encoding", metavar="ENC",
                   help="Precomputed encoding (default per kind: compressed_segmentation for segmentation, raw otherwise)")
    p.add_argument("--rescale", action="store_true",
                   help="image only: map non-uint8 input (uint16, float, ...) to 0-255; without it such input "
                        "is refused")
    p.add_argument("--rescale-method", choices=["percentile", "minmax"], default="percentile",
                   help="with --rescale: map the 0.1 and 99.9 percentiles (default) or the min and max to 0 and 255")
    p.add_argument("--overwrite", action="store_true", help="replace an existing layer at DEST_URL")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import warnings

    from ..geometry import parse_vec3
    from ..io.convert import import_volume
    from ..io.kinds import get_kind

    get_kind(args.kind)  # a bad kind fails before anything is read
    resolution = parse_vec3(args.resolution, "--resolution", positive=True, dtype=float) if args.resolution else None
    offset = parse_vec3(args.offset, "--offset") if args.offset else None
    chunk = parse_vec3(args.chunk, "--chunk", positive=True) if args.chunk else None
    t0 = time.perf_counter()
    def show(message, category, *rest, **kw):  # notes as one line each, when they happen
        print(f"emkit import: note: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = show
        layer = import_volume(args.src, args.dest, args.kind, key=args.key, resolution=resolution, offset=offset,
                              chunk_size=chunk, overwrite=args.overwrite, progress=not args.quiet,
                              rescale=args.rescale_method if args.rescale else False, encoding=args.encoding)
    dt = time.perf_counter() - t0
    print(f"imported {args.src} -> {layer.url}: kind {layer.kind.name}, size {_zyx(layer.size)} (z,y,x), "
          f"{layer.num_channels} channel(s), resolution {_zyx(layer.resolution)} nm, offset {_zyx(layer.voxel_offset)}, "
          f"chunk {_zyx(layer.chunk_size)}, {layer.encoding}, in {dt:.1f} s")
    return 0


def _zyx(v) -> str:
    return ",".join(f"{x:g}" for x in v)
