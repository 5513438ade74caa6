"""``emkit status CONFIG``: per stage done / running / interrupted / failed / pending, with durations."""
from __future__ import annotations

import os
import socket

from .config import PipelineConfig, diff_fields
from .provenance import read_records
from .stages import stage_key

__all__ = ["pipeline_status", "format_status", "STATES"]

#: the states a stage can be in.
STATES = ("done", "running", "interrupted", "failed", "pending", "changed")


def _alive(rec: dict) -> bool:
    if rec.get("host") != socket.gethostname():
        return True  # another machine: cannot tell, take the record's word
    try:
        os.kill(int(rec.get("pid")), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def pipeline_status(cfg: PipelineConfig) -> dict:
    """The state of every configured stage of the run folder ``cfg.output``.

    Returns
    -------
    dict: ``run`` (the folder's URL) and ``stages``: a list of dicts with ``stage``, ``state``
    (one of :data:`STATES`: ``running`` while the recorded process lives, ``interrupted`` when
    it is gone — on this machine — without finishing, ``changed`` when done with another
    configuration, then ``changes`` lists the fields), ``seconds``, ``started``, ``ended``,
    ``error`` (a failed stage's message) and ``summary``.
    """
    from ..io.layer import normalize_url

    run = normalize_url(os.path.abspath(cfg.output) if "://" not in cfg.output else cfg.output)
    names = cfg.stage_names()
    records = read_records(run, names)
    rows = []
    for name in names:
        rec = records[name]
        row = {"stage": name, "state": "pending", "seconds": None, "started": None, "ended": None, "error": None,
               "summary": None, "changes": []}
        if rec is not None:
            row.update(seconds=rec.get("seconds"), started=rec.get("started"), ended=rec.get("ended"),
                       error=rec.get("error"), summary=rec.get("summary"))
            status = rec.get("status")
            if status == "running":
                row["state"] = "running" if _alive(rec) else "interrupted"
            else:
                row["state"] = status
            changes = diff_fields(rec.get("config") or {}, stage_key(cfg, name))
            if changes:
                row["changes"] = changes
                if status == "done":
                    row["state"] = "changed"
        rows.append(row)
    return {"run": run, "stages": rows}


def format_status(status: dict) -> str:
    """A table of :func:`pipeline_status`, one line per stage (plus errors and changed fields)."""
    lines = [f"run folder {status['run']}"]
    total = 0.0
    for r in status["stages"]:
        sec = "" if r["seconds"] is None else f"{r['seconds']:8.1f} s"
        when = f"  (started {r['started']})" if r["state"] in ("running", "interrupted") else ""
        lines.append(f"  {r['stage']:<10} {r['state']:<12}{sec:>11}{when}")
        if r["state"] == "failed" and r["error"]:
            lines.append(f"      error: {r['error']}")
        if r["changes"]:
            lines.append("      configuration changed since: " + "; ".join(r["changes"]))
        if r["state"] == "done" and r["seconds"]:
            total += r["seconds"]
    n = {s: sum(r["state"] == s for r in status["stages"]) for s in ("done", "pending")}
    lines.append(f"{n['done']} of {len(status['stages'])} stage(s) done ({total:.1f} s), {n['pending']} pending")
    return "\n".join(lines)
