"""Write a :class:`~emkit.phantom.Phantom` as a dataset folder of Precomputed layers.

Layout under ``out_dir`` (a local path, ``file://``, ``gs://`` or ``s3://`` prefix)::

    image                 kind image (uint8): the imaged volume, defects included
    gt/clean_image        kind image: the same before defects
    gt/segmentation       kind segmentation (uint64): cell ids, clean frame
    gt/semantic           kind segmentation (uint64, so Neuroglancer colours the classes):
                          0 background, 1 soma+nucleus, 2 axon, 3 dendrite, 4 glia, 5 blood vessel
    gt/clefts             kind segmentation: cleft ids (= synapses.parquet cleft_id)
    gt/image_frame/segmentation, gt/image_frame/semantic
                          the same ground truth warped into the image frame (what the image
                          shows, misalignments included): score a segmentation of ``image``
                          against these
    masks/<defect>        kind mask (uint8), one per defect kind applied, image frame
    gt/synapses.parquet   cleft_id, pre_id, post_id, centroid_{z,y,x}_nm, size_voxels
    gt/displacement.npz   dy, dx (float32, z, y, x voxels; image[z,y,x] shows clean[z,y-dy,x-dx]),
                          kept_sections, resolution_nm
    gt/phantom.json       seed, size, resolution, parameters, defects and where they are

An unaligned phantom (:func:`emkit.phantom.make_unaligned`; ``emkit phantom --unaligned``) adds::

    gt/aligned_image      kind image: the image before the sections were moved (aligned frame,
                          defects included): what an aligner should produce
    gt/fields.npz         field, inverse: float32 (z, 2, y, x), (dy, dx) pixels at resolution_nm
                          (y, x): image[z,y,x] shows aligned_image[z, y-dy, x-dx] (field, on the
                          unaligned grid); warping image by inverse (on the aligned grid) gives
                          back aligned_image (emkit.align.fields.warp); matrices (z, 2, 3) the
                          rigid part with drift; valid uint8 (z, y, x) where image holds data;
                          resolution_nm, seed, params (JSON)

and then ``image``, ``masks/*``, ``gt/image_frame/*`` are in the unaligned frame and
``gt/displacement.npz`` goes from the clean frame to the unaligned image (defects, then the
section moves), so its rule above still holds.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np

from ..errors import InputError, LayerExistsError
from ..geometry import as_vec3
from ..io import Layer, join_url, layer_exists
from .model import Phantom

__all__ = ["write_phantom", "phantom_layers", "existing_outputs"]

_FILES = ("gt/synapses.parquet", "gt/displacement.npz", "gt/phantom.json")
_UNALIGNED_FILES = ("gt/fields.npz",)


def phantom_layers(phantom: Phantom) -> dict[str, tuple[str, np.ndarray]]:
    """``{relative path: (kind, array)}`` of the layers :func:`write_phantom` writes."""
    layers = {
        "image": ("image", phantom.image),
        "gt/clean_image": ("image", phantom.clean_image),
        "gt/segmentation": ("segmentation", phantom.segmentation),
        "gt/semantic": ("segmentation", phantom.semantic.astype(np.uint64)),
        "gt/clefts": ("segmentation", phantom.clefts),
        "gt/image_frame/segmentation": ("segmentation", phantom.in_image_frame(phantom.segmentation)),
        "gt/image_frame/semantic": ("segmentation", phantom.in_image_frame(phantom.semantic).astype(np.uint64)),
    }
    for kind, mask in phantom.masks.items():
        layers[f"masks/{kind}"] = ("mask", mask.astype(np.uint8))
    return layers


def existing_outputs(out_dir, defect_kinds=(), *, unaligned: bool = False) -> list[str]:
    """Outputs of a phantom with these defect kinds (``unaligned``: and those of an unaligned
    phantom) that already exist under ``out_dir`` (lets a caller refuse before spending time
    generating)."""
    names = ["image", "gt/clean_image", "gt/segmentation", "gt/semantic", "gt/clefts",
             "gt/image_frame/segmentation", "gt/image_frame/semantic"]
    names += [f"masks/{k}" for k in dict.fromkeys(defect_kinds)]
    if unaligned:
        names.append("gt/aligned_image")
    return _existing(out_dir, names, _FILES + (_UNALIGNED_FILES if unaligned else ()))


def _existing(out_dir, names, files=_FILES) -> list[str]:
    from cloudfiles import CloudFiles

    found = [n for n in names if layer_exists(join_url(out_dir, n))]
    cf = CloudFiles(join_url(out_dir))
    found += [f for f in files if cf.exists(f)]
    return found


def write_phantom(phantom, out_dir: str | os.PathLike, *, overwrite: bool = False, chunk_size=None,
                  progress: bool = True) -> dict[str, str]:
    """Write ``phantom`` as Precomputed layers and files under ``out_dir`` (layout in the module
    docstring).

    Parameters
    ----------
    phantom : a :class:`Phantom`, or an :class:`~emkit.phantom.unaligned.Unaligned` made from
        one (then its unaligned phantom is written, with ``gt/aligned_image`` and
        ``gt/fields.npz``).
    out_dir : local folder or ``file://``, ``gs://``, ``s3://`` prefix.
    overwrite : replace outputs that exist. Without it, if any output exists, nothing at all is
        written and :class:`~emkit.errors.LayerExistsError` names what exists. (Mask layers of
        defects not in this phantom are left alone either way.)
    chunk_size : storage chunk (z, y, x) of every layer; default (16, 128, 128) clipped to the size.
    progress : show a progress bar.

    Returns
    -------
    ``{name: url}`` of everything written (names as in the layout, e.g. ``gt/segmentation``).
    """
    from cloudfiles import CloudFiles
    from tqdm.auto import tqdm

    from .unaligned import Unaligned

    unaligned = None
    if isinstance(phantom, Unaligned):
        if phantom.phantom is None:
            raise InputError("write_phantom needs an Unaligned made from a Phantom (make_unaligned(phantom)), "
                             "not from a plain image")
        unaligned, phantom = phantom, phantom.phantom
    if not isinstance(phantom, Phantom):
        raise InputError(f"write_phantom needs a Phantom, got {type(phantom).__name__}")
    if chunk_size is not None:
        chunk_size = as_vec3(chunk_size, "chunk size", positive=True)
    layers = phantom_layers(phantom)
    files = _FILES
    if unaligned is not None:
        layers["gt/aligned_image"] = ("image", unaligned.aligned)
        files = _FILES + _UNALIGNED_FILES
    if not overwrite:
        found = _existing(out_dir, layers, files)
        if found:
            raise LayerExistsError(f"{join_url(out_dir)} already holds {', '.join(found)}; "
                                   "pass overwrite=True (--overwrite) to replace them")
    written: dict[str, str] = {}
    size = phantom.image.shape
    bar = tqdm(total=len(layers) + len(files), desc="writing phantom", unit="layer", disable=not progress)
    for name, (kind, arr) in layers.items():
        url = join_url(out_dir, name)
        layer = Layer.create(url, kind, size, resolution=phantom.resolution, chunk_size=chunk_size,
                             overwrite=overwrite, description=f"emkit phantom (seed {phantom.seed}): {name}")
        layer.write(np.ascontiguousarray(arr))
        written[name] = url
        bar.update(1)
    gt = CloudFiles(join_url(out_dir, "gt"))
    buf = io.BytesIO()
    phantom.synapses.to_parquet(buf, index=False)
    gt.put("synapses.parquet", buf.getvalue(), content_type="application/vnd.apache.parquet", compress=None)
    bar.update(1)
    buf = io.BytesIO()
    np.savez_compressed(buf, dy=phantom.displacement[0], dx=phantom.displacement[1],
                        kept_sections=np.setdiff1d(np.arange(size[0] + len(phantom.lost_sections)),
                                                   phantom.lost_sections),
                        resolution_nm=np.asarray(phantom.resolution, float))
    gt.put("displacement.npz", buf.getvalue(), content_type="application/octet-stream", compress=None)
    bar.update(1)
    meta = {"generator": "emkit.phantom.make_phantom", **phantom.summary(), "params": phantom.params.to_dict(),
            "frames": "ground truth in the clean frame; image and masks in the image frame; "
                      "image[z,y,x] shows clean[z, y-dy, x-dx] (gt/displacement.npz)"}
    if unaligned is not None:
        meta["unaligned"] = {"generator": "emkit.phantom.make_unaligned", "seed": unaligned.seed,
                             "params": unaligned.params.to_dict(),
                             "fields": "gt/fields.npz: image[z,y,x] shows gt/aligned_image[z, y-dy, x-dx] "
                                       "(field); warp(image, inverse) = gt/aligned_image"}
        buf = io.BytesIO()
        np.savez_compressed(buf, field=unaligned.fields, inverse=unaligned.inverse, matrices=unaligned.matrices,
                            valid=unaligned.valid, resolution_nm=np.asarray(phantom.resolution, float),
                            seed=np.int64(unaligned.seed), params=np.asarray(json.dumps(unaligned.params.to_dict())))
        gt.put("fields.npz", buf.getvalue(), content_type="application/octet-stream", compress=None)
        bar.update(1)
    gt.put_json("phantom.json", meta)
    bar.update(1)
    bar.close()
    for f in files:
        written[f] = join_url(out_dir, f)
    return written
