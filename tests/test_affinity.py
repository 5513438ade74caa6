"""Affinity convention, long-range offsets and the noisy stand-in for a boundary net."""
import numpy as np
import pytest

from emkit.affinity import NoisyAffinityParams, affinities_from_labels, boundary_mask, noisy_affinities
from emkit.errors import InputError


def test_convention_channel_links_v_and_v_minus_offset():
    lab = np.ones((4, 5, 6), np.uint64)
    lab[2:] = 2  # a z boundary between z=1 and z=2
    aff = affinities_from_labels(lab)
    assert aff.shape == (3, 4, 5, 6) and aff.dtype == np.float32
    # channel 0 of voxel z links z and z-1: only z=2 crosses the boundary
    assert np.all(aff[0, 2] == 0) and np.all(aff[0, 1] == 1) and np.all(aff[0, 3] == 1)
    # edges leaving the volume are 0
    assert np.all(aff[0, 0] == 0) and np.all(aff[1, :, 0] == 0) and np.all(aff[2, :, :, 0] == 0)
    assert np.all(aff[1, :, 1:] == 1) and np.all(aff[2, :, :, 1:] == 1)


def test_background_has_no_affinity():
    lab = np.zeros((3, 3, 3), np.uint32)
    lab[:, :, 1:] = 7
    aff = affinities_from_labels(lab)
    assert np.all(aff[:, :, :, 0] == 0)
    assert np.all(aff[2, :, :, 2] == 1) and np.all(aff[2, :, :, 1] == 0)


@pytest.mark.parametrize("offset", [(1, 0, 0), (0, 3, 0), (0, 0, 5), (2, -1, 4), (-1, 0, 0)])
def test_long_range_offsets_match_brute_force(offset, rng):
    lab = rng.integers(0, 3, size=(4, 6, 7))
    aff = affinities_from_labels(lab, offsets=[offset])[0]
    Z, Y, X = lab.shape
    for z in range(Z):
        for y in range(Y):
            for x in range(X):
                zz, yy, xx = z - offset[0], y - offset[1], x - offset[2]
                inside = 0 <= zz < Z and 0 <= yy < Y and 0 <= xx < X
                want = inside and lab[z, y, x] != 0 and lab[z, y, x] == lab[zz, yy, xx]
                assert aff[z, y, x] == float(want), (z, y, x)


def test_bad_input_raises():
    with pytest.raises(InputError, match="shape"):
        affinities_from_labels(np.zeros((4, 4), np.uint8))
    with pytest.raises(InputError, match="offsets"):
        affinities_from_labels(np.zeros((2, 2, 2), np.uint8), offsets=[(0, 0, 0)])
    with pytest.raises(InputError, match="dtype"):
        affinities_from_labels(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(InputError, match="noise"):
        NoisyAffinityParams(noise=-1)
    with pytest.raises(InputError, match="erase_value"):
        NoisyAffinityParams(erase_value=(0.9, 0.1))
    with pytest.raises(InputError, match="unknown"):
        noisy_affinities(np.ones((2, 2, 2), np.uint8), 0, nonsense=3)


def _cubes():
    lab = np.zeros((8, 24, 24), np.uint64)
    lab[:, :, :12] = 1
    lab[:, :, 12:] = 2
    lab[:, 12:, :] += 2
    return lab


def test_noisy_affinities_are_deterministic_and_realistic():
    lab = _cubes()
    a = noisy_affinities(lab, 3)
    b = noisy_affinities(lab, np.random.default_rng(3))
    c = noisy_affinities(lab, 4)
    assert a.shape == (3,) + lab.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert np.all(a[0, 0] == 0) and np.all(a[1, :, 0] == 0) and np.all(a[2, :, :, 0] == 0)
    clean = affinities_from_labels(lab)
    valid = np.ones_like(clean, bool)
    valid[0, 0] = valid[1, :, 0] = valid[2, :, :, 0] = False
    cross = (clean == 0) & valid
    assert a[cross].mean() < 0.3 < 0.7 < a[~cross & valid].mean()


def test_noisy_affinities_leaks_and_false_boundaries():
    lab = _cubes()
    quiet = dict(noise=0.0, erase_fraction=0.0, false_boundary_fraction=0.0)
    base = noisy_affinities(lab, 0, **quiet)
    leaky = noisy_affinities(lab, 0, **{**quiet, "erase_fraction": 0.2})
    split = noisy_affinities(lab, 0, **{**quiet, "false_boundary_fraction": 0.05})
    bnd = boundary_mask(lab)
    assert np.all(leaky >= base - 1e-6) and leaky[:, bnd].mean() > base[:, bnd].mean() + 0.02
    assert np.all(split <= base + 1e-6) and split[:, ~bnd].mean() < base[:, ~bnd].mean() - 0.005
