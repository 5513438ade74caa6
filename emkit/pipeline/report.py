"""Every result of an ``emkit run`` folder in one place: stage timings, scores, tables.

:func:`run_results` reads what the stages recorded (``RUN/provenance/<stage>.json``), the scores
of the ``evaluate`` stage (``RUN/evaluation/scores.json``), the synapse table and edge list, and
the per-neuron skeleton table — the outputs named in each stage's record, so a run whose stages
wrote elsewhere is still found. ``notebooks/09_evaluation.ipynb`` plots them.
"""
from __future__ import annotations

import json
import os

from ..errors import InputError

__all__ = ["run_results"]


def _read_json(url: str):
    from cloudfiles import CloudFile

    raw = CloudFile(url).get()
    return None if raw is None else json.loads(raw)


def _read_parquet(url: str):
    import io

    import pandas as pd
    from cloudfiles import CloudFile

    raw = CloudFile(url).get()
    return None if raw is None else pd.read_parquet(io.BytesIO(raw))


def run_results(run) -> dict:
    """The results of a run folder (``emkit run``'s output), as tables.

    Parameters
    ----------
    run : the run folder (path or URL).

    Returns
    -------
    dict with
        ``stages`` — DataFrame: stage, status, seconds, started, action, error (one row per
        recorded stage, in the order they ran);
        ``segmentation`` — dict of scores (``voi_split``, ``voi_merge``, ``arand``, …) or None;
        ``worst_splits`` / ``worst_merges`` — DataFrames of the objects most split / merged, or None;
        ``synapse_scores`` — dict (precision, recall, partner accuracy, edges …) or None;
        ``synapses`` — the synapse table (DataFrame) or None; ``edges`` — the edge list or None;
        ``neurons`` — the per-neuron skeleton table (path length µm, branch points, synapses) or None.

    Raises
    ------
    InputError
        ``run`` holds no stage record (not a run folder).
    """
    import pandas as pd

    from ..io import join_url
    from ..io.layer import normalize_url
    from .config import STAGE_ORDER

    base = normalize_url(os.fspath(run)).rstrip("/")
    records = {}
    for name in STAGE_ORDER:
        rec = _read_json(join_url(base, "provenance", f"{name}.json"))
        if rec is not None:
            records[name] = rec
    if not records:
        raise InputError(f"{run} is not an emkit run folder: no stage records in {run}/provenance/")
    stages = pd.DataFrame([{"stage": n, "status": r.get("status"), "seconds": r.get("seconds"),
                            "started": r.get("started"), "action": r.get("action"), "error": r.get("error")}
                           for n, r in records.items()])
    stages = stages.sort_values("started", kind="stable").reset_index(drop=True)

    def output(stage: str, key: str):
        return (records.get(stage) or {}).get("outputs", {}).get(key)

    out = {"stages": stages, "segmentation": None, "worst_splits": None, "worst_merges": None,
           "synapse_scores": None, "synapses": None, "edges": None, "neurons": None}
    scores_url = output("evaluate", "scores") or join_url(base, "evaluation", "scores.json")
    scores = _read_json(scores_url) or {}
    seg = scores.get("segmentation")
    if seg:
        out["worst_splits"] = pd.DataFrame(seg.get("worst_splits", []))
        out["worst_merges"] = pd.DataFrame(seg.get("worst_merges", []))
        out["segmentation"] = {k: v for k, v in seg.items() if not k.startswith("worst_")}
    out["synapse_scores"] = scores.get("synapses")
    table = output("synapses", "synapses") or join_url(base, "synapses", "synapses.parquet")
    out["synapses"] = _read_parquet(table)
    out["edges"] = _read_parquet(table.rsplit("/", 1)[0] + "/edges.parquet")
    out["neurons"] = _read_parquet(output("skeletons", "table") or join_url(base, "skeletons", "neurons.parquet"))
    return out
