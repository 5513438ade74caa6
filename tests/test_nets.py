"""emkit.nets: RSUNet shapes, heads, kernels, anisotropy, checkpoints, normalisation."""
import subprocess
import sys

import numpy as np
import pytest

from helpers_require import require

torch = require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")

from emkit.errors import InputError  # noqa: E402
from emkit.nets import (  # noqa: E402
    PAPER_LONG_RANGE_OFFSETS,
    HeadSpec,
    NetConfig,
    RSUNet,
    boundary_heads,
    derive_downsample,
    load,
    load_model,
    long_range_offsets,
    normalize,
    save,
)


def tiny(**kw):
    kw.setdefault("widths", (4, 8))
    kw.setdefault("patch_size", (8, 32, 32))
    return NetConfig(**kw)


def test_shapes_and_head_slices():
    cfg = tiny(heads=boundary_heads(myelin=True, vessel=True))
    model = RSUNet(cfg)
    x = torch.rand(2, 1, 8, 32, 32)
    y = model(x)
    assert y.shape == (2, 3 + 9 + 1 + 1, 8, 32, 32)
    assert model.head_slices == {"affinity": slice(0, 3), "long_range": slice(3, 12), "myelin": slice(12, 13),
                                 "vessel": slice(13, 14)}
    sem = RSUNet(tiny(heads=(HeadSpec("semantic", 5, "semantic"),), output_1x1=True))
    assert sem(x).shape == (2, 5, 8, 32, 32)
    assert sem.output[-1].kernel_size == (1, 1, 1)
    assert sem.output[0].kernel_size == (1, 5, 5)


def test_kernels_follow_the_paper():
    model = RSUNet(NetConfig(widths=(4, 8, 16), patch_size=(8, 32, 32)))
    assert model.input[0].kernel_size == (1, 5, 5)          # the paper's 5×5×1 (x, y, z)
    assert model.output.kernel_size == (1, 5, 5)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    others = [c for c in convs if c is not model.input[0] and c is not model.output]
    assert {c.kernel_size for c in others} == {(3, 3, 3), (1, 1, 1)}
    # every residual module: one entry conv + a residual branch of three (the paper's extra conv)
    from emkit.nets.rsunet import ResModule

    mods = [m for m in model.modules() if isinstance(m, ResModule)]
    assert len(mods) == 5  # 3 encoder + 2 decoder levels
    for m in mods:
        assert sum(isinstance(c, torch.nn.Conv3d) for c in m.res) == 3
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in model.modules())
    assert not any(isinstance(m, (torch.nn.BatchNorm3d, torch.nn.ELU)) for m in model.modules())


def test_input_multiple_and_bad_size():
    cfg = NetConfig(widths=(4, 8, 16), resolution=(40, 8, 8), patch_size=(4, 32, 32))
    assert cfg.downsample == ((1, 2, 2), (1, 2, 2))
    model = RSUNet(cfg)
    assert model.input_multiple == (1, 4, 4)
    model(torch.rand(1, 1, 3, 12, 20))  # any multiple works, output keeps the size
    with pytest.raises(InputError, match="multiple"):
        model(torch.rand(1, 1, 4, 30, 32))
    with pytest.raises(InputError, match="channels"):
        model(torch.rand(1, 2, 4, 32, 32))
    with pytest.raises(InputError, match="multiple"):
        NetConfig(widths=(4, 8, 16), patch_size=(4, 30, 32))


def test_anisotropy_follows_resolution():
    assert derive_downsample((40, 8, 8), 3) == ((1, 2, 2), (1, 2, 2), (2, 2, 2))
    assert derive_downsample((10, 10, 10), 3) == ((2, 2, 2),) * 3
    iso = NetConfig(widths=(4, 8, 16, 32), resolution=(10, 10, 10))
    assert iso.downsample == ((2, 2, 2),) * 3 and iso.input_multiple == (8, 8, 8)
    assert iso.patch_size[0] == iso.patch_size[1] == iso.patch_size[2]
    aniso = NetConfig(widths=(4, 8, 16, 32))
    assert aniso.patch_size[0] < aniso.patch_size[1] == aniso.patch_size[2]


def test_long_range_offsets():
    assert long_range_offsets((40, 8, 8)) == PAPER_LONG_RANGE_OFFSETS
    assert len(PAPER_LONG_RANGE_OFFSETS) == 9
    iso = long_range_offsets((10, 10, 10))
    assert [o for o in iso if o[0]] == [(8, 0, 0), (12, 0, 0), (16, 0, 0)]   # 80, 120, 160 nm
    assert [o[2] for o in iso if o[2]] == [4, 8, 12]                        # 40, 80, 120 nm
    with pytest.raises(InputError, match="long_range"):
        NetConfig(heads=(HeadSpec("long_range", 3, "long_range"),))


def test_config_json_round_trip():
    import json

    cfg = tiny(heads=boundary_heads(myelin=True), resolution=(10, 10, 10), patch_size=(16, 16, 16))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert NetConfig.from_dict(d) == cfg
    with pytest.raises(InputError, match="unknown"):
        NetConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(InputError, match="kind"):
        HeadSpec("x", 1, "nonsense")


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = RSUNet(tiny())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.rand(1, 1, 8, 32, 32)
    model(x).mean().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        ref = model(x)
    path = save(model, tmp_path / "m.pt", extra={"seed": 3, "metrics": {"arand": 0.1}})
    loaded = load(path)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.extra == {"seed": 3, "metrics": {"arand": 0.1}}
    with torch.no_grad():
        assert torch.equal(loaded(x), ref)
    assert torch.equal(load_model(str(path))(x), ref)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        load(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="no shipped model"):
        load_model("no_such_model")


def test_normalize():
    a = np.array([0, 51, 255], np.uint8)
    np.testing.assert_allclose(normalize(a), [0.0, 0.2, 1.0], rtol=1e-6)
    assert normalize(a).dtype == np.float32
    assert normalize(np.array([0.5], np.float64)).dtype == np.float32
    with pytest.raises(InputError, match="int32"):
        normalize(np.zeros(3, np.int32))


def test_import_is_light():
    code = ("import sys, emkit.nets, emkit.train, emkit.train.targets, emkit.cli.train; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("shape,kernel", [((1, 16, 16, 64, 64), (3, 3, 3)),   # permuted to stay on oneDNN
                                          ((1, 4, 8, 32, 32), (3, 3, 3)),
                                          ((1, 32, 16, 16, 16), (3, 3, 3)),   # isotropic: split in two
                                          ((1, 16, 15, 15, 13), (3, 3, 3)),   # odd sizes
                                          ((1, 64, 4, 4, 4), (3, 3, 3)),
                                          ((1, 32, 9, 7, 8), (1, 5, 5)),
                                          ((1, 16, 4, 32, 32), (1, 5, 5)),
                                          ((2, 8, 8, 32, 32), (3, 3, 3))])
def test_conv3d_matches_torch(shape, kernel):
    from emkit.nets.rsunet import Conv3d

    torch.manual_seed(0)
    conv = Conv3d(shape[1], 5, kernel, padding=tuple(k // 2 for k in kernel))
    x = torch.rand(*shape, requires_grad=True)
    y = conv(x)
    ref = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=conv.padding)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    gx, gw = torch.autograd.grad((y * ref.detach()).sum(), (x, conv.weight))
    rx, rw = torch.autograd.grad((ref * ref.detach()).sum(), (x, conv.weight))
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-3)
    assert set(conv.state_dict()) == {"weight", "bias"}


def test_conv3d_takes_the_split_path_for_isotropic_patches(monkeypatch):
    """An isotropic batch-1 input that no axis permutation lifts over torch's limit runs as a
    batch of two halves (oneDNN); a thin anisotropic one is permuted instead; batch 2 is torch's."""
    from emkit.nets.rsunet import Conv3d

    calls = []
    real = Conv3d._split_forward

    def spy(self, x, axis):
        calls.append((tuple(x.shape), axis))
        return real(self, x, axis)

    monkeypatch.setattr(Conv3d, "_split_forward", spy)
    conv = Conv3d(32, 32, (3, 3, 3), padding=(1, 1, 1))
    conv(torch.rand(1, 32, 16, 16, 16))
    assert calls == [((1, 32, 16, 16, 16), 0)]
    conv(torch.rand(2, 32, 16, 16, 16))                     # batch 2: torch's own choice
    Conv3d(16, 16, (3, 3, 3), padding=(1, 1, 1))(torch.rand(1, 16, 16, 64, 64))   # permuted
    assert len(calls) == 1


def test_a_folder_named_like_a_shipped_model_does_not_shadow_it(tmp_path, monkeypatch):
    """`emkit infer cleft …` run where a folder `cleft/` exists (a run's output) still means the shipped net."""
    from emkit.inference.chunked import _model_ref
    from emkit.nets import available_models, load_model
    from emkit.synapse.pipeline import _model_path

    name = available_models()[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()
    assert _model_ref(name) == name
    assert load_model(name).n_parameters() > 0
    assert _model_path(name).endswith(f"{name}.pt")
