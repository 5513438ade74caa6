"""The alignment field net (emkit.align.fieldnet, emkit.align.fieldnet_train; issue 9 §4)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from emkit.align import fields as F  # noqa: E402
from emkit.align.fieldnet import (FieldNetConfig, build_fieldnet, load_fieldnet, predict_field,  # noqa: E402
                                  save_fieldnet, to_field_grid)
from emkit.errors import InputError  # noqa: E402


def _texture(shape, seed=0, sigma=2.0):
    """A smooth random grey texture, uint8, every pixel tissue-like (not flat, not 0)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.normal(size=shape), sigma)
    a = (a - a.min()) / (a.max() - a.min())
    return (30 + 200 * a).astype(np.uint8)


def _constant_net(dy, dx, **cfg):
    """A field net whose correction is the constant (dy, dx) working px."""
    net = build_fieldnet(FieldNetConfig(widths=(4, 8), **cfg))
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([dy, dx]))
    return net.eval()


def test_fresh_net_returns_init():
    ref, mov = _texture((64, 64), 1), _texture((64, 64), 2)
    net = build_fieldnet(FieldNetConfig(widths=(4, 8)))
    assert np.abs(predict_field(ref, mov, model=net)).max() == 0
    init = np.stack([np.full((64, 64), 2.0), np.full((64, 64), -1.0)]).astype(np.float32)
    out = predict_field(ref, mov, model=net, init=init)
    assert out.shape == (2, 64, 64) and out.dtype == np.float32
    np.testing.assert_allclose(out, init, atol=1e-4)


@pytest.mark.parametrize("res,k", [((8, 8), 4), ((16, 16), 2), ((32, 32), 1)])
def test_predict_field_units_follow_the_working_pixel(res, k):
    """A correction of (1, -0.5) working px is (k, -k/2) image px for a working factor k."""
    ref, mov = _texture((60, 72), 3), _texture((60, 72), 4)   # not multiples of k * 2: padding is cropped
    out = predict_field(ref, mov, model=_constant_net(1.0, -0.5), resolution_yx=res)
    assert out.shape == (2, 60, 72)
    np.testing.assert_allclose(out[0], k * 1.0, atol=1e-4)
    np.testing.assert_allclose(out[1], k * -0.5, atol=1e-4)


def test_predict_field_composes_init_on_any_grid():
    """compose(init, Δ) for constant fields is init + Δ; init on the image grid or on a coarse grid."""
    ref, mov = _texture((64, 64), 5), _texture((64, 64), 6)
    net = _constant_net(0.5, 0.25)
    full = np.stack([np.full((64, 64), 4.0), np.full((64, 64), -8.0)]).astype(np.float32)
    a = predict_field(ref, mov, model=net, init=full)
    b = predict_field(ref, mov, model=net, init=to_field_grid(full, 8))      # (2, 8, 8) grid
    np.testing.assert_allclose(a[0], 4.0 + 4 * 0.5, atol=1e-3)
    np.testing.assert_allclose(a[1], -8.0 + 4 * 0.25, atol=1e-3)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_to_field_grid_matches_resample():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(2, 64, 48)).astype(np.float32)
    g = to_field_grid(f, 8)
    assert g.shape == (2, 8, 6)
    np.testing.assert_allclose(g, F.resample(f, 1 / 8) * 8, atol=1e-5)   # same motion, values stay full-res px
    assert to_field_grid(f[:, :60, :44], 8).shape == (2, 8, 6)            # edge-padded end


def test_save_load_round_trip(tmp_path):
    net = build_fieldnet(FieldNetConfig(widths=(4, 8, 16), working_nm=16.0))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_fieldnet(net, tmp_path / "f.pt", extra={"seed": 3})
    back = load_fieldnet(path)
    assert back.config == net.config and back.extra == {"seed": 3} and not back.training
    for (k, v), (k2, v2) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    ref, mov = _texture((48, 48), 7), _texture((48, 48), 8)
    np.testing.assert_array_equal(predict_field(ref, mov, model=net.eval()), predict_field(ref, mov, model=str(path)))
    assert FieldNetConfig.from_dict(net.config.to_dict()) == net.config


def test_bad_inputs_name_the_value(tmp_path):
    ref = _texture((64, 64), 1)
    net = build_fieldnet(FieldNetConfig(widths=(4, 8)))
    with pytest.raises(InputError, match=r"\(64, 64\) and \(64, 60\)"):
        predict_field(ref, ref[:, :60], model=net)
    with pytest.raises(InputError, match=r"\(2, 7, 5\)"):
        predict_field(ref, ref, model=net, init=np.zeros((2, 7, 5), np.float32))
    with pytest.raises(InputError, match="relax of shape"):
        predict_field(ref, ref, model=net, relax=np.zeros((10, 10), bool))
    with pytest.raises(InputError, match="-8"):
        predict_field(ref, ref, model=net, resolution_yx=(-8, 8))
    with pytest.raises(InputError, match="int16"):
        predict_field(ref.astype(np.int16), ref.astype(np.int16), model=net)
    with pytest.raises(InputError, match="no_such_field_model"):
        load_fieldnet("no_such_field_model")
    with pytest.raises(InputError, match=r"\(0, 8\)"):
        FieldNetConfig(widths=(0, 8))
    from emkit.detect.unet2d import UNet2DConfig, build_unet2d, save_unet2d

    other = save_unet2d(build_unet2d(UNet2DConfig(widths=(4, 8))), tmp_path / "defects.pt")
    with pytest.raises(InputError, match="not a field net"):
        load_fieldnet(other)
    with pytest.raises(InputError, match=r"\(N, 5, y, x\)"):
        net(torch.zeros(1, 3, 16, 16))


def test_training_steps_move_the_field_toward_a_known_shift():
    """Self-supervised steps on one pair (no truth in the loss) learn most of a known shift."""
    from emkit.align.fieldnet import net_inputs, run_net
    from emkit.align.fieldnet_train import field_loss

    torch.manual_seed(0)
    big = _texture((80, 80), 9, sigma=2.5)
    ref = big[8:72, 8:72]
    mov = big[10:74, 5:69]            # mov[y - 2, x + 3] == ref[y, x]: warp(mov, (2, -3)) == ref
    np.testing.assert_array_equal(F.warp(mov, np.stack([np.full((64, 64), 2.0), np.full((64, 64), -3.0)]))[4:-4, 4:-4],
                                  ref[4:-4, 4:-4])
    cfg = FieldNetConfig(widths=(8, 16, 32), working_nm=8.0)
    net = build_fieldnet(cfg)
    t = np.ones((64, 64), bool)
    inp = net_inputs(ref, mov, ref_tissue=t, mov_tissue=t, relax=~t, factor=1, multiple=cfg.multiple)
    T = {k: torch.from_numpy(inp[k])[None, None] for k in ("reference", "moving", "ref_tissue", "mov_tissue", "relax")}
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    zero = torch.zeros(1, 2, 64, 64)
    first = None
    for _ in range(60):
        fld = run_net(net, T["reference"], T["moving"], T["relax"], zero)
        loss, _, _ = field_loss(fld, T["reference"], T["moving"], T["ref_tissue"], T["mov_tissue"], T["relax"],
                                10.0, 0.02)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = predict_field(ref, mov, model=net.eval(), resolution_yx=(8, 8), ref_tissue=t, mov_tissue=t)
    err = np.hypot(out[0, 8:-8, 8:-8] - 2.0, out[1, 8:-8, 8:-8] + 3.0)
    assert float(loss.detach()) < 0.5 * first
    assert np.median(err) < 0.5 * np.hypot(2.0, 3.0), np.median(err)


def test_make_pair_truth_aligns_the_pair():
    """The true field of a phantom pair takes the moving section onto the reference (better than
    no move), and it is never used by the loss (make_pair without truth has none)."""
    from emkit.align.fieldnet_train import make_pair, make_phantoms, pair_sections
    from emkit.align.fine import _ncc

    ph = make_phantoms([5], (4, 64, 64))[0]
    zs = pair_sections(ph)
    assert zs
    rng = np.random.default_rng(0)
    pr = make_pair(ph, zs[0], rng, truth=True)
    assert "truth" not in make_pair(ph, zs[0], rng)
    m = pr["score_mask"]
    assert m.sum() > 100
    r = pr["reference"].astype(float)
    before = _ncc(r, pr["moving"].astype(float), m)
    after = _ncc(r, F.warp(pr["moving"], pr["truth"]).astype(float), m)
    assert after > before + 0.05, (before, after)


def test_train_field_cli(tmp_path, capsys):
    from emkit.cli.main import main

    out = tmp_path / "run"
    args = ["train", "field", "--iterations", "2", "--out", str(out), "--phantom-size", "4,64,64",
            "--phantom-seeds", "5", "--patch", "16", "--threads", "1", "--no-progress", "--val-interval", "1",
            "--widths", "4,8,16"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    log = json.loads((out / "log.json").read_text())
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert log["train"]["iteration"] == [1, 2] and len(log["validation"]) == 2
    scores = log["final_evaluation"]["scores"]
    assert set(scores) == {"zero", "net", "pair_field", "net+pair_field", "better_score"}
    assert all(s["median_px"] is not None and s["median_px"] >= 0 for s in scores.values())
    assert summary["iterations"] == 2
    assert load_fieldnet(out / "best.pt").config.widths == (4, 8, 16)
    assert main(args) == 2                                   # never overwrites a run
    assert "already holds a training run" in capsys.readouterr().err
    assert main(["train", "field", "--iterations", "2", "--out", str(tmp_path / "x"), "--data", "somewhere"]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "somewhere" in err


def test_pair_field_keeps_the_better_of_block_matching_and_the_shipped_net():
    """With FineParams.field_model the descent runs from both starts and keeps the higher similarity:
    never worse than block matching alone, by the same (truth-free) score."""
    from emkit.align.fine import FineParams, pair_field
    from emkit.phantom import make_phantom, make_unaligned

    ph = make_phantom((2, 128, 128), seed=4, defects="none")
    u = make_unaligned(ph, seed=4)
    ref, mov = u.image[0], u.image[1]
    _, block = pair_field(ref, mov, params=FineParams())
    _, both = pair_field(ref, mov, params=FineParams(field_model="field"))
    assert block["start"] == "block matching" and both["start"] in ("block matching", "field net")
    assert both["score"] >= block["score"] - 1e-9
    with pytest.raises(InputError, match="field_model"):
        FineParams(field_model=3)
