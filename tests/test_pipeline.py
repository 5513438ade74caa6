"""`emkit run CONFIG` / `emkit status CONFIG`: a typed configuration validated with the bad field
named; the configured stages run in order into one run folder with a provenance record each; a
rerun skips finished stages, refuses a changed configuration naming the fields, and a run killed
(SIGKILL) mid-stage resumes to byte-identical outputs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from emkit.errors import InputError
from emkit.io import Layer

#: a tiny phantom through every stage the phantom needs no oracle for but the synapse nets (the
#: phantom's true clefts/partners stand in: the nets' path is tested in test_synapse_pipeline / the demo)
TINY = {
    "input": {"phantom": {"shape": [16, 128, 128], "seed": 3, "defects": "none"}},
    "output": "run",
    "stages": {"boundary": {}, "segment": {"chunk": [8, 64, 64]},
               "synapses": {"cleft_model": "truth", "partner_model": "truth"},
               "pyramids": {}, "meshes": {}, "skeletons": {}, "evaluate": {}},
}
STAGES = ["phantom", "boundary", "segment", "synapses", "pyramids", "meshes", "skeletons", "evaluate"]

# until emkit/cli/main.py lists them, the commands are registered here (same main(), same error handling)
_SCRIPT = ("import sys; import emkit.cli.main as m; "
           "m.COMMANDS += [c for c in ('run', 'status') if c not in m.COMMANDS]; sys.exit(m.main(sys.argv[1:]))")


def cli(argv) -> int:
    import emkit.cli.main as m

    saved = list(m.COMMANDS)
    m.COMMANDS[:] = saved + [c for c in ("run", "status") if c not in saved]
    try:
        return m.main([str(a) for a in argv])
    finally:
        m.COMMANDS[:] = saved


def write_config(folder: Path, data: dict, name="pipeline.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(yaml.safe_dump(data))
    return p


# -- configuration -----------------------------------------------------------------------------

def test_config_errors_name_the_field_and_value(tmp_path):
    from emkit.pipeline.config import ConfigError, config_from_dict, load_config, parse_set

    def err(data):
        with pytest.raises(ConfigError) as e:
            config_from_dict(data)
        return str(e.value)

    base = json.loads(json.dumps(TINY))
    bad = json.loads(json.dumps(base))
    bad["stages"]["segment"]["threshold"] = 1.5
    msg = err(bad)
    assert "stages.segment.threshold" in msg and "1.5" in msg and "less than or equal to 1" in msg
    bad = json.loads(json.dumps(base))
    bad["stages"]["segmnt"] = {}
    assert "stages.segmnt: unknown field" in err(bad)
    bad = json.loads(json.dumps(base))
    bad["input"]["phantom"]["shape"] = [16, -1, 128]
    assert "input.phantom.shape" in err(bad) and "-1" in err(bad)
    bad["input"]["phantom"]["shape"] = [16, 128]
    assert "input.phantom.shape: must be 3 whole numbers (z, y, x) (got [16, 128])" in err(bad)
    bad = json.loads(json.dumps(base))
    bad["input"]["layer"] = "file:///somewhere/image"
    assert "exactly one of input.layer" in err(bad)
    bad = {"input": {"layer": "file:///x/image"}, "output": "o", "stages": {"boundary": {}, "segment": {"semantic": "oracle"}}}
    assert "stages.segment.semantic: oracle" in err(bad) and "phantom" in err(bad)
    bad = json.loads(json.dumps(base))
    bad["stages"]["segment"]["semantic"] = "net"
    assert "no stages.semantic section" in err(bad)
    bad = json.loads(json.dumps(base))
    bad["cluster"] = {"workers": 2, "scheduler": "tcp://127.0.0.1:8786"}
    assert "not both" in err(bad)
    assert "output: Field required" in err({"input": {"layer": "x"}})
    # a YAML file: the message names the file; --set values are parsed as YAML and merged
    p = write_config(tmp_path, base)
    with pytest.raises(ConfigError, match=r"pipeline\.yaml.*\n.*stages\.segment\.threshold.*'abc'"):
        load_config(p, overrides=parse_set(["stages.segment.threshold=abc"]))
    cfg = load_config(p, output=str(tmp_path / "o"), overrides=parse_set(["input.phantom.shape=8,64,64",
                                                                          "stages.meshes.reduction_factor=0"]))
    assert cfg.input.phantom.shape == (8, 64, 64) and cfg.stages.meshes.reduction_factor == 0
    assert cfg.output == str(tmp_path / "o") and cfg.stages.segment.chunk == (8, 64, 64)
    with pytest.raises(InputError, match="FIELD=VALUE"):
        parse_set(["threshold"])
    with pytest.raises(InputError, match="no configuration file"):
        load_config(tmp_path / "missing.yaml")
    # input.layer and input.phantom are alternatives: setting one replaces the other
    on_layer = load_config("phantom", overrides=parse_set(["input.layer=data/ph/image", "stages.evaluate=false"]))
    assert on_layer.input.phantom is None and on_layer.input.layer == "data/ph/image"
    assert load_config("phantom", overrides=parse_set(["input.phantom.seed=3"])).input.phantom.seed == 3


def test_a_layer_input_needs_ground_truth_to_evaluate_or_no_evaluate_stage():
    from emkit.pipeline.config import ConfigError, load_config, parse_set

    with pytest.raises(ConfigError, match=r"stages\.evaluate needs a ground-truth.*stages\.evaluate=false"):
        load_config("phantom", overrides=parse_set(["input.layer=data/em/image"]))
    cfg = load_config("phantom", overrides=parse_set(["input.layer=data/em/image", "stages.evaluate=false"]))
    assert "evaluate" not in cfg.stage_names() and "segment" in cfg.stage_names()
    cfg = load_config("phantom", overrides=parse_set(["input.layer=data/em/image",
                                                      "stages.evaluate.ground_truth=data/em/gt"]))
    assert cfg.stages.evaluate.ground_truth == "data/em/gt"


def test_a_stage_without_its_input_stage_is_refused():
    from emkit.pipeline.config import ConfigError, config_from_dict
    from emkit.pipeline.run import plan_pipeline

    cfg = config_from_dict({"input": {"layer": "file:///x/image"}, "output": "o", "stages": {"meshes": {}}})
    with pytest.raises(ConfigError, match=r"stages\.meshes needs stages\.segment"):
        plan_pipeline(cfg)
    cfg = config_from_dict(TINY)
    with pytest.raises(InputError, match="unknown stage 'segmnt'"):
        plan_pipeline(cfg, stages=["segmnt"])
    with pytest.raises(InputError, match="'align' is not in the configuration"):
        plan_pipeline(cfg, restart_from="align")


def test_shipped_config_documents_every_field():
    from emkit.pipeline import config as c

    cfg = c.load_config("phantom")
    assert cfg.stage_names()[0] == "phantom" and {"boundary", "segment", "synapses", "meshes", "skeletons",
                                                  "pyramids", "evaluate"} <= set(cfg.stage_names())
    models = [c.PhantomSource, c.UnalignedSource, c.InputConfig, c.ClusterConfig, c.PipelineConfig, c.StagesConfig, c.AlignStage, c.MasksStage,
              c.BoundaryStage, c.SemanticStage, c.SegmentStage, c.SynapsesStage, c.PyramidsStage, c.MeshesStage,
              c.SkeletonsStage, c.EvaluateStage]
    for m in models:
        for name, f in m.model_fields.items():
            assert f.description, f"{m.__name__}.{name} has no description"
    # defaults are those of the commands / library (which cite the paper)
    from emkit.mesh import MeshParams
    from emkit.segment.pipeline import DEFAULT_THRESHOLD
    from emkit.skeleton import SkeletonParams

    assert c.SegmentStage().threshold == DEFAULT_THRESHOLD
    assert c.MeshesStage().reduction_factor == MeshParams().reduction_factor
    assert c.MeshesStage().max_error == MeshParams().max_error
    assert c.SkeletonsStage().dust_threshold == SkeletonParams().dust_threshold
    assert c.SkeletonsStage().tick_threshold == SkeletonParams().tick_threshold
    from emkit.align.rough import RoughParams
    from emkit.phantom import UnalignedParams

    for k in ("shift_px", "rotation_deg", "distortion_px", "drift_px"):
        assert getattr(c.UnalignedSource(), k) == getattr(UnalignedParams(), k), k
    for k in ("coarse_nm", "neighbours", "max_rotation_deg"):
        assert getattr(c.AlignStage(), k) == getattr(RoughParams(), k), k


# -- a run -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny configuration run once through `emkit run` (in this process)."""
    import io
    from contextlib import redirect_stdout

    root = tmp_path_factory.mktemp("pipeline")
    cfg = write_config(root, {**TINY, "output": str(root / "run")})
    import torch

    buf = io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the kill test's subprocesses (OMP_NUM_THREADS=1): the net's sums then agree bit for bit
    try:
        with redirect_stdout(buf):
            rc = cli(["run", cfg, "--quiet"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0, buf.getvalue()
    return cfg, root / "run", buf.getvalue()


def test_run_writes_every_stage_with_provenance(tiny_run):
    from emkit.evaluate import evaluate

    cfg, run, out = tiny_run
    for i, name in enumerate(STAGES, start=1):  # start and end of each stage, with its duration
        assert f"[{i}/{len(STAGES)}] {name}: start" in out and f"[{i}/{len(STAGES)}] {name}: done in " in out
    assert "not configured (skipped): align, masks, semantic" in out
    seg = Layer.open(run / "seg/segmentation")
    gt = Layer.open(run / "gt/image_frame/segmentation")
    assert seg.size == gt.size == (16, 128, 128) and len(np.unique(seg.read())) > 5
    assert Layer.open(run / "affinities").kind.name == "affinities"
    scores = json.loads((run / "evaluation/scores.json").read_text())
    assert scores["segmentation"] == json.loads(json.dumps(evaluate(seg.read(), gt.read(), k=5)))
    assert scores["synapses"]["n_true"] >= 1 and 0 <= scores["synapses"]["recall"] <= 1
    info = json.loads((run / "seg/segmentation/info").read_text())
    assert info["mesh"] == "mesh" and info["skeletons"] == "skeletons" and len(info["scales"]) >= 2
    assert len(json.loads((run / "image/info").read_text())["scales"]) >= 2
    assert (run / "skeletons/neurons.parquet").stat().st_size > 0
    assert (run / "synapses/synapses.parquet").exists()
    for name in STAGES:
        rec = json.loads((run / "provenance" / f"{name}.json").read_text())
        assert rec["status"] == "done" and rec["stage"] == name and rec["seconds"] >= 0
        assert rec["started"] <= rec["ended"] and rec["emkit_version"] and "git_revision" in rec
        assert {"numpy", "torch", "cloud-volume", "dask"} <= {k for k, v in rec["versions"].items() if v}
        assert rec["command"].startswith("emkit run") and str(cfg) in rec["command"]
        assert rec["config"]["input"]["phantom"]["seed"] == 3
    rec = json.loads((run / "provenance/boundary.json").read_text())
    assert rec["models"]["boundary"]["model"] == "boundary" and len(rec["models"]["boundary"]["weights"]) == 16
    assert rec["config"]["stages"]["boundary"]["model"] == "boundary"
    rec = json.loads((run / "provenance/meshes.json").read_text())
    assert set(rec["config"]["stages"]) == {"boundary", "segment", "meshes"}  # what its outputs depend on
    assert rec["summary"]["segments"] == len(np.unique(seg.read())) - (0 in seg.read())


def test_rerun_skips_finished_stages_and_refuses_changes(tiny_run, capsys):
    cfg, run, _ = tiny_run
    info = run / "seg/segmentation/info"
    before = {p: p.stat().st_mtime_ns for p in [info, *(run / "provenance").iterdir()]}
    assert cli(["run", cfg, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: done earlier" in out for name in STAGES) and "pipeline: every stage was done already" in out
    assert {p: p.stat().st_mtime_ns for p in before} == before  # nothing rewritten

    # a changed parameter of a finished stage: refused before anything runs, the field named
    assert cli(["run", cfg, "--quiet", "--set", "stages.segment.threshold=0.4"]) == 2
    err = capsys.readouterr().err
    assert "stages.segment.threshold: 0.5 -> 0.4" in err and "--overwrite" in err and "--restart-from" in err
    assert "stage(s) segment, synapses, pyramids, meshes, skeletons, evaluate" in err  # and what reads from it
    assert cli(["run", cfg, "--quiet", "--set", "input.phantom.seed=4"]) == 2
    assert "input.phantom.seed: 3 -> 4" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in before} == before

    # status: every stage done, with its duration; a changed configuration is shown, not acted on
    assert cli(["status", cfg]) == 0
    out = capsys.readouterr().out
    for name in STAGES:
        rec = json.loads((run / "provenance" / f"{name}.json").read_text())
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [name])
        assert line.split()[1] == "done" and f"{rec['seconds']:.1f} s" in line
    assert f"{len(STAGES)} of {len(STAGES)} stage(s) done" in out
    # the run folder holds the configuration it ran with: it stands for the file
    assert cli(["status", str(run)]) == 0
    assert f"{len(STAGES)} of {len(STAGES)} stage(s) done" in capsys.readouterr().out
    assert cli(["run", str(run), "--quiet"]) == 0
    assert "pipeline: every stage was done already" in capsys.readouterr().out
    assert cli(["status", cfg, "--set", "stages.meshes.reduction_factor=0", "--json"]) == 0
    st = {r["stage"]: r for r in json.loads(capsys.readouterr().out)["stages"]}
    assert st["meshes"]["state"] == "changed" and st["meshes"]["changes"] == ["stages.meshes.reduction_factor: 100 -> 0"]
    assert st["segment"]["state"] == "done" and st["skeletons"]["state"] == "done"  # they do not read meshes


def test_overwrite_recomputes_only_the_changed_stage_and_failures_are_recorded(tiny_run, tmp_path, capsys):
    from emkit.pipeline import load_config, run_pipeline

    _, run, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = json.loads(json.dumps({**TINY, "output": str(copy)}))
    data["stages"]["meshes"] = {"reduction_factor": 0}
    cfg = write_config(tmp_path, data)
    c = load_config(cfg)
    rep = run_pipeline(c, overwrite=True, progress=False, echo=None)
    assert rep.actions == {**{n: "skip" for n in STAGES}, "meshes": "redo"}
    rec = json.loads((copy / "provenance/meshes.json").read_text())
    assert rec["status"] == "done" and rec["config"]["stages"]["meshes"]["reduction_factor"] == 0
    assert rec["action"] == "redo"

    # a failing stage: the run stops with an error, the record says failed with the message; status shows it
    assert cli(["run", cfg, "--quiet", "--set", "stages.evaluate.ground_truth=/nowhere/gt",
                "--restart-from", "evaluate"]) == 2
    assert "/nowhere/gt" in capsys.readouterr().err
    assert cli(["status", cfg, "--set", "stages.evaluate.ground_truth=/nowhere/gt"]) == 0
    out = capsys.readouterr().out
    assert "evaluate   failed" in out and "error:" in out and "/nowhere/gt" in out.split("error:")[1]
    rec = json.loads((copy / "provenance/evaluate.json").read_text())
    assert rec["status"] == "failed" and "/nowhere/gt" in rec["error"] and rec["ended"]


# -- a killed run ------------------------------------------------------------------------------

def _files(folder: Path) -> dict:
    """Every output file's bytes, except the records of when and how a run ran (provenance, markers,
    the JSON files that name the run folder, and the run's own configuration, which names it too)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or rel.startswith("provenance/") or "/.emkit/" in f"/{rel}" or p.name == "provenance":
            continue
        if p.suffix == ".json" or rel.startswith(".") or "/." in rel or rel == "pipeline.yaml":
            continue
        out[rel] = p.read_bytes()
    return out


def test_killed_run_resumes_to_identical_outputs(tiny_run, tmp_path):
    _, ref, _ = tiny_run
    run = tmp_path / "run"
    cfg = write_config(tmp_path, {**TINY, "output": str(run)})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EMKIT_TEST_ATOMIC_PAUSE": str(run / "seg" / "history.npz"),
           "EMKIT_TEST_ATOMIC_PAUSE_S": "120"}
    cmd = [sys.executable, "-c", _SCRIPT, "run", str(cfg), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seg = run / "seg"
    t0 = time.monotonic()
    try:  # killed in the segment stage, while its merge history is being written (its chunks are done)
        while not (seg.is_dir() and any(f.startswith(".history.npz.") for f in os.listdir(seg))):
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the kill: {proc.stderr.read()}"
            assert time.monotonic() - t0 < 300, "timed out waiting for the segment stage"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    rec = json.loads((run / "provenance/segment.json").read_text())
    assert rec["status"] == "running" and not (seg / "history.npz").exists()
    assert not (run / "provenance/synapses.json").exists()
    st = subprocess.run([sys.executable, "-c", _SCRIPT, "status", str(cfg)], capture_output=True, text=True,
                        timeout=120)
    assert st.returncode == 0, st.stderr
    states = {ln.split()[0]: ln.split()[1] for ln in st.stdout.splitlines()[1:-1] if ln.startswith("  ") and
              ln.split()[0] in STAGES}
    assert states == {"phantom": "done", "boundary": "done", "segment": "interrupted", "synapses": "pending",
                      "pyramids": "pending", "meshes": "pending", "skeletons": "pending", "evaluate": "pending"}

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in env.items() if not k.startswith("EMKIT_TEST_")})
    assert res.returncode == 0, res.stderr
    assert "phantom: done earlier" in res.stdout and "boundary: done earlier" in res.stdout
    assert "segment: resume" in res.stdout
    rec = json.loads((run / "provenance/segment.json").read_text())
    assert rec["status"] == "done" and rec["action"] == "resume"
    assert rec["summary"]["executed"]["leaves"] == 0  # the chunks done before the kill were not redone
    got, want = _files(run), _files(ref)
    assert len(want) > 50 and set(got) == set(want)  # layers' chunks, meshes, skeletons, history, tables
    assert [k for k in want if got[k] != want[k]] == []
    scores = [_no_urls(json.loads((r / "evaluation/scores.json").read_text())) for r in (run, ref)]
    assert scores[0] == scores[1] and scores[0]["synapses"]["n_true"] >= 1


def _no_urls(obj):
    """``obj`` without the strings naming files (the two runs lie in different folders)."""
    if isinstance(obj, dict):
        return {k: _no_urls(v) for k, v in obj.items() if not (isinstance(v, str) and "://" in v)}
    if isinstance(obj, list):
        return [_no_urls(v) for v in obj]
    return obj
