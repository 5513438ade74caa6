"""emkit.detect defect nets: the paper's 2D U-Net, training on simulated defects, fold/crack/resin
masks (array form and chunked layers equal to it), `emkit detect`."""
import argparse
import json

import numpy as np
import pytest

from helpers_require import require

from emkit.errors import InputError, LayerExistsError
from emkit.phantom import make_phantom

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def torch1():
    require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")
    import torch

    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope="module")
def shipped(torch1):
    from emkit.nets.checkpoint import models_dir

    path = models_dir() / "defects.pt"
    assert path.is_file(), f"the shipped defect net {path} is missing"
    from emkit.detect.unet2d import load_unet2d

    return load_unet2d("defects")


@pytest.fixture(scope="module")
def fresh():
    """A small phantom with a fold, a crack and resin; seed unused in training (1001-1003, 1999)."""
    return make_phantom((6, 256, 256), seed=4242, defects="fold,crack,resin")


def _iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / max(1, (a | b).sum())


def test_unet_is_the_papers(torch1):
    """Three 3x3 convolutions per level, 16..256 feature maps, 4 poolings, nearest up-sampling, a 3x3
    output convolution; same-size output; refuses sizes that are not multiples of 16."""
    from emkit.detect.unet2d import UNet2DConfig, build_unet2d

    net = build_unet2d().eval()
    convs = [m for m in net.modules() if isinstance(m, torch1.nn.Conv2d)]
    assert len(convs) == 5 * 3 + 4 * 3 + 1
    assert [c.out_channels for c in convs[:15:3]] == [16, 32, 64, 128, 256]
    assert convs[-1].kernel_size == (3, 3) and convs[-1].out_channels == 3
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs)
    with torch1.no_grad():
        assert net(torch1.zeros(1, 1, 64, 96)).shape == (1, 3, 64, 96)
    with pytest.raises(InputError, match="multiples of 16"):
        net(torch1.zeros(1, 1, 40, 64))
    with pytest.raises(InputError, match="field_of_view"):
        UNet2DConfig(field_of_view=100)
    assert UNet2DConfig.from_dict(UNet2DConfig().to_dict()) == UNet2DConfig()


def test_tiny_training_run_writes_checkpoints_and_resumes(tmp_path, torch1):
    from emkit.detect.defect_masks import detect_defects
    from emkit.detect.train import DefectTrainConfig, train_defects

    cfg = DefectTrainConfig(out_dir=str(tmp_path / "run"), iterations=3, batch_size=2, patch=32, widths=(8, 16, 32),
                            phantom_seeds=(5,), phantom_size=(2, 96, 96), val_samples=4, val_interval=2,
                            progress=False)
    r = train_defects(cfg)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert r["iterations"] == 3 and len(log["train"]["loss"]) == 3
    assert all(np.isfinite(log["train"]["loss"]))
    assert [v["iteration"] for v in log["validation"]] == [2, 3]
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
    with pytest.raises(InputError, match="already holds"):
        train_defects(cfg)
    r2 = train_defects(DefectTrainConfig(**{**cfg.__dict__, "iterations": 4}), resume=True)
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert r2["iterations"] == 4 and log["train"]["iteration"] == [1, 2, 3, 4]
    # the checkpoint runs
    m = detect_defects(np.zeros((1, 64, 64), np.uint8) + 128, resolution=(40, 8, 8), model=str(tmp_path / "run" / "last.pt"))
    assert set(m) == {"fold", "crack", "resin"} and m["fold"].shape == (1, 64, 64)


def test_cli_resume_keeps_the_runs_configuration(tmp_path, torch1):
    """`emkit train defects --out RUN --resume --iterations N [--lr X]` continues with the saved run's data,
    net and seed (not the command line's defaults), may lower the learning rate, and records the resume;
    a resume to an iteration already reached, or of an absent run, is refused."""
    from emkit.detect.train import DefectTrainConfig, resumed_config, train_defects, train_defects_cli

    run = tmp_path / "run"
    cfg = DefectTrainConfig(out_dir=str(run), iterations=2, batch_size=2, patch=32, widths=(8, 16, 32),
                            phantom_seeds=(5,), phantom_size=(2, 96, 96), val_samples=4, val_interval=2,
                            progress=False)
    train_defects(cfg)
    ns = argparse.Namespace(out=str(run), resume=True, iterations=3, lr=5e-4, threads=1, device=None, seed=None,
                            widths=None, patch=None, init=None, data=[], val_interval=None, no_progress=True)
    r = train_defects_cli(ns)
    log = json.loads((run / "log.json").read_text())
    assert r["iterations"] == 3 and log["train"]["iteration"] == [1, 2, 3]
    assert log["config"]["widths"] == [8, 16, 32] and log["config"]["phantom_seeds"] == [5]
    assert log["resumes"][0]["from_iteration"] == 2 and log["resumes"][0]["lr"] == 5e-4
    from emkit.nets.checkpoint import load_checkpoint

    blob = load_checkpoint(run / "last.pt")
    assert blob["extra"]["train_config"]["patch"] == 32 and blob["extra"]["iteration"] == 3
    assert [g["lr"] for g in blob["training"]["optimizer"]["param_groups"]] == [5e-4]
    with pytest.raises(InputError, match="at iteration 3"):
        train_defects(resumed_config(run, iterations=3), resume=True)
    with pytest.raises(InputError, match="cannot change patch"):
        resumed_config(run, patch=64)
    with pytest.raises(InputError, match="cannot resume"):
        resumed_config(tmp_path / "nothing", iterations=5)
    # weight averaging of equal checkpoints is the identity; batch-norm recalibration replaces the statistics
    from emkit.detect.train import average_checkpoints, recalibrate_batchnorm
    from emkit.detect.unet2d import load_unet2d

    one = load_unet2d(str(run / "last.pt"))
    avg = average_checkpoints([run / "last.pt", run / "last.pt"])
    assert all(torch1.equal(a, b) for a, b in zip(avg.state_dict().values(), one.state_dict().values()))
    bn = [m for m in avg.modules() if isinstance(m, torch1.nn.BatchNorm2d)]
    old = [m.running_var.clone() for m in bn]
    recalibrate_batchnorm(avg, cfg, n_batches=2)
    assert not avg.training and all(m.momentum == 0.1 for m in bn)
    assert not all(torch1.equal(o, m.running_var) for o, m in zip(old, bn))
    assert all(torch1.equal(a, b) for (k, a), b in zip(avg.state_dict().items(), one.state_dict().values())
               if "running" not in k and "num_batches" not in k)


def test_training_samples_have_true_masks(torch1):
    """Simulated training samples: a fold is dark where its target is, a crack bright; the target is
    0 where the image holds no data."""
    from emkit.detect.train import Background, make_sample

    img = make_phantom((2, 320, 320), seed=6, defects="none").image.astype(np.float32) / 255
    bg = Background("ph", img, 8.0)
    rng = np.random.default_rng(0)
    seen = {0: 0, 1: 0}
    for _ in range(30):
        x, y = make_sample(bg, 16.0, 64, rng)
        assert x.shape == (64, 64) and y.shape == (3, 64, 64) and 0 <= y.min() and y.max() <= 1
        for c, sign in ((0, -1), (1, 1)):
            inside = y[c] > 0.9
            if inside.sum() > 20 and (y.sum(0) < 0.01).sum() > 100:
                seen[c] += 1
                assert sign * (x[inside].mean() - x[y.sum(0) < 0.01].mean()) > 0.1
    assert seen[0] and seen[1]


def test_shipped_net_finds_fold_and_crack(fresh, shipped):
    """On a fresh phantom the shipped net's fold mask matches the true fold (IoU) and its crack mask covers
    the true crack; no folds on sections without defects. (Fresh-seed IoUs are 0.7-0.9, below the issue's
    goal, and small resin areas are missed: see benchmarks/results/detect_defects.json.)"""
    from emkit.detect import detect_defects

    got = detect_defects(fresh.image, resolution=fresh.resolution, model=shipped)
    fold, crack = fresh.masks["fold"] != 0, fresh.masks["crack"] != 0
    assert _iou(got["fold"], fold) > 0.5
    assert got["crack"][crack].mean() > 0.8 and _iou(got["crack"], crack) > 0.1
    clean_z = [z for z in range(fresh.shape[0]) if not any(m[z].any() for m in fresh.masks.values())]
    assert clean_z and got["fold"][clean_z].mean() < 0.005


def test_inference_settings(fresh, shipped):
    """Per-kind thresholds; regions smaller than min_size (working px, inside a tile) are dropped, so on a
    256 px section (one tile) every fold region kept is at least that large; no detections where the image
    holds no data; flips=8 gives the transpose of a transposed image's probabilities."""
    from scipy.ndimage import label

    from emkit.detect import DefectParams, defect_probabilities, detect_defects

    z = fresh.defect_sections["fold"][0]
    img = np.ascontiguousarray(fresh.image[z:z + 1])
    loose = detect_defects(img, resolution=fresh.resolution, model=shipped,
                           params=DefectParams(threshold=0.2, min_size=0))
    kept = detect_defects(img, resolution=fresh.resolution, model=shipped,
                          params=DefectParams(threshold={"fold": 0.2, "crack": 0.9, "resin": 0.5}, min_size=60))
    assert kept["fold"].any() and (kept["fold"] <= loose["fold"]).all() and kept["fold"].sum() < loose["fold"].sum()
    lab, n = label(kept["fold"][0], structure=np.ones((3, 3), bool))
    assert min(np.bincount(lab.ravel())[1:]) >= 60 * 4                 # 16 nm working px = 4 image px at 8 nm
    hole = img.copy()
    hole[:, 64:192, 32:160] = 0
    got = detect_defects(hole, resolution=fresh.resolution, model=shipped, params=DefectParams(threshold=0.05))
    assert not any(got[k][:, 64:192, 32:160].any() for k in got)
    p = DefectParams(flips=8, channels=("fold", "crack"))
    a = defect_probabilities(img, resolution=fresh.resolution, model=shipped, params=p)
    b = defect_probabilities(np.ascontiguousarray(img.transpose(0, 2, 1)), resolution=fresh.resolution,
                             model=shipped, params=p)
    for k in a:
        assert np.allclose(a[k], b[k].transpose(0, 2, 1), atol=1e-4), k
    assert not np.allclose(a["fold"], defect_probabilities(img, resolution=fresh.resolution, model=shipped,
                                                           params=DefectParams(channels=("fold",)))["fold"])
    for bad, match in (({"threshold": {"fold": 0.5}}, "missing"), ({"threshold": {"fold": 0.5, "crack": 0.5,
                       "resin": 1.0}}, "resin"), ({"min_size": -1}, "min_size"), ({"flips": 3}, "flips")):
        with pytest.raises(InputError, match=match):
            DefectParams(**bad)


def test_chunked_equals_array(tmp_path, fresh, shipped):
    """detect_defects_layers over several chunks (non-zero voxel offset) writes exactly the array form's
    masks; rerunning resumes (nothing to do); other parameters over the same outputs are refused."""
    from emkit.detect import DefectParams, detect_defects, detect_defects_layers
    from emkit.io import Layer

    zs = sorted({fresh.defect_sections["fold"][0], fresh.defect_sections["crack"][0]})
    img = np.ascontiguousarray(fresh.image[zs, :, :192])
    p = DefectParams(tile_px=64, flips=2)             # blocks of 128 px at 8 nm: several chunks in y and x
    want = detect_defects(img, resolution=fresh.resolution, model=shipped, params=p)
    assert all(want[k].any() for k in ("fold", "crack"))
    Layer.create(str(tmp_path / "img"), "image", img.shape, resolution=fresh.resolution, voxel_offset=(3, 64, 128),
                 chunk_size=(1, 64, 64)).write(img, (3, 64, 128))
    urls = detect_defects_layers(str(tmp_path / "img"), str(tmp_path / "out"), model="defects", params=p,
                                 chunk_size=(1, 128, 128))
    assert set(urls) == {"fold", "crack", "resin"}
    for k, u in urls.items():
        lay = Layer.open(u)
        assert lay.kind.name == "mask" and tuple(lay.voxel_offset) == (3, 64, 128)
        assert np.array_equal(lay.read().astype(bool), want[k]), k
    detect_defects_layers(str(tmp_path / "img"), str(tmp_path / "out"), model="defects", params=p,
                          chunk_size=(1, 128, 128))
    with pytest.raises(LayerExistsError):
        detect_defects_layers(str(tmp_path / "img"), str(tmp_path / "out"), model="defects",
                              params=DefectParams(tile_px=64, flips=2, min_size=7), chunk_size=(1, 128, 128))
    with pytest.raises(LayerExistsError):
        detect_defects_layers(str(tmp_path / "img"), str(tmp_path / "out"), model="defects",
                              params=DefectParams(tile_px=64, flips=2, threshold=0.6), chunk_size=(1, 128, 128))
    with pytest.raises(InputError, match="multiple of"):
        detect_defects_layers(str(tmp_path / "img"), str(tmp_path / "out2"), model="defects", chunk_size=(1, 128, 64))


def test_bad_inputs(tmp_path, torch1):
    from emkit.detect import DefectParams, detect_defects, detect_defects_layers
    from emkit.io import Layer

    with pytest.raises(InputError, match="3 dimensions"):
        detect_defects(np.zeros((64, 64), np.uint8), resolution=(40, 8, 8))
    with pytest.raises(InputError, match="int16"):
        detect_defects(np.zeros((1, 64, 64), np.int16), resolution=(40, 8, 8))
    with pytest.raises(InputError, match="resolution"):
        detect_defects(np.zeros((1, 64, 64), np.uint8), resolution=(40, 0, 8))
    with pytest.raises(InputError, match="threshold"):
        DefectParams(threshold=1.5)
    with pytest.raises(InputError, match="myelin"):
        DefectParams(channels=("fold", "myelin"))
    with pytest.raises(InputError, match="'wrap'"):
        DefectParams(padding={"fold": "wrap"})
    with pytest.raises(InputError, match="no shipped defect model 'nonesuch'"):
        detect_defects(np.zeros((1, 64, 64), np.uint8), resolution=(40, 8, 8), model="nonesuch")
    Layer.create(str(tmp_path / "seg"), "segmentation", (2, 64, 64))
    with pytest.raises(InputError, match="expected an image layer"):
        detect_defects_layers(str(tmp_path / "seg"), str(tmp_path / "o"))


def _cli(argv):
    from emkit.cli import detect

    parser = argparse.ArgumentParser(prog="emkit")
    detect.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_detect_command(tmp_path, capsys, fresh, shipped):
    """`emkit detect IMAGE OUT` writes OUT/masks/{fold,crack,resin}; `emkit masks --defects OUT` puts them in
    the input mask; existing outputs with other parameters are refused."""
    from emkit.cli import masks as masks_cli
    from emkit.detect import detect_defects
    from emkit.io import Layer

    img = fresh.image[:4]
    Layer.create(str(tmp_path / "img"), "image", img.shape, resolution=fresh.resolution,
                 chunk_size=(2, 128, 128)).write(img)
    assert _cli(["detect", str(tmp_path / "img"), str(tmp_path / "d"), "--quiet"]) == 0
    out = capsys.readouterr().out
    want = detect_defects(img, resolution=fresh.resolution, model=shipped)
    for k in ("fold", "crack", "resin"):
        assert np.array_equal(Layer.open(str(tmp_path / "d" / "masks" / k)).read().astype(bool), want[k])
    assert "fold: " in out and "sections with detections" in out
    with pytest.raises(LayerExistsError):
        _cli(["detect", str(tmp_path / "img"), str(tmp_path / "d"), "--threshold", "0.7", "--quiet"])
    parser = argparse.ArgumentParser(prog="emkit")
    masks_cli.register(parser.add_subparsers())
    args = parser.parse_args(["masks", str(tmp_path / "img"), str(tmp_path / "m"), "--defects", str(tmp_path / "d"),
                              "--quiet"])
    assert args.func(args) == 0
    m_in = Layer.open(str(tmp_path / "m" / "mask_in")).read().astype(bool)
    assert m_in[want["fold"]].all() and m_in[want["crack"]].all()
    args = parser.parse_args(["masks", str(tmp_path / "img"), str(tmp_path / "m3"), "--defects", str(tmp_path)])
    with pytest.raises(InputError, match="no masks/fold"):
        args.func(args)
