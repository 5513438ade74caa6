"""The synapse table: cleft components + their partners → synapses (merge, filters, provenance).

Paper (Methods, *Synapse detection* and *Partner assignment*): after connected components and
partner assignment, "we merged connected components together which had centroid coordinates
within 700 nm from one another and were assigned to the same synaptic partners", and "we also
removed autapses (synapses where the presynaptic and postsynaptic partners were the same
segment), which were mostly predicted within blood vessels or were false positives at folds".

Steps of :func:`build_synapse_table` (same result for the array and chunked pipelines, which both
end here):

1. join the cleft table (:func:`emkit.synapse.cleft_components`: id, size, bbox, centroid nm,
   ``mean_prob``) with the partner table (one row per cleft id: ``pre_id``, ``post_id``,
   ``assignment_score``; :func:`emkit.synapse.partners.assign_partners`);
2. drop clefts left unassigned (``pre_id`` or ``post_id`` 0: the cleft touches no segment on one
   side) and, optionally, those whose ``assignment_score`` is below
   :attr:`SynapseParams.min_assignment_score`;
3. within each (pre, post) pair, merge clefts whose centroids lie within
   :attr:`SynapseParams.merge_distance_nm` (single linkage: a chain of clefts each within 700 nm
   of the next becomes one synapse);
4. drop autapses (``pre_id == post_id``).

A merged synapse has the summed size, the size-weighted mean centroid, the union of the bounding
boxes, the size-weighted mean ``cleft_score`` (mean cleft probability over its voxels) and
``assignment_score``, and lists its cleft component ids (``cleft_ids``, ascending). Synapse ids
are 1..N in the order of each synapse's smallest cleft id (so the raster order of the cleft
components carries over and the ids do not depend on chunking).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from emkit.errors import InputError
from emkit.synapse.components import CleftParams

__all__ = ["SynapseParams", "SYNAPSE_COLUMNS", "PARTNER_COLUMNS", "build_synapse_table", "write_synapse_table",
           "read_synapse_table", "cleft_to_synapse", "provenance_record", "git_revision", "TABLE_FILE", "PROVENANCE_FILE"]

#: Columns of the synapse table, in order.
SYNAPSE_COLUMNS = ("id", "pre_id", "post_id", "centroid_z_nm", "centroid_y_nm", "centroid_x_nm", "size_voxels",
                   "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1", "cleft_score",
                   "assignment_score", "n_clefts", "cleft_ids")
#: Columns a partner table must have (more are ignored).
PARTNER_COLUMNS = ("cleft_id", "pre_id", "post_id", "assignment_score")
#: File names of the table and its provenance in a synapse output folder.
TABLE_FILE = "synapses.parquet"
PROVENANCE_FILE = "synapses.json"


@dataclass(frozen=True)
class SynapseParams:
    """Parameters of the synapse stage (cleft components, merge and filters).

    Attributes
    ----------
    cleft : :class:`~emkit.synapse.CleftParams` — cleft threshold (0.5), size threshold (40 voxels
        at 8 × 8 × 40 nm, scaled by voxel volume; paper, Methods *Synapse detection*) and
        connectivity of the cleft connected components.
    merge_distance_nm : clefts with the same partners whose centroids lie within this distance
        (nm) are one synapse (paper, Methods *Synapse detection*: 700 nm). 0 turns the merge off.
    drop_autapses : drop synapses whose presynaptic and postsynaptic segment are the same
        (paper: autapses were removed, "mostly predicted within blood vessels or ... at folds").
    drop_unassigned : drop clefts whose partner assignment found no segment (id 0) on a side.
    min_assignment_score : drop clefts whose assignment score (min of the mean pre/post weights,
        0..1) is below this; 0 keeps all (the paper states no such filter).
    """

    cleft: CleftParams = field(default_factory=CleftParams)
    merge_distance_nm: float = 700.0
    drop_autapses: bool = True
    drop_unassigned: bool = True
    min_assignment_score: float = 0.0

    def __post_init__(self):
        if not isinstance(self.cleft, CleftParams):
            raise InputError(f"SynapseParams.cleft must be a CleftParams, got {type(self.cleft).__name__}")
        d = self.merge_distance_nm
        if isinstance(d, bool) or not isinstance(d, (int, float, np.integer, np.floating)) or not np.isfinite(d) \
                or d < 0:
            raise InputError(f"SynapseParams.merge_distance_nm must be a distance >= 0 in nm, got {d!r}")
        s = self.min_assignment_score
        if isinstance(s, bool) or not isinstance(s, (int, float, np.integer, np.floating)) or not 0 <= s <= 1:
            raise InputError(f"SynapseParams.min_assignment_score must be in [0, 1], got {s!r}")
        for name in ("drop_autapses", "drop_unassigned"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"SynapseParams.{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cleft"] = self.cleft.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SynapseParams":
        d = dict(d)
        if isinstance(d.get("cleft"), dict):
            d["cleft"] = CleftParams(**d["cleft"])
        unknown = set(d) - {"cleft", "merge_distance_nm", "drop_autapses", "drop_unassigned", "min_assignment_score"}
        if unknown:
            raise InputError(f"unknown SynapseParams field(s): {sorted(unknown)}")
        return cls(**d)


def _empty_table():
    import pandas as pd

    cols = {}
    for c in SYNAPSE_COLUMNS:
        if c in ("id", "pre_id", "post_id"):
            cols[c] = np.zeros(0, np.uint64)
        elif c.startswith(("centroid", "cleft_score", "assignment")):
            cols[c] = np.zeros(0, np.float64)
        elif c == "cleft_ids":
            cols[c] = []
        else:
            cols[c] = np.zeros(0, np.int64)
    return pd.DataFrame(cols)


def _check_columns(df, need, what):
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{what} lacks column(s) {missing}; it has {list(df.columns)}")


def build_synapse_table(clefts, partners, params: SynapseParams | None = None):
    """Synapses from a cleft table and a partner table (steps in the module docstring).

    Parameters
    ----------
    clefts : DataFrame of cleft components (:data:`emkit.synapse.TABLE_COLUMNS`: ``id``,
        ``size_voxels``, ``bbox_*``, ``centroid_*_nm``, ``mean_prob``).
    partners : DataFrame with one row per cleft: ``cleft_id``, ``pre_id``, ``post_id``,
        ``assignment_score`` (segment ids; 0 = none found). Clefts without a row are unassigned.
    params : :class:`SynapseParams` (default: the paper's).

    Returns
    -------
    pandas DataFrame with columns :data:`SYNAPSE_COLUMNS`, one row per synapse (ids 1..N).
    """
    import pandas as pd

    params = params if params is not None else SynapseParams()
    if not isinstance(params, SynapseParams):
        raise InputError(f"params must be a SynapseParams, got {type(params).__name__}")
    from emkit.synapse.components import TABLE_COLUMNS

    _check_columns(clefts, TABLE_COLUMNS, "the cleft table")
    _check_columns(partners, PARTNER_COLUMNS, "the partner table")
    if partners["cleft_id"].duplicated().any():
        dup = partners["cleft_id"][partners["cleft_id"].duplicated()].iloc[0]
        raise InputError(f"the partner table has several rows for cleft {int(dup)}; give one per cleft")
    p = partners[list(PARTNER_COLUMNS)].rename(columns={"cleft_id": "id"})
    p = p.astype({"id": np.uint64, "pre_id": np.uint64, "post_id": np.uint64, "assignment_score": np.float64})
    c = clefts.astype({"id": np.uint64})
    df = c.merge(p, on="id", how="left")
    df["pre_id"] = df["pre_id"].fillna(0).astype(np.uint64)
    df["post_id"] = df["post_id"].fillna(0).astype(np.uint64)
    df["assignment_score"] = df["assignment_score"].fillna(0.0).astype(np.float64)
    keep = np.ones(len(df), bool)
    if params.drop_unassigned:
        keep &= (df["pre_id"].to_numpy() > 0) & (df["post_id"].to_numpy() > 0)
    if params.min_assignment_score > 0:
        keep &= df["assignment_score"].to_numpy() >= params.min_assignment_score
    if params.drop_autapses:
        keep &= df["pre_id"].to_numpy() != df["post_id"].to_numpy()
    df = df[keep].sort_values("id", kind="stable").reset_index(drop=True)
    if not len(df):
        return _empty_table()
    # single-linkage groups of clefts with the same partners and centroids within the distance
    cen = df[["centroid_z_nm", "centroid_y_nm", "centroid_x_nm"]].to_numpy(np.float64)
    group = np.arange(len(df))
    if params.merge_distance_nm > 0:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
        from scipy.spatial import cKDTree

        rows, cols = [], []
        for _, idx in df.groupby(["pre_id", "post_id"], sort=False).indices.items():
            if len(idx) < 2:
                continue
            pairs = cKDTree(cen[idx]).query_pairs(float(params.merge_distance_nm), output_type="ndarray")
            rows.append(idx[pairs[:, 0]])
            cols.append(idx[pairs[:, 1]])
        if rows:
            r, cc = np.concatenate(rows), np.concatenate(cols)
            g = coo_matrix((np.ones(r.size, np.int8), (r, cc)), shape=(len(df), len(df)))
            _, group = connected_components(g, directed=False)
    # number groups in order of their smallest cleft id (df is sorted by id: first occurrence)
    _, first_idx, inv = np.unique(group, return_index=True, return_inverse=True)
    order = np.argsort(first_idx, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    sid = rank[inv.ravel()]
    n = order.size
    size = df["size_voxels"].to_numpy(np.int64)
    tot = np.bincount(sid, weights=size, minlength=n)
    out = {"id": np.arange(1, n + 1, dtype=np.uint64)}
    firsts = first_idx[order]
    out["pre_id"] = df["pre_id"].to_numpy(np.uint64)[firsts]
    out["post_id"] = df["post_id"].to_numpy(np.uint64)[firsts]
    for ax, a in enumerate("zyx"):
        out[f"centroid_{a}_nm"] = np.bincount(sid, weights=cen[:, ax] * size, minlength=n) / tot
    out["size_voxels"] = tot.astype(np.int64)
    for a in "zyx":
        lo = np.full(n, np.iinfo(np.int64).max, np.int64)
        np.minimum.at(lo, sid, df[f"bbox_{a}0"].to_numpy(np.int64))
        out[f"bbox_{a}0"] = lo
    for a in "zyx":
        hi = np.full(n, -1, np.int64)
        np.maximum.at(hi, sid, df[f"bbox_{a}1"].to_numpy(np.int64))
        out[f"bbox_{a}1"] = hi
    out["cleft_score"] = np.bincount(sid, weights=df["mean_prob"].to_numpy(np.float64) * size, minlength=n) / tot
    out["assignment_score"] = np.bincount(sid, weights=df["assignment_score"].to_numpy(np.float64) * size,
                                          minlength=n) / tot
    out["n_clefts"] = np.bincount(sid, minlength=n).astype(np.int64)
    ids = df["id"].to_numpy(np.uint64)
    members = [[] for _ in range(n)]
    for s, i in zip(sid.tolist(), ids.tolist()):
        members[s].append(int(i))
    out["cleft_ids"] = members
    return pd.DataFrame({k: out[k] for k in SYNAPSE_COLUMNS})


def cleft_to_synapse(table) -> dict[int, int]:
    """``{cleft component id: synapse id}`` from a synapse table's ``cleft_ids`` column."""
    return {int(c): int(s) for s, cl in zip(table["id"], table["cleft_ids"]) for c in cl}


# ------------------------------------------------------------------ files ----------------------
def git_revision(path: str | None = None) -> str | None:
    """The git commit of the emkit source tree (with ``+dirty`` when it has changes), or None."""
    import subprocess

    path = path or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return None
        dirty = subprocess.run(["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance_record(*, command: str | None = None, models: dict | None = None, layers: dict | None = None,
                      params: SynapseParams | dict | None = None, extra: dict | None = None) -> dict:
    """What made a synapse table: command line, models (name → file/fingerprint), layers (role →
    URL), parameters, emkit version and git revision, and the time (UTC)."""
    import datetime
    import sys

    from emkit import __version__

    if command is None:
        command = " ".join(["emkit" if i == 0 and a.endswith(("emkit", "main.py")) else a
                            for i, a in enumerate(sys.argv)]) if sys.argv else None
    p = params.to_dict() if isinstance(params, SynapseParams) else (params or {})
    rec = {"command": command, "models": models or {}, "layers": layers or {}, "params": p,
           "emkit_version": __version__, "git_revision": git_revision(),
           "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    rec.update(extra or {})
    return rec


def write_synapse_table(table, out_dir, provenance: dict, *, edges=None) -> dict:
    """Write ``OUT_DIR/synapses.parquet`` (and ``OUT_DIR/edges.parquet`` when ``edges`` is given)
    and ``OUT_DIR/synapses.json`` (provenance), each whole or not at all. Returns the paths."""
    import io

    from emkit.io import join_url
    from emkit.runtime import put_atomic
    from emkit.runtime.atomic import put_json_atomic

    _check_columns(table, SYNAPSE_COLUMNS, "the synapse table")
    folder = join_url(out_dir)
    buf = io.BytesIO()
    t = table[list(SYNAPSE_COLUMNS)].copy()
    t.attrs = {}
    t.to_parquet(buf, index=False)
    put_atomic(folder, TABLE_FILE, buf.getvalue(), durable=True)
    out = {"table": join_url(folder, TABLE_FILE)}
    if edges is not None:
        buf = io.BytesIO()
        e = edges.copy()
        e.attrs = {}
        e.to_parquet(buf, index=False)
        put_atomic(folder, "edges.parquet", buf.getvalue(), durable=True)
        out["edges"] = join_url(folder, "edges.parquet")
    put_json_atomic(folder, PROVENANCE_FILE, json.loads(json.dumps(provenance, default=_json_default)),
                    durable=True)
    out["provenance"] = join_url(folder, PROVENANCE_FILE)
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def read_synapse_table(path):
    """A synapse table: a Parquet file, or a synapse output folder holding ``synapses.parquet``."""
    import pandas as pd
    from cloudfiles import CloudFiles

    from emkit.io import join_url
    from emkit.io.layer import local_path, normalize_url

    url = normalize_url(path)
    lp = local_path(url)
    if lp is not None:
        f = os.path.join(lp, TABLE_FILE) if os.path.isdir(lp) else lp
        if not os.path.isfile(f):
            raise InputError(f"no synapse table at {path} (expected a .parquet file or a folder with {TABLE_FILE})")
        df = pd.read_parquet(f)
    else:
        name = TABLE_FILE if not url.endswith(".parquet") else None
        folder = url if name else url.rsplit("/", 1)[0]
        raw = CloudFiles(join_url(folder)).get(name or url.rsplit("/", 1)[1])
        if raw is None:
            raise InputError(f"no synapse table at {path}")
        import io

        df = pd.read_parquet(io.BytesIO(raw))
    if "cleft_ids" in df.columns:
        df["cleft_ids"] = [list(map(int, v)) for v in df["cleft_ids"]]
    return df
