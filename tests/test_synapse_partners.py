"""Synaptic partner assignment (issue 8 §3): the partner net trains and saves a loadable checkpoint,
the shipped net assigns a fresh phantom's synapses, the chunked form over layers equals the array
form (serial and on a dask cluster, clefts crossing chunk faces), and bad input is refused clearly."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers_require import require

from emkit.errors import InputError
from emkit.io import Layer

require("torch", "torch (the 'nets' extra: pip install torch==2.13.0)")

from emkit.synapse import (  # noqa: E402
    PARTNER_COLUMNS,
    PartnerParams,
    assign_partners,
    assign_partners_layers,
    cleft_components,
    partner_accuracy,
)

MODEL = "partner"


@pytest.fixture(scope="module")
def fresh():
    """A fresh phantom (seed 0: never used in training or validation), clean (no defects)."""
    from emkit.phantom import make_phantom

    return make_phantom((32, 256, 256), seed=0, defects=None)


def test_params_defaults_and_errors():
    p = PartnerParams()
    assert p.widths == (16, 20, 40)                         # paper: 16, 20, 40 feature maps
    assert p.patch_size((40, 8, 8)) == (18, 80, 80)         # Turner et al. 2020: 160x160x18 at 4x4x40 nm
    for bad in (dict(widths=(16, 0)), dict(radius_nm=-1), dict(contact_nm=-1), dict(max_candidates=0), dict(distinct=1),
                dict(batch_size=0), dict(patch_nm=(1, 2)),
                dict(min_segment_voxels=1.5)):
        with pytest.raises(InputError, match=next(iter(bad))):
            PartnerParams(**bad)


def _two_cells():
    """Two cells (ids 1, 2) meeting at x = 10 in a (3, 20, 20) patch at (40, 8, 8) nm, a 3-voxel
    sliver (id 3) touching the contact one voxel off the cleft, and the cleft: the voxels on both
    sides of the contact (x = 9 and 10) in rows 5..14 of the middle section."""
    seg = np.ones((3, 20, 20), np.uint64)
    seg[:, :, 10:] = 2
    seg[1, 15:18, 10] = 3
    mask = np.zeros(seg.shape, bool)
    mask[1, 5:15, 9:11] = True
    return seg, mask


def test_selection_takes_the_two_cells_at_the_cleft():
    from emkit.synapse.partners import _select

    res = (40, 8, 8)
    seg, mask = _two_cells()
    pre = np.where(seg == 1, 0.8, 0.1).astype(np.float32)
    post = np.where(seg == 2, 0.4, 0.05).astype(np.float32)
    post[seg == 3] = 0.9                         # a sliver the net lights brightly: the old rule's failure
    p, q, ps, qs = _select(pre, post, seg, mask, res, PartnerParams())
    assert (p, q) == (1, 2) and ps == pytest.approx(0.8) and qs == pytest.approx(0.4)
    # the rule of the first shipped version (any segment within 60 nm, each side's largest mean) takes the sliver
    old = PartnerParams(contact_nm=60.0, max_candidates=None, distinct=False)
    assert _select(pre, post, seg, mask, res, old)[:2] == (1, 3)
    # pre != post when two segments hold the cleft, even where one lights both maps most
    both = np.where(seg == 1, 0.9, 0.2).astype(np.float32)
    assert _select(both, both, seg, mask, res, PartnerParams())[:2] in {(1, 2), (2, 1)}
    assert _select(both, both, seg, mask, res, PartnerParams(distinct=False))[:2] == (1, 1)
    # a cleft inside one segment (e.g. a false detection in a vessel wall) is an autapse, which the table drops
    inside = np.zeros(seg.shape, bool)
    inside[1, 5:15, 2:5] = True
    assert _select(pre, post, seg, inside, res, PartnerParams())[:2] == (1, 1)
    # the candidates are the segments with the most voxels at the cleft, however bright another is
    seg2 = seg.copy()
    seg2[1, 13:15, 10] = 3                       # the sliver now holds 2 of the cleft's 20 voxels
    assert _select(pre, post, seg2, mask, res, PartnerParams())[:2] == (1, 2)
    assert _select(pre, post, seg2, mask, res, PartnerParams(max_candidates=3))[:2] == (1, 3)
    # a cleft lying on one side (as a cleft net's, on the postsynaptic density) still finds the other
    # side within contact_nm; with 0 nm only the side it lies in
    post_side = np.zeros(seg.shape, bool)
    post_side[1, 5:15, 10] = True
    assert _select(pre, post, seg, post_side, res, PartnerParams())[:2] == (1, 2)
    assert _select(pre, post, seg, post_side, res, PartnerParams(contact_nm=0))[:2] == (2, 2)
    # no labelled voxel at the cleft: unassigned
    assert _select(pre, post, np.zeros_like(seg), mask, res, PartnerParams()) == (0, 0, 0.0, 0.0)


def test_tiny_training_writes_a_loadable_checkpoint(tmp_path):
    from emkit.nets import load_model
    from emkit.synapse.partner_train import PartnerTrainConfig, train_partner

    cfg = PartnerTrainConfig(out_dir=str(tmp_path / "run"), iterations=3, val_interval=3, checkpoint_interval=3,
                             widths=(4, 8, 8), patch_nm=(360, 320, 320), phantom_size=(16, 128, 128),
                             train_seeds=(101, 102, 103), val_seed=199, progress=False, seed=1)
    res = train_partner(cfg)
    assert res["iterations"] == 3 and res["n_train_clefts"] >= 1
    for name in ("last.pt", "best.pt", "log.json"):
        assert (tmp_path / "run" / name).is_file()
    net = load_model(str(tmp_path / "run" / "best.pt"))
    assert net.config.in_channels == 2 and [h.name for h in net.config.heads] == ["pre", "post"]
    assert net.config.widths == (4, 8, 8) and net.extra["seed"] == 1 and net.extra["train_config"]["iterations"] == 3
    assert len(pd.read_json(tmp_path / "run" / "log.json", typ="series")["train_loss"]) == 3
    with pytest.raises(InputError, match="resume"):        # never overwrite a run silently
        train_partner(cfg)
    more = train_partner(PartnerTrainConfig(**{**cfg.to_dict(), "iterations": 4}), resume=True)
    assert more["iterations"] == 4


def test_shipped_net_assigns_fresh_phantom(fresh):
    ph = fresh
    assert len(ph.synapses) >= 4
    df = assign_partners(ph.image, ph.clefts, ph.segmentation, model=MODEL, progress=False)
    assert list(df.columns) == list(PARTNER_COLUMNS)
    assert sorted(df.cleft_id) == sorted(ph.synapses.cleft_id)
    assert (df.assignment_score == np.minimum(df.pre_score, df.post_score)).all()
    acc = partner_accuracy(df, ph.synapses)
    assert acc["missing"] == 0
    assert acc["accuracy"] >= 0.8, acc
    assert (df.pre_id != df.post_id).all()                 # no cleft made an autapse of its own


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    """A small untrained partner net saved as a checkpoint: equality of the two forms needs no
    trained weights, and it keeps the test fast."""
    import torch

    from emkit.nets import save
    from emkit.synapse.partners import build_partner_net

    torch.manual_seed(0)
    net = build_partner_net(params=PartnerParams(widths=(4, 8, 8), patch_nm=(360, 320, 320)))
    return str(save(net, tmp_path_factory.mktemp("net") / "small_partner.pt"))


def _write(tmp_path, name, arr, kind):
    url = str(tmp_path / name)
    Layer.create(url, kind, arr.shape, resolution=(40, 8, 8)).write(arr)
    return url


def test_chunked_equals_array_serial_and_cluster(tmp_path, fresh, small_net):
    from emkit.runtime import Cluster

    ph = fresh
    crop = (slice(None), slice(0, 128), slice(64, 224))     # a few clefts, clefts cut by the crop's faces too
    image, segmentation = ph.image[crop], ph.segmentation[crop].astype(np.uint64)
    lab, tab = cleft_components((ph.clefts[crop] > 0).astype(np.float32))   # the cleft stage's labels and table
    assert len(tab) >= 3
    want = assign_partners(image, lab, segmentation, model=small_net, progress=False)
    img = _write(tmp_path, "image", image, "image")
    cl = _write(tmp_path, "clefts", lab, "segmentation")
    seg = _write(tmp_path, "seg", segmentation, "segmentation")
    chunk = (9, 45, 61)

    def crosses(cs):
        return any((t[f"bbox_{a}0"] // c) != ((t[f"bbox_{a}1"] - 1) // c) for _, t in tab.iterrows()
                   for a, c in zip("zyx", cs))

    assert crosses(chunk)

    def same(got):
        assert list(got.columns) == list(PARTNER_COLUMNS)
        pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))  # bit for bit on CPU

    got = assign_partners_layers(img, cl, seg, table=tab, model=small_net, chunk_size=chunk, workers=0, progress=False)
    same(got)
    # each cleft was assigned in the chunk holding most of its voxels
    for cid, start in got.attrs["owner_chunk"].items():
        m = lab == cid
        counts = {}
        for z, y, x in zip(*np.nonzero(m)):
            k = (z // chunk[0] * chunk[0], y // chunk[1] * chunk[1], x // chunk[2] * chunk[2])
            counts[k] = counts.get(k, 0) + 1
        assert counts[start] == max(counts.values())
    with Cluster(n_workers=1, quiet=True) as c:
        got = assign_partners_layers(img, cl, seg, table=tab, model=small_net, chunk_size=(16, 64, 80), client=c,
                                     progress=False)
    same(got)


def test_bad_inputs(tmp_path, fresh):
    ph = fresh
    small = ph.segmentation[:, :100]
    with pytest.raises(InputError, match="same shape"):
        assign_partners(ph.image, ph.clefts, small, model=MODEL, progress=False)
    with pytest.raises(InputError, match="integer ids"):
        assign_partners(ph.image, ph.clefts.astype(np.float32), ph.segmentation, model=MODEL, progress=False)
    with pytest.raises(InputError, match="no shipped model 'nope'"):
        assign_partners(ph.image, ph.clefts, ph.segmentation, model="nope", progress=False)
    with pytest.raises(InputError, match="not a partner net"):
        assign_partners(ph.image, ph.clefts, ph.segmentation, model="boundary", progress=False)
    img = _write(tmp_path, "image", ph.image, "image")
    cl = _write(tmp_path, "clefts", ph.clefts, "segmentation")
    seg = _write(tmp_path, "seg", ph.segmentation[:, :100].copy(), "segmentation")
    with pytest.raises(InputError, match="size"):
        assign_partners_layers(img, cl, seg, table=pd.DataFrame({"id": [1]}), chunk_size=64, progress=False)
    seg = _write(tmp_path, "seg2", ph.segmentation.astype(np.uint64), "segmentation")
    with pytest.raises(InputError, match="'id' column"):
        assign_partners_layers(img, cl, seg, table=ph.synapses, chunk_size=64, progress=False)
    with pytest.raises(InputError, match=r"cleft ids \[999\]"):
        assign_partners_layers(img, cl, seg, table=pd.DataFrame({"id": [999]}), chunk_size=64, progress=False)
    with pytest.raises(InputError, match="no Precomputed layer"):
        assign_partners_layers(img, str(tmp_path / "missing"), seg, table=pd.DataFrame({"id": [1]}), chunk_size=64,
                               progress=False)
