"""The connectivity graph (wiring diagram) of a synapse table.

Nodes are segment ids (neurons, or segment pieces when the segmentation splits a cell); a directed
edge ``pre → post`` carries ``synapse_count`` (synapses from ``pre`` onto ``post``) and
``total_size`` (their summed cleft voxels). Autapses and unassigned clefts are already gone from
the table (:func:`emkit.synapse.build_synapse_table`).
"""
from __future__ import annotations

import numpy as np

from emkit.errors import InputError

__all__ = ["EDGE_COLUMNS", "edge_list", "to_networkx", "adjacency_matrix", "graph_summary"]

EDGE_COLUMNS = ("pre_id", "post_id", "synapse_count", "total_size")


def _check(table):
    need = ("pre_id", "post_id", "size_voxels")
    missing = [c for c in need if c not in getattr(table, "columns", ())]
    if missing:
        raise InputError(f"a synapse table needs columns {list(need)}; missing {missing}")


def edge_list(table):
    """Edges of the wiring diagram: a DataFrame with :data:`EDGE_COLUMNS`, one row per (pre, post)
    pair with at least one synapse, sorted by (pre_id, post_id)."""
    import pandas as pd

    _check(table)
    if not len(table):
        return pd.DataFrame({"pre_id": np.zeros(0, np.uint64), "post_id": np.zeros(0, np.uint64),
                             "synapse_count": np.zeros(0, np.int64), "total_size": np.zeros(0, np.int64)})
    g = table.groupby(["pre_id", "post_id"], sort=True).agg(synapse_count=("size_voxels", "size"),
                                                            total_size=("size_voxels", "sum")).reset_index()
    return g.astype({"pre_id": np.uint64, "post_id": np.uint64, "synapse_count": np.int64,
                     "total_size": np.int64})[list(EDGE_COLUMNS)]


def to_networkx(table_or_edges):
    """A ``networkx.DiGraph``: nodes are segment ids (int), edges carry ``synapse_count`` and
    ``total_size``. Takes a synapse table or an :func:`edge_list`."""
    import networkx as nx

    edges = table_or_edges if "synapse_count" in getattr(table_or_edges, "columns", ()) else edge_list(table_or_edges)
    g = nx.DiGraph()
    for pre, post, n, s in edges[list(EDGE_COLUMNS)].itertuples(index=False):
        g.add_edge(int(pre), int(post), synapse_count=int(n), total_size=int(s))
    return g


def adjacency_matrix(table_or_edges, ids=None, weight: str = "synapse_count"):
    """The adjacency matrix ``A[i, j]`` = ``weight`` of the edge ``ids[i] → ids[j]``.

    Parameters
    ----------
    table_or_edges : synapse table or :func:`edge_list`.
    ids : segment ids giving the row/column order; default every id that is a pre or post
        partner, ascending. Edges touching ids not listed are left out.
    weight : ``"synapse_count"`` or ``"total_size"``.

    Returns
    -------
    (scipy.sparse.csr_matrix of int64, ids as a uint64 array)
    """
    from scipy.sparse import csr_matrix

    if weight not in ("synapse_count", "total_size"):
        raise InputError(f"weight must be 'synapse_count' or 'total_size', got {weight!r}")
    edges = table_or_edges if "synapse_count" in getattr(table_or_edges, "columns", ()) else edge_list(table_or_edges)
    pre = edges["pre_id"].to_numpy(np.uint64)
    post = edges["post_id"].to_numpy(np.uint64)
    if ids is None:
        ids = np.unique(np.concatenate([pre, post]))
    ids = np.asarray(ids, np.uint64)
    if np.unique(ids).size != ids.size:
        raise InputError("ids must not repeat")
    order = np.argsort(ids, kind="stable")
    sid = ids[order]

    def index(v):
        if not sid.size:
            return np.zeros(v.size, np.int64), np.zeros(v.size, bool)
        i = np.minimum(np.searchsorted(sid, v), sid.size - 1)
        return order[i], sid[i] == v

    (ri, fa), (ci, fb) = index(pre), index(post)
    keep = fa & fb
    w = edges[weight].to_numpy(np.int64)[keep]
    m = csr_matrix((w, (ri[keep], ci[keep])), shape=(ids.size, ids.size), dtype=np.int64)
    return m, ids


def graph_summary(table) -> dict:
    """Counts of the wiring diagram: ``synapses``, ``edges`` (connected ordered pairs),
    ``neurons`` (segments with at least one synapse), ``presynaptic`` / ``postsynaptic`` segments,
    ``max_synapses_per_edge``, ``mean_synapses_per_edge``."""
    edges = edge_list(table)
    pre = edges["pre_id"].to_numpy(np.uint64)
    post = edges["post_id"].to_numpy(np.uint64)
    counts = edges["synapse_count"].to_numpy(np.int64)
    return {"synapses": int(len(table)), "edges": int(len(edges)),
            "neurons": int(np.unique(np.concatenate([pre, post])).size),
            "presynaptic": int(np.unique(pre).size), "postsynaptic": int(np.unique(post).size),
            "max_synapses_per_edge": int(counts.max()) if counts.size else 0,
            "mean_synapses_per_edge": round(float(counts.mean()), 3) if counts.size else 0.0}
