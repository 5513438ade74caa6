"""The synaptic-cleft net: targets, cleft-balanced patch sampling, a short training run, validation
scores, ``emkit infer cleft`` with the shipped model, and bad input (issue 8 §1)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from emkit.errors import InputError


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    from emkit.phantom import make_phantom, write_phantom

    d = tmp_path_factory.mktemp("cleft_phantom") / "ph"
    ph = make_phantom((24, 160, 160), seed=3)
    assert (ph.clefts > 0).any(), "the test phantom needs clefts"
    write_phantom(ph, str(d), progress=False)
    return d, ph


# ---------------------------------------------------------------- targets -------------------------
def test_cleft_target_is_binary_and_valid_everywhere_unmasked():
    from emkit.nets import NetConfig, cleft_heads
    from emkit.train.targets import cleft_target, make_targets

    c = np.zeros((2, 4, 4), np.uint64)
    c[0, 1, 1] = 7
    c[1, 2, 2:4] = 3
    mask = np.ones((2, 4, 4), np.uint8)
    mask[1, 0, 0] = 0
    t, v = cleft_target(c, mask)
    assert t.shape == v.shape == (1, 2, 4, 4) and t.dtype == np.float32
    assert t.sum() == 3 and t[0, 0, 1, 1] == 1 and t[0, 1, 2, 3] == 1
    assert v.sum() == c.size - 1 and v[0, 1, 0, 0] == 0
    cfg = NetConfig(widths=(4, 4, 8), heads=cleft_heads(), patch_size=(2, 8, 8))
    out = make_targets({"clefts": c, "mask": mask}, cfg)
    assert set(out) == {"cleft"} and np.array_equal(out["cleft"][0], t)
    with pytest.raises(InputError, match="clefts"):
        make_targets({"labels": c}, cfg)
    with pytest.raises(InputError, match="dtype"):
        cleft_target(c.astype(np.float32))


def test_cleft_head_config():
    from emkit.nets import CLEFT_WIDTHS, HeadSpec, NetConfig

    assert CLEFT_WIDTHS == (32, 40, 80)  # paper, Methods: Synapse detection
    with pytest.raises(InputError, match="1 channel"):
        NetConfig(widths=(4, 8), heads=(HeadSpec("cleft", 2, "cleft"),))


# ---------------------------------------------------------------- sampler -------------------------
def test_sampler_centres_patches_on_clefts(phantom_dir):
    from emkit.train.sampler import PatchSampler, open_dataset

    d, _ = phantom_dir
    vol = open_dataset(str(d), need=("clefts",), only=("clefts",))
    assert "labels" not in vol.layers and "clefts" in vol.arrays
    patch = (8, 48, 48)
    hit = {}
    for frac in (1.0, 0.0):
        s = PatchSampler([vol], patch, balance="clefts", cleft_fraction=frac)
        hit[frac] = np.mean([(s.sample(np.random.default_rng([5, i]))["clefts"] > 0).any() for i in range(30)])
    assert hit[1.0] == 1.0                     # every cleft-centred patch holds a cleft voxel
    assert hit[0.0] < hit[1.0]                 # uniform patches often miss them (clefts are ~0.1 % of voxels)
    # the ground truth follows the image frame (the phantom's displacement), as the labels do
    assert vol.arrays["clefts"].shape == vol.size


def test_sampler_cleft_balance_needs_clefts(phantom_dir, tmp_path):
    from emkit.io import Layer
    from emkit.train.sampler import PatchSampler, open_dataset

    d, ph = phantom_dir
    vol = open_dataset(str(d), need=(), only=())
    with pytest.raises(InputError, match="gt/clefts"):
        PatchSampler([vol], (8, 48, 48), balance="clefts")
    with pytest.raises(InputError, match="cleft_fraction"):
        PatchSampler([vol], (8, 48, 48), cleft_fraction=1.5)
    empty = tmp_path / "empty"
    Layer.create(str(empty / "image"), "image", ph.image.shape, resolution=(40, 8, 8)).write(ph.image)
    Layer.create(str(empty / "gt" / "clefts"), "segmentation", ph.image.shape,
                 resolution=(40, 8, 8)).write(np.zeros(ph.image.shape, np.uint64))
    with pytest.raises(InputError, match="no cleft voxel"):
        PatchSampler([open_dataset(str(empty), need=("clefts",))], (8, 48, 48), balance="clefts")


# ---------------------------------------------------------------- training ------------------------
def test_train_cleft_two_iterations(phantom_dir, tmp_path):
    from emkit.train import TrainConfig, train

    d, _ = phantom_dir
    cfg = TrainConfig(task="cleft", data=(str(d),), val_data=(str(d),), iterations=2, widths=(4, 6, 8),
                      patch_size=(8, 48, 48), val_size=(24, 160, 160), val_interval=2, checkpoint_interval=2,
                      out_dir=str(tmp_path / "run"), progress=False, threads=1)
    r = train(cfg)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert [h.kind for h in r.model.config.heads] == ["cleft"] and r.model.config.out_channels == 1
    assert log["augment"] == "cleft" and len(log["train"]["loss"]) == 2
    assert all(np.isfinite(log["train"]["loss"]))
    v = log["validation"][-1]
    for k in ("cleft_precision", "cleft_recall", "cleft_f1", "cleft_voxel_f1", "loss_cleft"):
        assert k in v and 0 <= v[k] <= 1 or k == "loss_cleft"
    assert v["cleft_n_true"] >= 1
    assert r.best is not None and r.best.is_file()


def test_train_cleft_bad_input(tmp_path, phantom_dir):
    from emkit.train import TrainConfig, train

    with pytest.raises(InputError, match="task"):
        TrainConfig(task="clefts", data=("x",))
    with pytest.raises(InputError, match="balance"):
        TrainConfig(task="cleft", data=("x",), balance="cleft")
    d, ph = phantom_dir
    no_gt = tmp_path / "no_gt"
    from emkit.io import Layer

    Layer.create(str(no_gt / "image"), "image", ph.image.shape, resolution=(40, 8, 8)).write(ph.image)
    with pytest.raises(InputError, match="gt/clefts"):
        train(TrainConfig(task="cleft", data=(str(no_gt),), iterations=1, widths=(4, 4, 8), patch_size=(8, 48, 48),
                          progress=False))


def test_cleft_scores_count_overlapping_components():
    from emkit.train.loop import cleft_scores

    gt = np.zeros((4, 32, 32), np.uint64)
    gt[1:3, 4:12, 4:12] = 1
    gt[1:3, 20:28, 20:28] = 2
    prob = np.zeros(gt.shape, np.float32)
    prob[1:3, 5:11, 5:11] = 0.9          # finds cleft 1
    prob[1:3, 20:28, 0:8] = 0.8          # a false positive
    s = cleft_scores(prob, gt, (40, 8, 8))
    assert s["cleft_n_true"] == 2 and s["cleft_n_pred"] == 2
    assert s["cleft_precision"] == 0.5 and s["cleft_recall"] == 0.5
    assert 0 < s["cleft_voxel_f1"] < 1


# ---------------------------------------------------------------- inference -----------------------
def test_infer_cleft_shipped_finds_true_clefts(phantom_dir, tmp_path):
    from emkit.evaluate.synapses import cleft_precision_recall
    from emkit.io import Layer
    from emkit.nets import available_models
    from emkit.synapse import cleft_components
    from emkit.train.sampler import open_dataset

    if "cleft" not in available_models():
        pytest.fail("the shipped cleft model (emkit/models/cleft.pt) is missing")
    from emkit.cli.main import main

    d, _ = phantom_dir
    out = tmp_path / "cleft_prob"
    assert main(["infer", "cleft", str(d / "image"), str(out), "--workers", "0", "--quiet"]) == 0
    lay = Layer.open(str(out))
    img = Layer.open(str(d / "image"))
    assert lay.kind.name == "probability" and lay.channel_names == ("cleft",)
    assert tuple(lay.size) == tuple(img.size) and tuple(lay.resolution) == tuple(img.resolution)
    prob = lay.read()
    prob = prob[0] if prob.ndim == 4 else prob
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    gt = open_dataset(str(d), need=("clefts",), only=("clefts",)).arrays["clefts"]
    labels, _ = cleft_components(prob, img.resolution)
    s = cleft_precision_recall(labels, gt, resolution=img.resolution)
    assert s.n_pred >= 1 and len(s.matches) >= 1 and s.recall > 0   # its components overlap true clefts
    # the array form agrees with the layer
    from emkit.inference import predict

    arr = predict(img.read(), "cleft", resolution=img.resolution, progress=False)
    assert arr.shape == (1, *img.size) and np.allclose(arr[0], prob, atol=1e-5)


def test_shipped_cleft_is_weights_only_with_a_reachable_threshold():
    """The shipped cleft file holds what inference and ``--init cleft`` need, not the optimizer state
    (``--resume`` needs the run folder's own last.pt), and its recorded threshold is one the notebook's
    threshold slider can reach."""
    from pathlib import Path

    from emkit.nets import available_models
    from emkit.nets.checkpoint import load_checkpoint
    from emkit.synapse.pipeline import model_cleft_threshold
    from emkit_widgets.cleft_tuner import threshold_steps

    if "cleft" not in available_models():
        pytest.fail("the shipped cleft model (emkit/models/cleft.pt) is missing")
    path = Path(__file__).resolve().parents[1] / "emkit" / "models" / "cleft.pt"
    blob = load_checkpoint(path)
    assert "training" not in blob and {"config", "state_dict", "extra"} <= set(blob)
    n = sum(v.numel() for v in blob["state_dict"].values())
    assert path.stat().st_size < 8 * n  # float32 weights and a little metadata; Adam's moments would triple it
    t = model_cleft_threshold("cleft", (40.0, 8.0, 8.0))
    assert t is not None and 0.5 <= t < 1 and max(threshold_steps()) > t
    assert min(abs(s - t) for s in threshold_steps()) <= 1e-3  # a stop of the slider within 0.001
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["best_iteration"] == blob["extra"]["iteration"] and meta["fresh_seed_evaluation"]["rows"]
