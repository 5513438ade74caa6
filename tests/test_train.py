"""emkit.train: sampler (phantom frames, masks, user volumes), training loop, resume, CLI."""
import json
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from emkit.errors import InputError  # noqa: E402
from emkit.io import Layer  # noqa: E402
from emkit.train.loop import TrainConfig, Trainer  # noqa: E402
from emkit.train.sampler import PatchSampler, open_dataset  # noqa: E402

TINY = dict(widths=(4, 8), patch_size=(8, 32, 32), augment="none", threads=1, progress=False)


@pytest.fixture(scope="module")
def phantom_ds(tmp_path_factory):
    """A tiny phantom with the default defects written as a dataset folder."""
    from emkit.phantom import make_phantom, write_phantom

    ph = make_phantom((16, 96, 96), seed=3)
    d = tmp_path_factory.mktemp("ds") / "phantom"
    write_phantom(ph, str(d), progress=False)
    return ph, str(d)


@pytest.fixture(scope="module")
def iso_ds(tmp_path_factory):
    """A user's own annotated volume at isotropic 10 nm (not a phantom): blobs of a Voronoi tiling."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    shape = (32, 48, 48)
    seeds = np.zeros(shape, np.int32)
    pts = rng.integers(0, 32, size=(25, 3)) * np.array([1, 1.5, 1.5]).astype(int)
    seeds[tuple(pts.T)] = np.arange(1, 26)
    _, (iz, iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iz, iy, ix].astype(np.uint64)
    edge = np.zeros(shape, bool)
    for ax in range(3):
        edge |= np.diff(labels.astype(np.int64), axis=ax, prepend=-1) != 0
    image = np.where(edge, 40, 180).astype(np.uint8) + rng.integers(0, 20, shape).astype(np.uint8)
    d = tmp_path_factory.mktemp("iso") / "user"
    Layer.create(str(d / "image"), "image", shape, resolution=(10, 10, 10)).write(image)
    Layer.create(str(d / "gt" / "segmentation"), "segmentation", shape, resolution=(10, 10, 10)).write(labels)
    return str(d)


def test_phantom_ground_truth_in_image_frame(phantom_ds):
    from emkit.defects import warp

    ph, d = phantom_ds
    vol = open_dataset(d)
    assert vol.resolution == (40.0, 8.0, 8.0)
    assert set(vol.mask_names) >= {"fold", "crack", "slip", "step", "missing"}
    lab = vol.arrays["labels"]
    want = ph.in_image_frame(ph.segmentation)
    slip = int(np.nonzero(ph.masks["slip"].any(axis=(1, 2)))[0][0])
    others = [z for z in range(lab.shape[0]) if z != slip]
    np.testing.assert_array_equal(lab[others], want[others])
    assert not np.array_equal(lab, ph.segmentation)                 # the step moved the ground truth
    # slip interpolation: the slipped section's target keeps its neighbour's displacement
    nb = ph.displacement[:, slip - 1 if slip > 0 else slip + 1]
    d2 = ph.displacement.copy()
    d2[:, slip] = nb
    np.testing.assert_array_equal(lab[slip], warp(ph.segmentation, d2, order=0)[slip])


def test_sampler_masks(phantom_ds):
    ph, d = phantom_ds
    vol = open_dataset(d)
    from emkit.geometry import Bbox

    full = Bbox((0, 0, 0), vol.size)
    s = PatchSampler([vol], (8, 32, 32), input_masks=("missing",)).read(vol, full)
    excluded = (ph.masks["fold"] != 0) | (ph.masks["crack"] != 0)
    assert excluded.any()
    np.testing.assert_array_equal(s["mask"] == 0, excluded)          # auto: fold, crack out of the loss
    assert (s["image"][ph.masks["missing"] != 0] == 0).all()
    s2 = PatchSampler([vol], (8, 32, 32), loss_masks=("step",)).read(vol, full)
    np.testing.assert_array_equal(s2["mask"] == 0, ph.masks["step"] != 0)
    with pytest.raises(InputError, match="smaller than the patch"):
        PatchSampler([vol], (32, 32, 32))
    with pytest.raises(InputError, match="nonexistent"):
        PatchSampler([vol], (8, 32, 32), input_masks=("nonexistent",))
    a = PatchSampler([vol], (8, 32, 32)).sample(np.random.default_rng(5))
    b = PatchSampler([vol], (8, 32, 32)).sample(np.random.default_rng(5))
    assert a["image"].shape == (8, 32, 32) and all(np.array_equal(a[k], b[k]) for k in a)


def _synthetic_volume(shape=(8, 64, 64)):
    """An in-memory semantic volume: class 5 only in a 6-voxel-wide band at the x edge."""
    from emkit.train.sampler import Volume

    sem = np.full(shape, 2, np.uint8)
    sem[:, :, :shape[2] // 2] = 3
    sem[:, :, -6:] = 5
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 255, shape).astype(np.uint8), "semantic": sem,
              "labels": np.ones(shape, np.uint64)}
    return Volume(url="mem://synthetic", resolution=(40.0, 8.0, 8.0), size=shape,
                  layers={k: None for k in arrays}, arrays=arrays)


def test_sampler_reaches_the_edges_and_balances_classes():
    """Output patches reach the region's edges (context past them is zero and masked); with
    balance='classes' each class is the centre class equally often, so an edge band is sampled."""
    vol = _synthetic_volume()
    read = lambda ps: tuple(p + 20 for p in ps)  # noqa: E731 - context an augmenter would need
    uni = PatchSampler([vol], (4, 16, 16), read_size=read)
    starts = np.array([uni._draw_start(np.random.default_rng(i))[1] for i in range(400)])
    assert starts[:, 2].min() == 0 and starts[:, 2].max() == 64 - 16     # edges reachable
    s = uni.read_padded(vol, uni.items[0][1], __import__("emkit.geometry", fromlist=["Bbox"]).Bbox(
        (-2, -10, -10), (6, 26, 26)))
    assert s["image"].shape == (8, 36, 36) and (s["mask"][:2] == 0).all() and (s["image"][:, :10] == 0).all()
    assert (s["mask"][2:, 10:, 10:] == 1).all()
    bal = PatchSampler([vol], (4, 16, 16), read_size=read, balance="classes")
    has_band = []
    for i in range(300):
        smp = bal.sample(np.random.default_rng(i))
        assert smp["image"].shape == (4, 16, 16)
        has_band.append(bool((smp["semantic"] == 5).any()))
    u = [bool((uni.sample(np.random.default_rng(i))["semantic"] == 5).any()) for i in range(300)]
    # a third of the balanced patches are drawn at the band (plus the uniform share); uniform: 6 of 49 starts
    assert np.mean(has_band) > 0.3 and np.mean(u) < 0.2
    with pytest.raises(InputError, match="balance"):
        PatchSampler([vol], (4, 16, 16), balance="rare")


def test_fine_tuning_from_weights_and_semantic_rebalancing(phantom_ds, tmp_path):
    _, d = phantom_ds
    first = Trainer(TrainConfig(task="semantic", data=(d,), iterations=2, val_interval=2, checkpoint_interval=2,
                                out_dir=str(tmp_path / "a"), output_1x1=True, **TINY)).run()
    tuned = Trainer(TrainConfig(task="semantic", data=(d,), iterations=1, val_interval=1, checkpoint_interval=1,
                                init=str(tmp_path / "a" / "best.pt"), rebalance_semantic=True, widths=(2, 4),
                                out_dir=str(tmp_path / "b"), **{k: v for k, v in TINY.items() if k != "widths"}))
    assert tuned.net_config == first.model.config                  # the checkpoint's net, not widths=(2, 4)
    for k, v in first.model.state_dict().items():
        assert torch.equal(tuned.model.state_dict()[k].cpu(), v.cpu())
    log = tuned.run().log
    assert log["train_config"]["rebalance_semantic"] and log["train_config"]["init"].endswith("best.pt")
    bigger = Trainer(TrainConfig(task="semantic", data=(d,), iterations=1, init=str(tmp_path / "a" / "best.pt"),
                                 out_dir=str(tmp_path / "p"), **{**TINY, "patch_size": (8, 48, 48)}))
    assert bigger.net_config == first.model.config.replace(patch_size=(8, 48, 48))   # the patch is a training choice
    with pytest.raises(InputError, match="no 'affinity' head"):
        Trainer(TrainConfig(data=(d,), iterations=1, init=str(tmp_path / "a" / "best.pt"),
                            out_dir=str(tmp_path / "c"), **TINY))


def test_training_reduces_loss(phantom_ds, tmp_path):
    _, d = phantom_ds
    cfg = TrainConfig(data=(d,), iterations=30, val_interval=30, checkpoint_interval=30, seed=0,
                      out_dir=str(tmp_path / "run"), **TINY)
    res = Trainer(cfg).run()
    loss = res.log["train"]["loss"]
    assert len(loss) == 30
    assert np.mean(loss[-6:]) < 0.9 * np.mean(loss[:6])
    v = res.log["validation"][-1]
    assert 0.0 <= v["arand"] <= 1.0 and v["loss"] > 0
    assert res.log["validation_source"].startswith("last 20%")
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "log.json").is_file()


def test_resume_continues_identically(phantom_ds, tmp_path):
    _, d = phantom_ds
    base = TrainConfig(data=(d,), iterations=6, val_interval=3, checkpoint_interval=3, seed=1,
                       out_dir=str(tmp_path / "a"), **TINY)
    full = Trainer(base).run().log["train"]["loss"]
    part = replace(base, iterations=3, out_dir=str(tmp_path / "b"))
    Trainer(part).run()
    with pytest.raises(FileExistsError):
        Trainer(part)                                     # no silent overwrite of a run
    tr = Trainer(replace(part, iterations=6), resume=True)
    assert tr.iteration == 3
    log = tr.run().log
    assert log["train"]["iteration"] == [1, 2, 3, 4, 5, 6]
    assert log["train"]["loss"] == full                   # bit-identical continuation


def test_prefetch_workers_give_the_same_training(phantom_ds, tmp_path):
    """Batches made ahead in forked workers are the batches of workers=0: identical losses, also
    across a resume; bad worker counts are refused."""
    _, d = phantom_ds
    base = TrainConfig(data=(d,), iterations=5, val_interval=5, checkpoint_interval=5, seed=2,
                       out_dir=str(tmp_path / "serial"), **TINY)
    serial = Trainer(base).run().log
    par = Trainer(replace(base, workers=2, out_dir=str(tmp_path / "par"))).run().log
    assert par["train"]["loss"] == serial["train"]["loss"]
    assert par["validation"] == serial["validation"]
    assert json.loads((tmp_path / "par" / "log.json").read_text())["train_config"]["workers"] == 2
    tr = Trainer(replace(base, workers=1, iterations=8, out_dir=str(tmp_path / "par")), resume=True)
    more = tr.run().log["train"]
    assert more["iteration"] == list(range(1, 9)) and more["loss"][:5] == serial["train"]["loss"]
    with pytest.raises(InputError, match="workers"):
        TrainConfig(data=(d,), workers=-1)


def test_isotropic_user_volume(iso_ds, tmp_path):
    cfg = TrainConfig(data=(iso_ds,), iterations=2, val_interval=2, checkpoint_interval=2, out_dir=str(tmp_path / "r"),
                      widths=(4, 8, 16), patch_size=(16, 16, 16), augment="none", threads=1, progress=False)
    tr = Trainer(cfg)
    assert tr.net_config.resolution == (10.0, 10.0, 10.0)
    assert tr.net_config.downsample == ((2, 2, 2), (2, 2, 2))        # isotropic data, isotropic net
    assert tr.net_config.offsets[0] == (8, 0, 0)                     # long-range offsets in nm
    res = tr.run()
    assert np.isfinite(res.log["validation"][-1]["arand"])


def test_semantic_training(phantom_ds, tmp_path):
    _, d = phantom_ds
    cfg = TrainConfig(task="semantic", data=(d,), iterations=2, val_interval=2, checkpoint_interval=2,
                      out_dir=str(tmp_path / "s"), output_1x1=True, **TINY)
    res = Trainer(cfg).run()
    assert [h["name"] for h in res.log["net_config"]["heads"]] == ["semantic"]
    assert 0.0 <= res.log["validation"][-1]["mean_iou"] <= 1.0


def test_training_with_augmentation(tmp_path):
    from emkit.phantom import make_phantom, write_phantom

    d = tmp_path / "big"
    write_phantom(make_phantom((24, 160, 160), seed=4), str(d), progress=False)
    cfg = TrainConfig(data=(str(d),), iterations=2, val_interval=2, checkpoint_interval=2, out_dir=str(tmp_path / "r"),
                      **{**TINY, "augment": "boundary"})
    tr = Trainer(cfg)
    assert tr.augment_note == "boundary"
    assert np.isfinite(tr.run().log["train"]["loss"]).all()


def test_cli_train(phantom_ds, tmp_path, capsys):
    from emkit.cli.main import main
    from emkit.nets import load

    _, d = phantom_ds
    out = tmp_path / "cli"
    argv = ["train", "boundary", "--data", d, "--iterations", "2", "--out", str(out), "--widths", "4,8",
            "--patch", "8,32,32", "--augment", "none", "--val-interval", "1", "--threads", "1", "--no-progress",
            "--background", "boundary", "--planar-labels"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["iterations"] == 2 and summary["background"] == "boundary" and summary["wall_seconds"] > 0
    log = json.loads((out / "log.json").read_text())
    assert log["train_config"]["planar_labels"] and log["background"] == "boundary"
    assert len(log["train"]["loss"]) == 2 and len(log["validation"]) == 2
    model = load(out / "best.pt")
    assert set(model.extra) >= {"command", "seed", "git_revision", "iteration", "metrics"}
    assert model.extra["command"] is None or model.extra["command"].startswith("emkit train")
    assert main(argv) == 2                                   # refuses to overwrite the run
    assert "already holds" in capsys.readouterr().err
    assert main(["train", "boundary", "--out", str(tmp_path / "x")]) == 2   # no data, no preset


def test_cli_preset_phantom_and_resume(tmp_path, capsys):
    from emkit.cli.main import main

    out = tmp_path / "p"
    common = ["train", "boundary", "--preset", "phantom", "--phantom-size", "16,64,64", "--phantom-seeds", "7",
              "--out", str(out), "--widths", "4,8", "--patch", "8,32,32", "--augment", "none", "--threads", "1",
              "--no-progress"]
    assert main(common + ["--iterations", "1"]) == 0
    assert (out / "data" / "phantom_7" / "image" / "info").is_file()
    assert (out / "data" / "phantom_199" / "gt" / "phantom.json").is_file()   # validation phantom
    assert main(["train", "boundary", "--out", str(out), "--resume", "--iterations", "2", "--no-progress"]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["train"]["iteration"] == [1, 2]


def _iso_zero_boundaries(iso_ds, tmp_path, name="zero"):
    """The iso volume with every voxel at a body's face set to 0 (membranes labelled 0, as in
    FlyEM's FIB-SEM ground truth): no two bodies touch."""
    src = Layer(iso_ds + "/gt/segmentation").read()
    lab = src.copy()
    for ax in range(3):
        a = np.moveaxis(lab, ax, 0)
        s_ = np.moveaxis(src, ax, 0)
        a[1:][s_[1:] != s_[:-1]] = 0
    d = tmp_path / name
    img = Layer(iso_ds + "/image")
    Layer.create(str(d / "image"), "image", img.size, resolution=(10, 10, 10)).write(img.read())
    Layer.create(str(d / "gt" / "segmentation"), "segmentation", lab.shape, resolution=(10, 10, 10)).write(lab)
    return str(d), lab


def test_init_adapts_weights_across_resolution_and_prints_an_eta(iso_ds, tmp_path, capsys, monkeypatch):
    """--init with weights trained at 40x8x8 on 10 nm data: same weights, the data's down-sampling
    and long-range offsets, noted in the log; adapted_model gives the same net; the ETA is printed
    after 10 iterations (with the rate) and logged, with a warning when a CPU run would be long
    (the limit lowered here so that this short run passes it); auto augmentation is the isotropic
    preset."""
    import emkit.train.loop as loop
    from emkit.nets import NetConfig, RSUNet, long_range_offsets, save
    from emkit.train import adapted_model

    monkeypatch.setattr(loop, "LONG_CPU_RUN_SECONDS", 0.0)

    torch.manual_seed(0)
    aniso = RSUNet(NetConfig(widths=(4, 8, 16), resolution=(40, 8, 8), patch_size=(8, 32, 32)))
    assert aniso.config.downsample == ((1, 2, 2), (1, 2, 2))
    ck = save(aniso, tmp_path / "aniso.pt")
    cfg = TrainConfig(data=(iso_ds,), iterations=11, val_interval=100, checkpoint_interval=100, init=str(ck),
                      patch_size=(16, 16, 16), out_dir=str(tmp_path / "r"), threads=1, progress=False)
    tr = Trainer(cfg)
    nc = tr.net_config
    assert nc.resolution == (10.0, 10.0, 10.0) and nc.widths == (4, 8, 16)
    assert nc.downsample == ((2, 2, 2), (2, 2, 2)) and nc.offsets == long_range_offsets((10, 10, 10))
    assert nc.offsets != aniso.config.offsets and nc.patch_size == (16, 16, 16)
    for k, v in aniso.state_dict().items():
        assert torch.equal(tr.model.state_dict()[k], v)
    assert tr.augment_note == "isotropic"
    before, note = adapted_model(str(ck), (10, 10, 10), patch_size=(16, 16, 16))
    assert before.config == nc and "adapted to 10x10x10 nm" in note
    assert adapted_model(str(ck), (40, 8, 8))[1] is None                 # same resolution: nothing adapted
    log = tr.run().log
    assert "40x8x8 nm" in log["init"] and "[2, 2, 2]" in log["init"]
    err = capsys.readouterr().err
    assert "emkit train: ETA" in err and "1 iterations left" in err and " it/s)" in err
    (eta,) = [e for e in log["eta"] if e["iteration"] == 10]
    assert eta["iterations_left"] == 1 and eta["seconds_per_iteration"] > 0
    assert "emkit train: warning: this run would take" in err and "--widths" in eta["warning"]
    assert log["wall_seconds"] > 0


def test_background_auto_and_a_small_validation_volume(iso_ds, tmp_path):
    """Membranes labelled 0 (bodies never touch) train with background 'boundary' (else every edge
    between two bodies would be dropped); touching bodies keep 'ignore'. A validation volume
    smaller than the training patch is fine (only its crop is read)."""
    zero, lab = _iso_zero_boundaries(iso_ds, tmp_path)
    val = tmp_path / "val"
    Layer.create(str(val / "image"), "image", (8, 48, 48), resolution=(10, 10, 10)).write(
        Layer(zero + "/image").read()[:8])
    Layer.create(str(val / "gt" / "segmentation"), "segmentation", (8, 48, 48), resolution=(10, 10, 10)).write(lab[:8])
    common = dict(iterations=1, val_interval=1, checkpoint_interval=1, widths=(4, 8), patch_size=(16, 16, 16),
                  augment="none", threads=1, progress=False)
    tr = Trainer(TrainConfig(data=(zero,), val_data=(str(val),), out_dir=str(tmp_path / "z"), **common))
    assert tr.background == "boundary"
    x, targets = tr.batch_arrays(0)
    t, v = targets["affinity"]
    assert (v[t == 0] == 1).any()                      # between-body edges count (they all touch label 0)
    log = tr.run().log
    assert log["background"] == "boundary" and np.isfinite(log["validation"][-1]["arand"])
    assert Trainer(TrainConfig(data=(iso_ds,), out_dir=str(tmp_path / "t"), **common)).background == "ignore"
    forced = Trainer(TrainConfig(data=(zero,), background="ignore", out_dir=str(tmp_path / "f"), **common))
    t, v = forced.batch_arrays(0)[1]["affinity"]
    assert not (v[t == 0] == 1).any()                  # what 'ignore' would have trained on: no boundary at all
    with pytest.raises(InputError, match="background"):
        TrainConfig(data=(zero,), background="membrane")


def test_crop_dataset(iso_ds, tmp_path):
    """A box of a dataset folder becomes a new dataset folder (every layer, kind and resolution kept);
    bad boxes and existing layers are refused."""
    from emkit.errors import LayerExistsError
    from emkit.train.sampler import crop_dataset

    d = crop_dataset(iso_ds, tmp_path / "part", (2, 8, 0), (18, 40, 48))
    vol, src = open_dataset(d), open_dataset(iso_ds)
    assert vol.size == (16, 32, 48) and vol.resolution == src.resolution
    np.testing.assert_array_equal(vol.arrays["image"], src.arrays["image"][2:18, 8:40])
    np.testing.assert_array_equal(vol.arrays["labels"], src.arrays["labels"][2:18, 8:40])
    assert Layer(d + "/gt/segmentation").kind.name == "segmentation"
    with pytest.raises(LayerExistsError):
        crop_dataset(iso_ds, tmp_path / "part", (0, 0, 0), (4, 4, 4))
    crop_dataset(iso_ds, tmp_path / "part", (0, 0, 0), (4, 4, 4), overwrite=True)
    assert open_dataset(d).size == (4, 4, 4)
    for start, stop in (((0, 0, 0), (33, 4, 4)), ((4, 0, 0), (4, 4, 4)), ((-1, 0, 0), (4, 4, 4))):
        with pytest.raises(InputError, match="crop"):
            crop_dataset(iso_ds, tmp_path / "bad", start, stop)
