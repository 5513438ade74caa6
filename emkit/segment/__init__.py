"""Segmentation: affinity watershed, region graph, constrained mean-affinity agglomeration.

Array forms (everything in memory)::

    sv = watershed(affinities, WatershedParams())             # (z, y, x) uint64 supervoxels
    graph = region_graph(sv, affinities, semantic=None)       # RegionGraph (arrays)
    history = agglomerate(graph, AgglomerationParams())       # MergeHistory
    seg = history.segmentation(sv, threshold=0.5)             # cut in milliseconds

End to end (arrays, or layers chunk by chunk on dask — identical results)::

    seg, sv, history = segment(affinities, threshold=0.5)
    report = segment_layers("file:///data/affinities", "file:///data/out", workers=2)
"""
from emkit.segment.agglomerate import VETO_SEMANTIC, VETO_SIZE, MergeHistory, agglomerate
from emkit.segment.params import DEFAULT_VETO_PAIRS, AgglomerationParams, WatershedParams
from emkit.segment.pipeline import load_history, segment, segment_layers
from emkit.segment.region_graph import RegionGraph, region_graph
from emkit.segment.watershed import watershed

__all__ = [
    "watershed", "WatershedParams",
    "region_graph", "RegionGraph",
    "agglomerate", "AgglomerationParams", "MergeHistory", "DEFAULT_VETO_PAIRS", "VETO_SIZE", "VETO_SEMANTIC",
    "segment", "segment_layers", "load_history",
]
