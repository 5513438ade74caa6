"""Shipped weights carry honest, checkable provenance: each checkpoint matches its json, the boundary
net's recorded training command replays (first iterations, same losses), and the semantic net says
plainly what cannot be rebuilt from the repository."""
import importlib.util
import json
from pathlib import Path

import pytest

from helpers_require import require

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "emkit" / "models"


def _tool():
    spec = importlib.util.spec_from_file_location("replay_training", ROOT / "tools" / "replay_training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _meta(name):
    return json.loads((MODELS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(p.stem for p in MODELS.glob("*.pt")))
def test_checkpoint_matches_its_provenance(name):
    """The weights are the ones the json describes: same net, parameter count, seed, command, revision."""
    require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
    from emkit.nets.checkpoint import load_checkpoint

    meta = _meta(name)
    blob = load_checkpoint(MODELS / f"{name}.pt")
    assert blob["config"] == meta["net_config"]
    assert sum(v.numel() for v in blob["state_dict"].values()) == meta["n_parameters"]
    extra = blob["extra"]
    assert extra["seed"] == meta["seed"] and extra["iteration"] == meta["best_iteration"]
    assert extra["git_revision"] and meta["git_revision"].startswith(extra["git_revision"])
    assert extra["train_config"] == meta["train_config"]
    # the json's command is the checkpoint's, up to the json's explanation of file names
    assert meta["command"].split(" (")[0].split()[:3] == extra["command"].split()[:3]
    assert [v["iteration"] for v in meta["validation"]] == sorted(v["iteration"] for v in meta["validation"])


def test_replay_command_is_the_recorded_one():
    """The replay record is the shipped command with only --iterations, --threads 1 and a scratch --out changed."""
    tool = _tool()
    meta = _meta("boundary")
    rec = meta["replay"]
    assert rec["command"] == tool.display_command(tool.replay_args(meta["command"], "x", rec["iterations"]))
    assert f"--seed {meta['seed']}" in rec["command"] and "--preset phantom" in rec["command"]
    assert len(rec["losses"]) == rec["iterations"] >= 3
    assert set(rec["head_losses"]) == {h["name"] for h in meta["net_config"]["heads"]}
    for i, total in enumerate(rec["losses"]):     # the total is the sum of the heads' losses
        assert total == pytest.approx(sum(v[i] for v in rec["head_losses"].values()), rel=1e-6)
    assert rec["git_revision"] and len(rec["source_fingerprint"]) == 64


@pytest.mark.slow
def test_boundary_training_replays_its_recorded_losses():
    """Run the boundary net's recorded command again for its first iterations: the losses must equal the
    recorded ones (a change in targets, sampling, augmentation, the net or the phantom shows up here)."""
    require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
    tool = _tool()
    meta = _meta("boundary")
    rec = meta["replay"]
    got = tool.run_replay(meta["command"], rec["iterations"])
    problems = tool.compare(rec, got)
    assert not problems, tool.explain(rec, problems)


def test_compare_catches_a_changed_loss():
    tool = _tool()
    rec = {"iterations": 2, "losses": [1.0, 0.9], "head_losses": {"a": [0.5, 0.45], "b": [0.5, 0.45]},
           "tolerance": 1e-5}
    same = {"iteration": [1, 2], "losses": [1.000001, 0.9], "head_losses": {"a": [0.5, 0.45], "b": [0.5, 0.45]}}
    assert tool.compare(rec, same) == []
    moved = {**same, "losses": [1.0, 0.9001]}
    assert any(p.startswith("loss:") for p in tool.compare(rec, moved))
    head = {**same, "head_losses": {"a": [0.5, 0.45], "b": [0.5, 0.46]}}
    assert [p.split(":")[0] for p in tool.compare(rec, head)] == ["loss_b"]
    assert tool.compare(rec, {**same, "iteration": [1]})


def test_semantic_provenance_says_what_cannot_be_rebuilt():
    """The shipped semantic net was fine-tuned from a GPU-stage checkpoint. Either that checkpoint is in the
    repository, or the json and the models README say plainly that it is not and how to rebuild one."""
    meta = _meta("semantic")
    init = meta["train_config"]["init"]
    rep = meta["reproducibility"]
    if (ROOT / init).is_file():
        assert rep["starting_weights_in_repository"] is True and "replay" in meta
        return
    assert rep["starting_weights_in_repository"] is False and rep["bit_for_bit"] is False
    assert init in rep["starting_weights"] and "not in the repository" in rep["starting_weights"]
    script = ROOT / rep["rebuild_script"]
    assert script.is_file()
    text = script.read_text()
    # the rebuild script runs the recorded recipe of both stages
    assert "--widths 8,16,32,64,128 --patch 16,192,192" in text and "--lr 1e-4 --iterations 700" in text
    assert "--seed 0" in text and "--seed 2" in text
    readme = (MODELS / "README.md").read_text()
    assert "not in the repository" in readme and rep["rebuild_script"] in readme
