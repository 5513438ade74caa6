"""emkit.train.targets: affinity (nearest, long-range), binary and semantic targets with masks."""
import numpy as np
import pytest

from emkit.errors import InputError
from emkit.nets import NetConfig, boundary_heads
from emkit.train.targets import (
    affinity_targets,
    make_targets,
    resolve_background,
    zero_separates_labels,
    semantic_targets,
    vessel_wall_target,
)


def _reference(labels, offsets, ok):
    """Slow per-edge reference: (target, valid) with valid = both ends inside and ok."""
    C = len(offsets)
    t = np.zeros((C,) + labels.shape, np.float32)
    v = np.zeros_like(t)
    for c, o in enumerate(offsets):
        for idx in np.ndindex(labels.shape):
            u = tuple(i - d for i, d in zip(idx, o))
            if all(0 <= a < n for a, n in zip(u, labels.shape)):
                v[(c,) + idx] = ok[idx] and ok[u]
                t[(c,) + idx] = labels[idx] == labels[u] and labels[idx] != 0
    return t, v


LABELS = np.array([[[1, 1, 2, 2],
                    [1, 1, 2, 2],
                    [0, 0, 3, 3]],
                   [[1, 1, 2, 2],
                    [1, 4, 4, 2],
                    [0, 0, 3, 3]]], dtype=np.uint64)


def test_nearest_affinities_by_hand():
    t, v = affinity_targets(LABELS)
    # x channel (2): v links (z, y, x) and (z, y, x-1)
    assert t[2, 0, 0, 1] == 1 and t[2, 0, 0, 2] == 0 and v[2, 0, 0, 2] == 1
    assert v[2, 0, 0, 0] == 0                            # x-1 lies outside the patch
    assert v[0, 0].sum() == 0                            # z channel at z=0: outside
    assert t[0, 1, 1, 1] == 0 and t[0, 1, 0, 0] == 1     # 4 above 1: boundary; 1 above 1
    assert v[1, 0, 2, 2] == 1 and t[1, 0, 2, 2] == 0     # 3 | 2 in y
    # label 0: ignored by default, a boundary with background="boundary"
    assert v[2, 0, 2, 1] == 0 and v[1, 0, 2, 0] == 0
    tb, vb = affinity_targets(LABELS, background="boundary")
    assert vb[2, 0, 2, 1] == 1 and tb[2, 0, 2, 1] == 0
    assert vb[1, 0, 2, 0] == 1 and tb[1, 0, 2, 0] == 0


@pytest.mark.parametrize("offsets", [((1, 0, 0), (0, 1, 0), (0, 0, 1)), ((0, 0, 2), (0, 2, 0), (1, 0, 3))])
def test_affinities_match_reference_with_masks(offsets, rng):
    labels = rng.integers(0, 4, size=(4, 6, 7)).astype(np.uint64)
    vm = rng.random(labels.shape) > 0.2
    t, v = affinity_targets(labels, offsets, voxel_mask=vm)
    rt, rv = _reference(labels, offsets, vm & (labels != 0))
    np.testing.assert_array_equal(t, rt)
    np.testing.assert_array_equal(v, rv)
    # a masked voxel invalidates the edges at both of its ends
    z, y, x = 2, 3, 4
    vm2 = np.ones(labels.shape, bool)
    vm2[z, y, x] = False
    _, v2 = affinity_targets(np.ones_like(labels), offsets, voxel_mask=vm2)
    for c, o in enumerate(offsets):
        assert v2[c, z, y, x] == 0
        u = (z + o[0], y + o[1], x + o[2])
        if all(a < n for a, n in zip(u, labels.shape)):
            assert v2[(c,) + u] == 0


def test_long_range_by_hand():
    t, v = affinity_targets(LABELS, [(0, 0, 2)])
    assert v[0, :, :, :2].sum() == 0                     # partner outside the patch
    assert t[0, 0, 0, 2] == 0 and v[0, 0, 0, 2] == 1     # 2 vs 1
    assert t[0, 0, 2, 3] == 0 and v[0, 0, 2, 3] == 0     # partner is label 0
    lab = np.ones((1, 1, 6), np.uint64)
    t, v = affinity_targets(lab, [(0, 0, 5)])
    assert t[0, 0, 0].tolist() == [0, 0, 0, 0, 0, 1] and v[0, 0, 0].tolist() == [0, 0, 0, 0, 0, 1]


def test_semantic_and_vessel_targets():
    sem = np.array([[[0, 1, 2], [3, 4, 5]]], np.uint8)
    t, v = semantic_targets(sem)
    assert t.shape == (5, 1, 2, 3)
    assert t[:, 0, 0, 1].tolist() == [1, 0, 0, 0, 0] and t[:, 0, 1, 2].tolist() == [0, 0, 0, 0, 1]
    assert v[:, 0, 0, 0].sum() == 0 and v[:, 0, 1, 1].sum() == 5      # class 0 does not count
    with pytest.raises(InputError, match="0..5"):
        semantic_targets(sem + 5)
    lab = np.array([[[1, 1, 1], [2, 0, 3]]], np.uint64)
    tv, vv = vessel_wall_target(sem, lab)
    assert tv[0, 0].tolist() == [[0, 0, 0], [0, 0, 1]] and vv.all()  # lumen (id 0) is not wall


def test_make_targets_per_head():
    cfg = NetConfig(widths=(4, 8), patch_size=(2, 4, 4), heads=boundary_heads(myelin=True))
    sample = {"labels": np.ones((2, 4, 4), np.uint64), "mask": np.ones((2, 4, 4), np.uint8)}
    with pytest.raises(InputError, match="myelin"):
        make_targets(sample, cfg)
    sample["myelin"] = np.zeros((2, 4, 4), np.uint8)
    out = make_targets(sample, cfg)
    assert set(out) == {"affinity", "long_range", "myelin"}
    assert out["affinity"][0].shape == (3, 2, 4, 4) and out["long_range"][0].shape == (9, 2, 4, 4)
    assert out["long_range"][1].sum() == 0   # the paper's offsets do not fit in a 2×4×4 patch


def test_zero_separates_labels_and_resolve_background():
    sep = np.array([[[1, 1, 0, 2, 2],
                     [1, 0, 0, 0, 2],
                     [0, 3, 3, 0, 2]]], dtype=np.uint64)
    assert zero_separates_labels(sep)
    touch = sep.copy()
    touch[0, 0, 2] = 1                                  # 1 now touches 2 along x
    assert not zero_separates_labels(touch)
    ztouch = np.stack([sep[0], sep[0]])
    ztouch[1, 0, 0] = 2                                 # 2 sits on top of 1 along z
    assert not zero_separates_labels(ztouch)
    assert not zero_separates_labels(np.where(sep == 2, 1, sep).clip(0, 1))  # one body: nothing to separate
    assert not zero_separates_labels(np.full((2, 3, 3), 4, np.uint64))       # no label 0
    assert resolve_background("auto", [sep]) == "boundary"
    assert resolve_background("auto", [sep, touch]) == "ignore"
    assert resolve_background("auto", [np.ones((2, 2, 2), np.uint64)]) == "ignore"
    assert resolve_background("ignore", [sep]) == "ignore"
    with pytest.raises(InputError, match="background"):
        resolve_background("zero", [sep])
    with pytest.raises(InputError, match="shape"):
        zero_separates_labels(sep[0])
    # with membranes labelled 0, 'boundary' trains the between-body edges, 'ignore' drops all of them
    t, v = affinity_targets(sep, background="boundary")
    assert ((t == 0) & (v == 1)).any()
    t, v = affinity_targets(sep, background="ignore")
    assert not ((t == 0) & (v == 1)).any()


def test_planar_labels_mask_the_affinities_across_sections():
    """Labels drawn section by section (ids of 2D components, new ids in every section): z and
    long-range z channels are not valid anywhere; in-plane channels are as without planar."""
    sec = np.array([[1, 1, 0, 2],
                    [1, 1, 0, 2],
                    [0, 0, 0, 2]], dtype=np.uint64)
    labels = np.stack([sec, np.where(sec > 0, sec + 10, 0), np.where(sec > 0, sec + 20, 0)])
    offs = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 0, 2))
    t3, v3 = affinity_targets(labels, offs, background="boundary")
    t, v = affinity_targets(labels, offs, background="boundary", planar=True)
    assert v3[0].any() and v3[3].any()                      # 3D: the z edges would count, as boundaries
    assert not v[0].any() and not v[3].any()                # planar: masked
    np.testing.assert_array_equal(v[[1, 2, 4]], v3[[1, 2, 4]])
    np.testing.assert_array_equal(t, t3)
    assert ((t[2] == 0) & (v[2] == 1)).any()                # in-plane boundaries still train
    # label 0 separates the 2D components in-plane, not across sections (ids differ in z)
    assert not zero_separates_labels(labels) and zero_separates_labels(labels, axes=(1, 2))
    assert resolve_background("auto", [labels], axes=(1, 2)) == "boundary"
    cfg = NetConfig(widths=(2, 4), resolution=(40, 8, 8), patch_size=(2, 8, 8))
    tg = make_targets({"labels": labels}, cfg, "boundary", planar=True)
    z_lr = [c for c, o in enumerate(cfg.offsets) if o[0] != 0]
    assert not tg["affinity"][1][0].any() and not tg["long_range"][1][z_lr].any()


def test_split_per_section():
    from emkit.train.loop import split_per_section

    seg = np.array([[[1, 1, 0]], [[1, 2, 2]]], dtype=np.uint64)
    out = split_per_section(seg)
    assert out[0, 0, 2] == 0 and out[0, 0, 0] == out[0, 0, 1]
    assert out[0, 0, 0] != out[1, 0, 0] and out[1, 0, 1] == out[1, 0, 2] != out[1, 0, 0]
    assert len(np.unique(out[out > 0])) == 3
