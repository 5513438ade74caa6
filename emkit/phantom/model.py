"""The :class:`Phantom` and :func:`make_phantom`."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..geometry import as_vec3
from .params import PhantomParams

__all__ = ["Phantom", "make_phantom"]


@dataclass
class Phantom:
    """A synthetic EM volume with dense ground truth. All arrays are (z, y, x).

    Frames
    ------
    The ground truth (``segmentation``, ``semantic``, ``clefts``, ``synapses``) and
    ``clean_image`` describe the tissue in the clean, aligned frame. ``image`` is what the
    microscope delivered: the clean image with the defects applied, so folds, cracks, slips and
    steps have moved its content. ``displacement`` (float32 ``(2, z, y, x)``, dy, dx in voxels,
    on the image grid) says how: ``image[z, y, x]`` shows the tissue at
    ``(z, y - dy, x - dx)`` of the clean frame. :meth:`in_image_frame` warps any ground-truth
    volume that way (nearest neighbour), e.g. to train on the damaged image; an aligner is
    scored by how well it undoes ``displacement``. ``masks`` (uint8, one per defect kind, 1
    where the defect is) are in the image frame. A *lost* section is the exception: it is
    missing from every array alike (the tissue was never imaged, so the ground truth of the
    imaged sections closes up too); ``lost_sections`` lists the generated sections removed and
    ``masks["lost"]`` marks the section after each gap.

    Attributes
    ----------
    image : uint8, after defects.       clean_image : uint8, before defects.
    segmentation : uint64 cell ids (neurons, glia, vessel wall); 0 = vessel lumen (not tissue).
    semantic : uint8, 0 background, 1 soma+nucleus, 2 axon, 3 dendrite, 4 glia, 5 blood vessel
        (lumen included).
    clefts : uint64 cleft ids (0 = none), each a synapse of ``synapses``.
    synapses : pandas DataFrame: cleft_id, pre_id, post_id (segmentation ids), centroid_z_nm,
        centroid_y_nm, centroid_x_nm (voxel index × resolution, clean frame), size_voxels.
    masks : ``{defect kind: uint8}``.     displacement : float32 (2, z, y, x).
    resolution : (z, y, x) nm per voxel.  seed : the seed.  params : :class:`PhantomParams`.
    defect_sections : ``{kind: [z, ...]}`` where each defect was put (generated section index).
    lost_sections : generated section indices removed as lost.
    """

    image: np.ndarray
    clean_image: np.ndarray
    segmentation: np.ndarray
    semantic: np.ndarray
    clefts: np.ndarray
    synapses: object
    masks: dict
    displacement: np.ndarray
    resolution: tuple
    seed: int
    params: PhantomParams
    defect_sections: dict = field(default_factory=dict)
    lost_sections: list = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)

    def in_image_frame(self, volume: np.ndarray) -> np.ndarray:
        """``volume`` (clean frame, e.g. ``self.segmentation``) warped into the image frame
        (nearest neighbour; voxels moved in from outside the volume are 0)."""
        from ..defects import warp

        return warp(volume, self.displacement, order=0)

    def summary(self) -> dict:
        """Counts of what the phantom holds (JSON-able)."""
        sem_names = ["background", "soma", "axon", "dendrite", "glia", "vessel"]
        counts = np.bincount(self.semantic.ravel(), minlength=6)
        return {
            "size_zyx": list(self.shape), "resolution_nm_zyx": list(self.resolution), "seed": self.seed,
            "n_segments": int(len(np.unique(self.segmentation)) - (1 if (self.segmentation == 0).any() else 0)),
            "n_synapses": int(len(self.synapses)),
            "semantic_fraction": {n: round(float(c) / self.semantic.size, 4) for n, c in zip(sem_names, counts)},
            "defects": {k: v for k, v in self.defect_sections.items()},
            "lost_sections": list(self.lost_sections),
        }


def make_phantom(size=(64, 256, 256), *, seed: int = 0, resolution=(40, 8, 8), defects="default",
                 params: PhantomParams | None = None, progress: bool = False) -> Phantom:
    """Generate synthetic neural tissue as seen by serial-section TEM, with ground truth.

    Parameters
    ----------
    size : (z, y, x) voxels. A soma (with nucleus) and a blood vessel appear when the y and x
        extents reach ``params.soma_min_extent_nm`` / ``vessel_min_extent_nm`` (3 µm: 375
        voxels at 8 nm).
    seed : everything is deterministic given the seed (and size, resolution, params).
    resolution : voxel size (z, y, x) in nm; default (40, 8, 8) as in the paper.
    defects : ``"default"`` (a fold, a crack, a missing and a partly missing section, a blurred
        section, a slip and a step, where there are enough sections), ``None``/``"none"`` (clean),
        or a list / comma-separated string of kinds from :data:`emkit.defects.DEFECT_KINDS`.
    params : :class:`PhantomParams` (defaults documented there).
    progress : print the stages and their times.

    Returns
    -------
    :class:`Phantom` (see its docstring for the frames of image, ground truth and masks).
    """
    import time

    from ..defects import apply_defects, parse_kinds, plan_sections
    from .neurites import build_tissue
    from .organelles import organelle_tubes
    from .raster import label_tissue
    from .render import render
    from .synapses import place_synapses

    size = as_vec3(size, "size", positive=True)
    resolution = as_vec3(resolution, "resolution", positive=True, dtype=float)
    params = PhantomParams() if params is None else params
    if not isinstance(params, PhantomParams):
        raise InputError(f"params must be a PhantomParams, got {type(params).__name__}")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be an integer, got {seed!r}") from None
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    if min(size[1:]) < 16:
        raise InputError(f"size must be at least 16 voxels in y and x, got {size}")
    kinds = parse_kinds(defects)
    g_rng, o_rng, s_rng, r_rng, d_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5))
    plan = plan_sections(kinds, size[0] + kinds.count("lost"), d_rng)
    shape = (size[0] + len(plan.get("lost", [])), size[1], size[2])
    t0 = time.perf_counter()

    def tick(what):
        if progress:
            print(f"  phantom: {what:<28s} {time.perf_counter() - t0:6.1f} s", flush=True)

    tubes, objects = build_tissue(shape, resolution, g_rng, params)
    tick(f"geometry ({len(objects)} objects)")
    org = organelle_tubes(objects, (np.asarray(shape) - 1) * np.asarray(resolution), o_rng, params)
    tissue = label_tissue(shape, resolution, tubes, org, objects, g_rng, params)
    tick("labels")
    syn = place_synapses(tissue, resolution, s_rng, params)
    tick(f"synapses ({len(syn.table)})")
    clean = render(tissue, syn, resolution, r_rng, params)
    tick("render")
    res = apply_defects(clean, kinds, d_rng, sections=plan) if kinds else None
    keep = res.kept_sections if res is not None else np.arange(shape[0])
    tick("defects")
    sem = tissue.sem
    lost = [int(z) for z in np.setdiff1d(np.arange(shape[0]), keep)]
    table = syn.table
    if lost:
        # re-express the synapse table in the kept sections; drop clefts entirely lost
        clefts = syn.clefts[keep]
        present = np.unique(clefts)
        table = table[table.cleft_id.isin(present)].copy()
        new_z = np.searchsorted(keep, np.round(table.centroid_z_nm.to_numpy() / resolution[0]))
        zc = np.array([np.nonzero(clefts == c)[0].mean() for c in table.cleft_id]) if len(table) else new_z
        table["centroid_z_nm"] = zc * resolution[0]
        table["size_voxels"] = [int((clefts == c).sum()) for c in table.cleft_id]
    return Phantom(
        image=res.image if res is not None else clean.copy(),
        clean_image=np.ascontiguousarray(clean[keep]),
        segmentation=np.ascontiguousarray(tissue.seg[keep]),
        semantic=np.ascontiguousarray(sem[keep]),
        clefts=np.ascontiguousarray(syn.clefts[keep]),
        synapses=table.reset_index(drop=True),
        masks=res.masks if res is not None else {},
        displacement=res.displacement if res is not None else np.zeros((2, *size), np.float32),
        resolution=resolution, seed=seed, params=params,
        defect_sections=res.sections if res is not None else {}, lost_sections=lost,
    )
