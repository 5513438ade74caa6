"""Random training patches from dataset folders of Precomputed layers.

A *dataset* is a folder (local path or ``file://``/``gs://``/``s3://`` URL) laid out like the
phantom's output (:mod:`emkit.phantom.writer`) or a user's own volume imported with
``emkit import``::

    image              kind image (uint8), required
    gt/segmentation    kind segmentation (uint64), required for boundary nets (0 = unlabelled)
    gt/semantic        kind segmentation, classes 0..5, required for semantic nets
    gt/myelin          kind mask or segmentation (nonzero = myelin), optional (myelin head)
    gt/clefts          kind segmentation, synaptic cleft ids (0 = none), required for cleft nets
    masks/<name>       kind mask (uint8, 1 = masked), optional, any number
    gt/displacement.npz, gt/phantom.json   phantoms only (see "Frames" below)

All layers of a dataset must share size, resolution and voxel offset.

Masks
-----
``input_masks`` name masks whose voxels are set to 0 in the image (as ``emkit infer --mask-in``
does at inference); the loss still counts there. ``loss_masks`` name masks whose voxels do not
count in the loss (``valid`` = 0 for every edge touching them). The default ``"auto"`` excludes
from the loss every ``masks/<name>`` except the defects the net is meant to learn to see through
(:data:`LEARNED_DEFECTS`: missing, partial_missing, blur, slip, step, lost, thick) — so a
phantom's fold and crack bands, or a user's ``masks/ignore``, are left out.

Frames (phantoms)
-----------------
A phantom's ground truth lies in the clean frame while its image and masks lie in the damaged
frame (``gt/displacement.npz``). The ground truth is warped into the image frame (nearest
neighbour), except on slip sections, where it keeps the neighbouring section's displacement:
that is the paper's "slip interpolation" (the slip is in the input only).

Where patches fall
------------------
The output patch falls anywhere inside a volume's region, edges included; the context the
augmenter reads around it may reach past the region, and is then zero (image, ground truth and
loss mask), so nothing outside the region is seen or scored. With ``balance="classes"`` (semantic
nets' default) a patch is centred on a voxel of a semantic class drawn uniformly from the classes
present, so rare classes (glia, vessel, somata at the edge of a volume) are seen as often as
common ones; with ``"none"`` the patch position is uniform. With ``balance="clefts"`` (cleft nets'
default) a fraction ``cleft_fraction`` (0.8, ours) of the patches is centred on a voxel of a cleft
drawn uniformly from the clefts of all volumes, the rest falls uniformly: synaptic voxels are
~0.1 % of a phantom, so uniform patches would rarely hold one (paper, Methods *Synapse detection*:
"a highly imbalanced classification task").

Whole volumes are read into memory once (a few hundred MB at most for training sets of this
size); larger volumes are read patch by patch.
"""
from __future__ import annotations

import io as _io
import json
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..geometry import Bbox
from ..io import Layer, join_url, layer_exists, normalize_url

__all__ = ["Volume", "open_dataset", "crop_dataset", "PatchSampler", "LEARNED_DEFECTS", "CLEFT_FRACTION",
           "split_region"]

LEARNED_DEFECTS = ("missing", "partial_missing", "blur", "slip", "step", "lost", "thick")
"""Defect masks that do not exclude the loss by default (the net learns to see through them)."""

CLEFT_FRACTION = 0.8
"""Share of cleft-centred patches with ``balance="clefts"`` (ours; the rest are uniform, so the net
also sees the cleft-free neuropil, myelin and vessels it must not fire on)."""

_IN_MEMORY_VOXELS = 64 * 1024 ** 2

_LAYER_PATHS = {"image": "image", "labels": "gt/segmentation", "semantic": "gt/semantic", "myelin": "gt/myelin",
                "clefts": "gt/clefts"}


def _list_masks(url: str) -> list[str]:
    from cloudfiles import CloudFiles

    try:
        names = list(CloudFiles(url).list(prefix="masks/", flat=True))
    except Exception:  # noqa: BLE001 - a store that cannot list simply has no masks we can find
        return []
    out = []
    for n in names:
        n = n.rstrip("/").split("/")
        if len(n) == 2 and n[0] == "masks" and layer_exists(join_url(url, "masks", n[1])):
            out.append(n[1])
    return sorted(set(out))


@dataclass
class Volume:
    """One dataset folder: its layers (in memory when small) and facts. Arrays are (z, y, x)."""

    url: str
    resolution: tuple
    size: tuple
    layers: dict = field(default_factory=dict)
    """name ('image', 'labels', 'semantic', 'myelin', 'clefts', 'mask:<name>') -> Layer"""
    arrays: dict = field(default_factory=dict)
    """name -> in-memory array (same names)"""
    displacement: np.ndarray | None = None
    """(2, z, y, x) target displacement (phantoms; see the module docstring)."""

    @property
    def mask_names(self) -> list[str]:
        return [k.split(":", 1)[1] for k in self.layers if k.startswith("mask:")]

    def has(self, name: str) -> bool:
        return name in self.layers

    def read(self, name: str, bbox: Bbox) -> np.ndarray:
        """Voxels of layer ``name`` in ``bbox`` (z, y, x, relative to the volume's first voxel)."""
        if name in self.arrays:
            return self.arrays[name][tuple(slice(a, b) for a, b in zip(bbox.start, bbox.stop))].copy()
        lay = self.layers[name]
        off = lay.voxel_offset
        return lay.read(Bbox(tuple(a + o for a, o in zip(bbox.start, off)),
                             tuple(b + o for b, o in zip(bbox.stop, off))))


def _phantom_displacement(url: str, shape) -> np.ndarray | None:
    from cloudfiles import CloudFiles

    cf = CloudFiles(join_url(url, "gt"))
    try:
        raw = cf.get("displacement.npz")
    except Exception:  # noqa: BLE001
        raw = None
    if raw is None:
        return None
    z = np.load(_io.BytesIO(raw))
    disp = np.stack([z["dy"], z["dx"]]).astype(np.float32)
    if disp.shape[1:] != tuple(shape):
        raise InputError(f"{url}/gt/displacement.npz has shape {disp.shape[1:]}, the image {tuple(shape)}")
    if not np.any(disp):
        return None
    kept = np.asarray(z["kept_sections"]) if "kept_sections" in z else np.arange(shape[0])
    slips: list[int] = []
    meta = cf.get("phantom.json")
    if meta is not None:
        gen = json.loads(meta).get("defects", {}).get("slip", [])
        for g in gen:
            hit = np.nonzero(kept == int(g))[0]
            if hit.size:
                slips.append(int(hit[0]))
    for s in slips:  # slip interpolation: the target does not slip
        nb = s - 1 if s > 0 else s + 1
        if 0 <= nb < shape[0] and nb not in slips:
            disp[:, s] = disp[:, nb]
    return disp


def open_dataset(url, *, need=("labels",), in_memory: bool | None = None, only=None) -> Volume:
    """Open a dataset folder (see the module docstring).

    Parameters
    ----------
    url : folder path or URL.
    need : ground truth that must exist: any of "labels" (gt/segmentation), "semantic", "myelin",
        "clefts".
    in_memory : read whole layers into memory (default: when under 64 M voxels).
    only : ground truth to open (names as in ``need``); None: every one that exists, except
        gt/clefts, which is opened only when named in ``need`` or ``only`` (boundary and semantic
        nets do not read it). Masks are always opened.
    """
    url = normalize_url(url)
    if only is None:
        only = tuple(k for k in _LAYER_PATHS if k != "clefts")
    names = {k: v for k, v in _LAYER_PATHS.items() if k == "image" or k in only or k in need}
    if not layer_exists(join_url(url, "image")):
        raise InputError(f"dataset {url} has no 'image' layer (expected {join_url(url, 'image')})")
    layers = {}
    for key, rel in names.items():
        u = join_url(url, rel)
        if layer_exists(u):
            layers[key] = Layer.open(u)
        elif key in need:
            raise InputError(f"dataset {url} lacks {rel} (needed for training this net)")
    for m in _list_masks(url):
        layers[f"mask:{m}"] = Layer.open(join_url(url, "masks", m))
    img = layers["image"]
    if img.num_channels != 1:
        raise InputError(f"{img.url}: image must have one channel, got {img.num_channels}")
    from ..io import check_same_grid

    check_same_grid(img, *(lay for k, lay in layers.items() if k != "image"),
                    what=f"layer of dataset {url} (all its layers must share the image's grid):")
    vol = Volume(url=url, resolution=tuple(float(r) for r in img.resolution), size=tuple(img.size), layers=layers)
    nvox = int(np.prod(vol.size))
    disp = _phantom_displacement(url, vol.size)
    if in_memory is None:
        in_memory = nvox <= _IN_MEMORY_VOXELS or disp is not None
    if in_memory:
        from ..defects import warp

        for k, lay in layers.items():
            a = lay.read()
            if k in ("labels", "semantic", "myelin", "clefts") and disp is not None:
                a = warp(a, disp, order=0)
            vol.arrays[k] = a
    vol.displacement = disp
    return vol


def crop_dataset(src, dest, start, stop, *, overwrite: bool = False) -> str:
    """Copy the box ``[start, stop)`` of a dataset folder into a new dataset folder.

    Use it to split your annotated volume into a part to train on and a part to score on.

    Parameters
    ----------
    src : dataset folder (path or URL; see the module docstring).
    dest : new dataset folder; its layers must not exist unless ``overwrite``.
    start, stop : (z, y, x) voxels counted from the dataset's first voxel (the voxel offset is not
        added); half-open, inside the volume.
    overwrite : replace existing layers at ``dest``.

    Returns
    -------
    The URL of ``dest``. Every layer (image, gt/segmentation, gt/semantic, gt/myelin, gt/clefts, masks/<name>)
    is copied with its kind and resolution; the copy starts at voxel offset 0. A phantom's ground
    truth is copied in the image's frame (as the sampler sees it), without its displacement field.
    """
    from ..errors import LayerExistsError
    from ..geometry import as_vec3

    vol = open_dataset(src, need=(), only=tuple(_LAYER_PATHS))
    start = as_vec3(start, "start", positive=False)
    stop = as_vec3(stop, "stop", positive=True)
    if any(a < 0 or b > s or a >= b for a, b, s in zip(start, stop, vol.size)):
        raise InputError(f"crop {start}..{stop} (z, y, x) must be a non-empty box inside the dataset {vol.url} of size "
                         f"{vol.size}")
    dest = normalize_url(dest)
    box = Bbox(start, stop)
    rel = {k: _LAYER_PATHS.get(k) or "masks/" + k.split(":", 1)[1] for k in vol.layers}
    if not overwrite:
        for r in rel.values():
            if layer_exists(join_url(dest, *r.split("/"))):
                raise LayerExistsError(f"{join_url(dest, *r.split('/'))} already exists; choose another folder or "
                                       "pass overwrite=True")
    for k, lay in vol.layers.items():
        a = vol.read(k, box)
        out = Layer.create(join_url(dest, *rel[k].split("/")), lay.kind.name, box.shape, resolution=vol.resolution,
                           overwrite=overwrite)
        out.write(a)
    return dest


def split_region(size, patch_size, fraction: float = 0.2) -> tuple[Bbox, Bbox] | None:
    """Split a volume (z, y, x) into (train, validation) boxes along y: validation takes the last
    ``fraction`` of y (at least one patch); None when y cannot hold a patch on both sides."""
    size = tuple(size)
    ph = patch_size[1]
    vy = max(ph, int(round(size[1] * fraction)))
    if size[1] - vy < ph or any(s < p for s, p in zip(size, patch_size)):
        return None
    train = Bbox((0, 0, 0), (size[0], size[1] - vy, size[2]))
    val = Bbox((0, size[1] - vy, 0), size)
    return train, val


class PatchSampler:
    """Draws training samples (dicts of (z, y, x) numpy arrays) from several volumes.

    Parameters
    ----------
    volumes : list of :class:`Volume` (or of ``(Volume, Bbox region)`` pairs).
    patch_size : output patch (z, y, x) voxels.
    input_masks, loss_masks : mask names (see the module docstring); ``loss_masks="auto"``.
    augmenter : callable ``(sample, rng, output_shape) -> sample`` or None (e.g. an
        :class:`emkit.train.augment.Augmenter` made with ``rng``).
    read_size : function ``patch_size -> size`` the augmenter needs to read (context), or None.
    min_valid : resample (up to 20 tries) when fewer than this fraction of the patch's voxels are
        labelled and unmasked.
    balance : "none" (uniform patch positions), "classes" (centred on a voxel of a semantic class
        drawn uniformly; needs ``gt/semantic`` in every volume) or "clefts" (a fraction
        ``cleft_fraction`` centred on a voxel of a cleft drawn uniformly, the rest uniform; needs
        ``gt/clefts`` in every volume and a cleft in one).
    cleft_fraction : see ``balance="clefts"`` (0..1; default :data:`CLEFT_FRACTION`).

    Samples hold ``image`` (uint8), ``labels`` (uint64), optionally ``semantic``, ``myelin``,
    ``clefts``, and ``mask`` (uint8, 1 = voxel counts in the loss).
    """

    def __init__(self, volumes, patch_size, *, input_masks=(), loss_masks="auto", augmenter=None,
                 read_size=None, min_valid: float = 0.05, balance: str = "none", cleft_fraction: float | None = None):
        if balance not in ("none", "classes", "clefts"):
            raise InputError(f"balance must be 'none', 'classes' or 'clefts', got {balance!r}")
        cf = CLEFT_FRACTION if cleft_fraction is None else cleft_fraction
        if isinstance(cf, bool) or not isinstance(cf, (int, float)) or not 0.0 <= float(cf) <= 1.0:
            raise InputError(f"cleft_fraction must be a number in [0, 1], got {cleft_fraction!r}")
        self.cleft_fraction = float(cf)
        self.items = []
        for v in volumes:
            vol, region = v if isinstance(v, tuple) else (v, Bbox((0, 0, 0), v.size))
            self.items.append((vol, region))
        if not self.items:
            raise InputError("PatchSampler needs at least one volume")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.input_masks = tuple(input_masks)
        self.loss_masks = loss_masks
        self.augmenter = augmenter
        self.read_size = read_size
        self.min_valid = float(min_valid)
        for vol, region in self.items:
            if any(p > s for p, s in zip(self.patch_size, region.shape)):
                raise InputError(f"volume {vol.url} region {region.shape} (z, y, x) is smaller than the patch "
                                 f"{self.patch_size}; use a smaller --patch or a larger volume")
            bad = [m for m in self.input_masks if m not in vol.mask_names]
            if bad:
                raise InputError(f"input masks {bad} not found in {vol.url} (it has masks {vol.mask_names})")
        w = np.array([float(np.prod(r.shape)) for _, r in self.items])
        self.weights = w / w.sum()
        self.balance = balance
        self._class_points = self._find_class_points() if balance == "classes" else None
        self._cleft_points = self._find_cleft_points() if balance == "clefts" else None

    #: candidate patch centres kept per class and volume for class balancing (a fixed random subset)
    BALANCE_POINTS = 50_000

    def _find_class_points(self) -> dict:
        """class -> list over items of (k, 3) int32 candidate output-patch starts (relative to the volume)."""
        ps = np.array(self.patch_size)
        pick = np.random.default_rng(0)   # which candidates are kept: fixed, so sampling stays reproducible
        pts: dict[int, list] = {}
        for i, (vol, region) in enumerate(self.items):
            if not vol.has("semantic"):
                raise InputError(f"balance='classes' needs gt/semantic in every volume; {vol.url} has none")
            sem = vol.read("semantic", region)
            for c in range(1, 6):
                flat = np.flatnonzero(sem == c)
                if flat.size > self.BALANCE_POINTS:
                    flat = np.sort(pick.choice(flat, self.BALANCE_POINTS, replace=False))
                idx = np.stack(np.unravel_index(flat, sem.shape), axis=1)        # voxels within the region
                starts = np.clip(idx - ps // 2, 0, np.array(region.shape) - ps) + np.array(region.start)
                pts.setdefault(c, [np.zeros((0, 3), np.int32)] * len(self.items))[i] = starts.astype(np.int32)
        found = {c: v for c, v in pts.items() if sum(len(a) for a in v)}
        if not found:
            raise InputError("balance='classes': no voxel of classes 1..5 in the training volumes")
        return found

    def _find_cleft_points(self) -> list:
        """list over items of (k, 3) int32 output-patch starts centred on cleft voxels, and (k,)
        cleft ids (unique per item), as ``[(starts, ids), ...]``."""
        ps = np.array(self.patch_size)
        pick = np.random.default_rng(0)
        out = []
        for vol, region in self.items:
            if not vol.has("clefts"):
                raise InputError(f"balance='clefts' needs gt/clefts in every volume; {vol.url} has none")
            c = vol.read("clefts", region)
            flat = np.flatnonzero(c)
            if flat.size > self.BALANCE_POINTS:
                flat = np.sort(pick.choice(flat, self.BALANCE_POINTS, replace=False))
            ids = c.ravel()[flat]
            idx = np.stack(np.unravel_index(flat, c.shape), axis=1)
            starts = np.clip(idx - ps // 2, 0, np.array(region.shape) - ps) + np.array(region.start)
            out.append((starts.astype(np.int32), ids.astype(np.uint64)))
        if not sum(len(s) for s, _ in out):
            raise InputError("balance='clefts': no cleft voxel (gt/clefts > 0) in the training volumes")
        # clefts drawn uniformly: (item, id) -> its candidate rows
        self._clefts = [(i, u) for i, (_, ids) in enumerate(out) for u in np.unique(ids)]
        return out

    def _draw_start(self, rng: np.random.Generator) -> tuple[int, tuple]:
        """(item index, output-patch start) drawn as ``balance`` says."""
        if self._cleft_points is not None:
            if rng.random() < self.cleft_fraction:
                i, cid = self._clefts[int(rng.integers(len(self._clefts)))]
                starts, ids = self._cleft_points[i]
                rows = np.flatnonzero(ids == cid)
                return i, tuple(int(v) for v in starts[rows[int(rng.integers(len(rows)))]])
        if self._class_points is None:
            i = int(rng.choice(len(self.items), p=self.weights))
            region = self.items[i][1]
            return i, tuple(int(a + rng.integers(0, r - p + 1))
                            for a, r, p in zip(region.start, region.shape, self.patch_size))
        classes = sorted(self._class_points)
        per_item = self._class_points[classes[int(rng.integers(len(classes)))]]
        counts = np.array([len(a) for a in per_item], float)
        i = int(rng.choice(len(per_item), p=counts / counts.sum()))
        return i, tuple(int(v) for v in per_item[i][int(rng.integers(len(per_item[i])))])

    def read_padded(self, vol: Volume, region: Bbox, bbox: Bbox) -> dict:
        """:meth:`read` of ``bbox``, which may reach past ``region``: zero there (mask 0 too)."""
        inner = bbox.intersect(region)
        if inner == bbox:
            return self.read(vol, bbox)
        got = self.read(vol, inner)
        sl = tuple(slice(a - b, a - b + n) for a, b, n in zip(inner.start, bbox.start, inner.shape))
        out = {}
        for k, a in got.items():
            full = np.zeros(bbox.shape, a.dtype)
            full[sl] = a
            out[k] = full
        return out

    def _read_shape(self):
        if self.read_size is None:
            return self.patch_size
        return tuple(int(s) for s in self.read_size(self.patch_size))

    def _loss_mask_names(self, vol):
        if self.loss_masks == "auto":
            return [m for m in vol.mask_names if m not in LEARNED_DEFECTS]
        return [m for m in self.loss_masks if m in vol.mask_names]

    def read(self, vol: Volume, bbox: Bbox) -> dict:
        """The raw sample of ``vol`` in ``bbox`` (no augmentation), masks applied."""
        s = {"image": vol.read("image", bbox)}
        for k in ("labels", "semantic", "myelin", "clefts"):
            if vol.has(k):
                s[k] = vol.read(k, bbox)
        if vol.has("semantic"):
            s["semantic"] = s["semantic"].astype(np.uint8, copy=False)
        keep = np.ones(bbox.shape, bool)
        for m in self._loss_mask_names(vol):
            keep &= vol.read(f"mask:{m}", bbox) == 0
        s["mask"] = keep.astype(np.uint8)
        for m in self.input_masks:
            s["image"][vol.read(f"mask:{m}", bbox) != 0] = 0
        return s

    def _valid_fraction(self, s) -> float:
        ok = s["mask"] != 0
        if "labels" in s:
            ok = ok & (s["labels"] != 0)
        elif "semantic" in s:
            ok = ok & (s["semantic"] != 0)
        return float(ok.mean())

    def sample(self, rng: np.random.Generator) -> dict:
        """One augmented sample of ``patch_size``, drawn with ``rng`` only (so a fixed generator
        per iteration makes training reproducible and resumable)."""
        rs = self._read_shape()
        for _ in range(20):
            i, out_start = self._draw_start(rng)
            vol, region = self.items[i]
            # the read box has the output patch at its centre (center_crop takes it back out)
            start = tuple(a - (r - p) // 2 for a, r, p in zip(out_start, rs, self.patch_size))
            s = self.read_padded(vol, region, Bbox(start, tuple(a + r for a, r in zip(start, rs))))
            if self._valid_fraction(center_crop(s, self.patch_size)) >= self.min_valid:
                break
        if self.augmenter is not None:
            s = self.augmenter(s, rng, self.patch_size)
        return center_crop(s, self.patch_size)


def center_crop(sample: dict, size) -> dict:
    """Crop every (z, y, x) array of ``sample`` to its central ``size`` (no-op when equal)."""
    out = {}
    for k, a in sample.items():
        if not isinstance(a, np.ndarray) or a.ndim < 3:
            out[k] = a
            continue
        shp = a.shape[-3:]
        if any(s < t for s, t in zip(shp, size)):
            raise InputError(f"sample array {k!r} of shape {shp} is smaller than the patch {tuple(size)}")
        sl = tuple(slice((s - t) // 2, (s - t) // 2 + t) for s, t in zip(shp, size))
        out[k] = a[(Ellipsis,) + sl]
    return out
