"""Typed parameters of watershed and agglomeration, with the paper's values as defaults.

Both are frozen dataclasses: JSON round-trip through ``to_dict`` / ``from_dict``; a bad value
raises :class:`emkit.errors.InputError` naming the field.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from emkit.errors import InputError

__all__ = ["WatershedParams", "AgglomerationParams", "DEFAULT_VETO_PAIRS", "BOUNDARY_MAP_WATERSHED"]

# Semantic classes (design.md): 0 background, 1 soma, 2 axon, 3 dendrite, 4 glia, 5 vessel.
SOMA, AXON, DENDRITE, GLIA, VESSEL = 1, 2, 3, 4, 5

#: Paper, Methods: Agglomeration — "prevent neuron-glia mergers as well as axon-dendrite and
#: axon-soma mergers". Neuron = soma, axon or dendrite.
DEFAULT_VETO_PAIRS: tuple[tuple[int, int], ...] = (
    (SOMA, GLIA), (AXON, GLIA), (DENDRITE, GLIA),   # neuron-glia
    (AXON, DENDRITE),                               # axon-dendrite
    (SOMA, AXON),                                   # axon-soma
)


class _Params:
    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        return d

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise InputError(f"unknown {cls.__name__} fields {extra}; expected some of {sorted(names)}")
        kw = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
              for k, v in d.items()}
        return cls(**kw)

    def _check_range(self, name, lo=None, hi=None):
        v = getattr(self, name)
        try:
            ok = (lo is None or v >= lo) and (hi is None or v <= hi)
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"{type(self).__name__}.{name} must be in [{lo}, {hi}], got {v!r}")


@dataclass(frozen=True)
class WatershedParams(_Params):
    """Watershed on the affinity graph (Zlateski & Seung 2015; paper, Methods: Watershed).

    The paper gives no numbers for this step; the defaults lie in the ranges used with
    zwatershed/abiss (high ≈ 0.99, size-dependent single linkage of 50–200 voxels at a merge
    affinity of 0.2–0.3) and were checked on noisy ground-truth affinities
    (:func:`emkit.affinity.noisy_affinities`) of 32×128×128 and 64×256×256 Voronoi volumes:
    results were flat for size_threshold 150–500 and merge_affinity 0.1–0.4, worse at 50.

    ``low`` is 0 (zwatershed uses ≈ 0.01): on a real classifier's boundary map (gala FIB-SEM,
    ``benchmarks/segment.py``) 14 % of the voxels have boundary probability exactly 1, hence
    no edge above 0.01; as background they formed one object spanning every membrane and the
    best adapted Rand error was 0.15. With ``low = 0`` every voxel joins a basin (membrane
    voxels the side their two-step ascent prefers) and it is 0.02; on the phantom rows it is
    unchanged (shipped boundary net: 0.0294 at 0.5) or within 2 % (noisy affinities).
    ``high`` stays 0.99: on saturated classifier maps 0.5–0.7 is better (tuned on half of that
    crop), on graded affinities it merges objects across every leak (phantom: 0.9 instead of
    0.06) — tune it on an annotated crop (:func:`emkit.segment.tune.tune`, ``emkit tune``).
    Algorithm and tie rules: :mod:`emkit.segment.watershed`.
    """

    high: float = 0.99
    """Edges with affinity >= high are all steepest: voxels they join fall in one basin."""
    low: float = 0.0
    """Edges with affinity < low do not exist; a voxel with no edge left becomes background (0).
    0: every edge exists, no voxel is background (except masked ones)."""
    merge_affinity: float = 0.25
    """Size-dependent single linkage only uses basin edges with (max) affinity >= merge_affinity."""
    size_threshold: int = 150
    """Basins joined by such an edge merge while one of them has fewer voxels than this."""
    dust_size: int = 50
    """Then supervoxels with fewer voxels than this join their best neighbour along any edge
    >= low (0: no such pass)."""
    drop_dust: bool = False
    """Supervoxels still below dust_size afterwards (no edge >= low) become background (0)."""

    def __post_init__(self):
        for n in ("high", "low", "merge_affinity"):
            self._check_range(n, 0.0, 1.0)
        if self.low > self.high:
            raise InputError(f"WatershedParams.low ({self.low}) must be <= high ({self.high})")
        self._check_range("size_threshold", 0)
        self._check_range("dust_size", 0)


@dataclass(frozen=True)
class AgglomerationParams(_Params):
    """Constrained mean-affinity agglomeration (paper, Methods: Agglomeration).

    Every number is a parameter with the paper's value as default; the paper's sizes are for
    8×8×40 nm voxels and a cubic-millimetre volume — scale the size fields down for small volumes.
    """

    min_affinity: float = 0.0
    """Stop when the best mean affinity falls below this (0 records the whole hierarchy)."""
    constraints: bool = True
    """Apply the semantic and size constraints below (False: plain mean-affinity agglomeration)."""
    constraint_threshold: float = 0.5
    """Paper: "The constraints ... are activated when mean affinities between segments are lower
    than 0.5." Merges at mean affinity >= this are never vetoed."""
    semantic_min_size: int = 170_000
    """Paper: "Labels were used if an agglomerated object contained at least 170 thousand voxels"."""
    semantic_min_fraction: float = 0.6
    """Paper: "... and at least 60% of its voxels share the same label"."""
    veto_pairs: tuple[tuple[int, int], ...] = DEFAULT_VETO_PAIRS
    """Paper: no neuron-glia, axon-dendrite, axon-soma merges (class pairs, order irrelevant)."""
    size_min_supervoxels_both: int = 1000
    """Paper: "If two objects both contain more than 1000 supervoxels ..." """
    size_max_supervoxels_one: int = 10_000
    """Paper: "... and one of them has more than 10 thousand supervoxels, they will not be merged"."""

    def __post_init__(self):
        self._check_range("min_affinity", 0.0, 1.0)
        self._check_range("constraint_threshold", 0.0, 1.0)
        self._check_range("semantic_min_fraction", 0.0, 1.0)
        self._check_range("semantic_min_size", 0)
        self._check_range("size_min_supervoxels_both", 0)
        self._check_range("size_max_supervoxels_one", 0)
        try:
            pairs = tuple((int(a), int(b)) for a, b in self.veto_pairs)
        except (TypeError, ValueError):
            raise InputError(f"AgglomerationParams.veto_pairs must be pairs of class ids, got {self.veto_pairs!r}") from None
        for a, b in pairs:
            if not (1 <= a <= 5 and 1 <= b <= 5):
                raise InputError(f"AgglomerationParams.veto_pairs: class ids must be 1..5, got {(a, b)}")
        object.__setattr__(self, "veto_pairs", pairs)


#: Watershed parameters for affinities made from a pixel classifier's boundary probability b
#: (:func:`emkit.affinity.boundary_to_affinities`, affinity = 1 − max(b[v], b[u])): ``high`` 0.5
#: puts voxels joined by a path with b < 0.5 — the classifier's own "not boundary" — in one basin,
#: which is what a seeded watershed on a boundary map does with seeds = components of b < 0.5.
#: Such maps are saturated (exact 0 inside, exact 1 on membranes) and their mean affinities between
#: pieces of one cell are low, so with ``high`` 0.99 the best cut is near 0.03–0.05 and moves from
#: crop to crop. Measured on the gala FIB-SEM crop (``benchmarks/segment.py``, scored on each
#: half in z): adapted Rand 0.0199 and 0.0171 at the default cut 0.5 (best cut 0.0184, 0.0169),
#: against 0.0206 and 0.0173 for a seeded scikit-image watershed with its seed level tuned on the
#: other half and 0.0226 and 0.041 for waterz + fill; with the defaults 0.052 and 0.097 at 0.5.
#: Not for a net's graded affinities (phantom: adapted Rand 0.9 instead of 0.06, merges across
#: every leak) nor for uncalibrated maps (a smoothed image: tune with :func:`emkit.segment.tune.tune`).
BOUNDARY_MAP_WATERSHED = WatershedParams(high=0.5)
