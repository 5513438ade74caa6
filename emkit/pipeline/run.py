"""``emkit run``: the configured stages in order, resumable stage by stage, with provenance.

Each stage is planned against its record in ``RUN/provenance/`` (:mod:`emkit.pipeline.provenance`):

- no record: it runs;
- ``done`` with the same configuration (:func:`emkit.pipeline.stages.stage_key`): skipped;
- ``running`` (a killed run) or ``failed`` with the same configuration: resumed — chunk by chunk
  where its layer function keeps done-markers (inference, segmentation, synapses), else redone
  over its own partial outputs;
- any record made with another configuration: the whole run is refused before anything runs,
  naming the changed fields (``stages.segment.threshold: 0.5 -> 0.4``), unless ``overwrite``
  (recompute the changed stages and those reading from them) or ``restart_from`` (recompute that
  stage and every later one). Outputs are never replaced silently.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

from ..errors import InputError, LayerExistsError
from .config import STAGE_ORDER, ConfigError, PipelineConfig, diff_fields
from .provenance import command_line, environment, read_records, utc_now, write_record
from .stages import STAGES, Context, dependencies, required_missing, stage_key

__all__ = ["run_pipeline", "plan_pipeline", "RunReport", "ConfigChangedError", "stage_available"]


class ConfigChangedError(InputError):
    """The run folder holds outputs made with another configuration (the message names the fields)."""


@dataclass
class RunReport:
    """What :func:`run_pipeline` did: per stage ``action`` (ran, resumed, redone, skipped, ...)
    and ``seconds`` of this run; the records of every stage; notes printed along the way."""

    run: str
    actions: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    records: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    dashboard_link: str = ""


#: the library module each stage needs; a stage whose module is missing is skipped, said so.
STAGE_MODULES = {"phantom": "emkit.phantom", "align": "emkit.align.rough", "masks": "emkit.detect.masks",
                 "boundary": "emkit.inference", "semantic": "emkit.inference", "segment": "emkit.segment",
                 "synapses": "emkit.synapse.pipeline", "pyramids": "emkit.pyramid", "meshes": "emkit.mesh",
                 "skeletons": "emkit.skeleton", "evaluate": "emkit.evaluate"}


def stage_available(name: str) -> bool:
    """True when this emkit has the library code of stage ``name``."""
    import importlib.util

    try:
        return importlib.util.find_spec(STAGE_MODULES[name]) is not None
    except ModuleNotFoundError:
        return False


def plan_pipeline(cfg: PipelineConfig, *, stages=None, overwrite: bool = False, restart_from: str | None = None,
                  records: dict | None = None) -> dict:
    """What :func:`run_pipeline` would do per configured stage: ``{stage: action}``.

    Actions: ``run`` (new), ``skip`` (done, same configuration), ``resume`` (interrupted or
    failed, same configuration), ``redo`` (recomputed over its outputs: ``restart_from``, or
    ``overwrite`` for a changed or unfinished stage), ``unselected`` (not in ``stages``),
    ``unavailable``.

    Raises
    ------
    ConfigError : a stage the configuration lacks a required stage for; unknown stage names.
    ConfigChangedError : records made with another configuration (fields named), without
        ``overwrite`` / ``restart_from``; or a selected stage whose inputs are not done.
    """
    problems = required_missing(cfg)
    if problems:
        raise ConfigError("invalid pipeline configuration:\n" + "\n".join(f"  {p}" for p in problems))
    names = cfg.stage_names()
    for what, given in (("--stages", stages or []), ("--restart-from", [restart_from] if restart_from else [])):
        for s in given:
            if s not in STAGE_ORDER:
                raise InputError(f"{what}: unknown stage {s!r}; stages: {', '.join(STAGE_ORDER)}")
            if s not in names:
                raise InputError(f"{what}: stage {s!r} is not in the configuration (configured: {', '.join(names)})")
    records = records or {}
    restart_at = names.index(restart_from) if restart_from else len(names)
    plan, changed, conflicts = {}, [], []
    for i, name in enumerate(names):
        rec = records.get(name)
        key = stage_key(cfg, name)
        if not stage_available(name):
            plan[name] = "unavailable"
        elif i >= restart_at:
            plan[name] = "redo" if rec is not None else "run"
        elif rec is None:
            plan[name] = "run"
        elif rec.get("config") != key:
            if overwrite:
                plan[name] = "redo"
            else:
                conflicts.append(name)
                changed += diff_fields(rec.get("config") or {}, key)
                plan[name] = "conflict"
        elif rec.get("status") == "done":
            plan[name] = "skip"
        else:
            plan[name] = "redo" if overwrite else "resume"
        if stages is not None and name not in stages and plan[name] not in ("unavailable", "conflict"):
            plan[name] = "unselected"
    if conflicts:
        lines = "\n".join(f"  {c}" for c in dict.fromkeys(changed))
        raise ConfigChangedError(
            f"the run folder holds outputs of stage(s) {', '.join(conflicts)} made with another configuration; "
            f"changed:\n{lines}\npass --overwrite to recompute the changed stages (and those reading from them), "
            "--restart-from STAGE to recompute from a stage on, or give another output folder")
    if stages is not None:
        for name in stages:
            for dep in dependencies(cfg, name):
                if plan[dep] in ("unselected",) and (records.get(dep) or {}).get("status") != "done":
                    raise ConfigChangedError(f"--stages {name} reads the outputs of stage {dep}, which is not done; "
                                             f"add {dep} to --stages or run it first")
    return plan


def run_pipeline(cfg: PipelineConfig, *, workers: int | None = None, scheduler: str | None = None, stages=None,
                 overwrite: bool = False, restart_from: str | None = None, progress: bool = True,
                 command: str | None = None, echo=print) -> RunReport:
    """Run the configured stages in order into ``cfg.output`` (see the module docstring).

    Parameters
    ----------
    cfg : a validated :class:`~emkit.pipeline.config.PipelineConfig` (:func:`~emkit.pipeline.load_config`).
    workers, scheduler : replace the configuration's ``cluster`` section: ``workers=0`` runs in
        this process, N starts a local dask cluster of N workers shared by every stage,
        ``scheduler`` attaches to a running one. Results do not depend on it.
    stages : run only these stages (names); the stages they read from must be done.
    overwrite : recompute, over their outputs, the stages whose recorded configuration differs and
        those left unfinished (instead of resuming them).
    restart_from : recompute this stage and every later one.
    progress : progress bars of the stages.
    command : command line recorded in the provenance (default: this process's).
    echo : where the stage start / end lines go (``None``: nowhere).

    Returns
    -------
    RunReport

    Raises
    ------
    ConfigError, ConfigChangedError : see :func:`plan_pipeline` (raised before anything runs).
    Whatever a stage raises (its record then says ``failed`` with the message).
    """
    from ..io.layer import normalize_url
    from .redact import redact, remember

    remember(cfg.model_dump(mode="json"))   # the secrets of its URLs: masked wherever they are printed or recorded
    say = (lambda *a, **k: echo(*(redact(x) for x in a), **k)) if echo else (lambda *a, **k: None)
    run = normalize_url(os.path.abspath(cfg.output) if "://" not in cfg.output else cfg.output)
    names = cfg.stage_names()
    records = read_records(run, names)
    plan = plan_pipeline(cfg, stages=stages, overwrite=overwrite, restart_from=restart_from, records=records)
    rep = RunReport(run=run, records=dict(records))
    todo = [n for n in names if plan[n] in ("run", "resume", "redo")]
    skipped_sections = [n for n in STAGE_ORDER[1:] if getattr(cfg.stages, n) is None]
    if skipped_sections:
        rep.notes.append(f"not configured (skipped): {', '.join(skipped_sections)}")
    for n in names:
        if plan[n] == "unavailable":
            rep.notes.append(f"{n}: this emkit has no {STAGE_MODULES[n]} yet; stage skipped")
    for note in rep.notes:
        say(note, flush=True)
    if todo:
        from .config import save_run_config

        save_run_config(cfg, run)
    cluster = None
    env = None
    ctx = Context(cfg=cfg, run=run, progress=progress, command=command or command_line())
    try:
        if todo:   # the configuration's `cluster:` section, or --workers / --scheduler instead of it
            from .cluster import make_cluster

            cluster = make_cluster(cfg, workers=workers, scheduler=scheduler, quiet=echo is None)
        if cluster is not None:
            rep.dashboard_link = cluster.dashboard_link
            ctx.client = cluster
        t_run = time.perf_counter()
        for i, name in enumerate(names, start=1):
            action = plan[name]
            rep.actions[name] = action
            tag = f"[{i}/{len(names)}] {name}"
            if action == "skip":
                say(f"{tag}: done earlier ({records[name].get('seconds') or 0:.1f} s); skipped", flush=True)
                continue
            if action == "unselected":
                say(f"{tag}: not selected (--stages); skipped", flush=True)
                continue
            if action == "unavailable":
                continue
            env = env or environment()
            stage = STAGES[name]
            section = cfg.section(name)
            ow = action == "redo" or (action == "resume" and not stage.resumes_itself)
            verb = {"run": "start", "resume": "resume (interrupted or failed earlier)", "redo": "recompute"}[action]
            say(f"{tag}: {verb} — {stage.doc}", flush=True)
            started, t0 = utc_now(), time.perf_counter()
            record = {"stage": name, "status": "running", "config": stage_key(cfg, name), "action": action,
                      "command": ctx.command, **env, "started": started, "ended": None, "seconds": None,
                      "host": socket.gethostname(), "pid": os.getpid(), "run": run}
            write_record(run, name, record)
            try:
                out = stage.func(ctx, section, ow)
            except BaseException as exc:
                msg = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
                if isinstance(exc, LayerExistsError) and action == "resume":
                    # the earlier attempt left outputs this one cannot resume from (e.g. other arguments)
                    hint = (f"; to recompute stage {name} over what the interrupted attempt left: --overwrite "
                            f"or --restart-from {name}")
                    record.update(status="failed", error=msg + hint, ended=utc_now(),
                                  seconds=round(time.perf_counter() - t0, 3))
                    write_record(run, name, record)
                    say(f"{tag}: failed after {record['seconds']:.1f} s: {msg}", flush=True)
                    raise LayerExistsError(f"{exc}{hint}") from exc
                record.update(status="failed", error=msg, ended=utc_now(), seconds=round(time.perf_counter() - t0, 3))
                write_record(run, name, record)
                rep.records[name] = record
                say(f"{tag}: failed after {record['seconds']:.1f} s: {msg}", flush=True)
                raise
            sec = round(time.perf_counter() - t0, 3)
            record.update(status="done", ended=utc_now(), seconds=sec, outputs=out.get("outputs", {}),
                          models=out.get("models", {}), summary=out.get("summary", {}))
            write_record(run, name, record)
            rep.records[name] = record
            rep.seconds[name] = sec
            for note in ctx.notes:
                say(f"  {note}", flush=True)
            rep.notes += ctx.notes
            ctx.notes = []
            say(f"{tag}: done in {sec:.1f} s", flush=True)
        if todo:
            say(f"pipeline: {len(todo)} stage(s) run in {time.perf_counter() - t_run:.1f} s; records in "
                f"{run}/provenance/", flush=True)
        else:
            say(f"pipeline: every stage was done already ({run})", flush=True)
    finally:
        if cluster is not None:
            cluster.close()
    return rep
