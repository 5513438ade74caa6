"""emkit.detect: the masks a phantom's truth implies, and the truth a masked segmentation is scored
against (benchmarks/masks_effect.py)."""
import numpy as np
import pytest

from emkit.detect import MisalignmentParams, classify_regions, slip_interpolated_truth, true_segmentation_masks
from emkit.errors import InputError
from emkit.phantom import make_phantom


@pytest.fixture(scope="module")
def ph():
    return make_phantom((10, 96, 96), seed=3, defects="slip,step,fold")


def test_true_masks_follow_the_rules(ph):
    z = np.zeros(ph.shape, np.uint8)
    slip, fold, step = ((ph.masks.get(k, z) != 0) for k in ("slip", "fold", "step"))
    assert slip.any() and fold.any() and step.any()
    m_in, m_out = true_segmentation_masks(ph)
    assert m_in.dtype == m_out.dtype == np.uint8 and m_in.shape == ph.shape
    assert np.array_equal(m_in != 0, slip | fold)
    assert not (m_out != 0)[step].any()                       # emkit's default: steps stay unmasked
    p_in, p_out = true_segmentation_masks(ph, MisalignmentParams(output_steps=True))   # the paper's rule
    assert np.array_equal(p_in, m_in) and (p_out != 0)[step].all()
    three = MisalignmentParams(consecutive=1)                 # every input-masked voxel also goes out
    assert np.array_equal(true_segmentation_masks(ph, three)[1], m_in)
    with pytest.raises(InputError, match="phantom"):
        true_segmentation_masks(np.zeros((2, 8, 8)))


def test_slip_interpolated_truth(ph):
    gt = ph.in_image_frame(ph.segmentation)
    got = slip_interpolated_truth(ph)
    s = int(ph.defect_sections["slip"][0])
    others = np.arange(ph.shape[0]) != s
    assert np.array_equal(got[others], gt[others])            # only the slipped section changes
    assert not np.array_equal(got[s], gt[s])
    nb = s - 1 if s > 0 else s + 1                            # it lies in its neighbour's frame
    d = ph.displacement[:, nb]
    assert np.any(ph.displacement[:, s] != d)                 # the slip moved the section
    from emkit.defects import warp

    want = warp(ph.segmentation[s:s + 1], d[:, None], order=0)[0]
    assert np.array_equal(got[s], want)


def test_relative_slip_test():
    """A section that matches its neighbours worse than they match each other is a slip, even
    where both of its correlations are above the absolute threshold (high-contrast tissue)."""
    m = np.full((2, 6), 0.7, np.float32)
    m[:, 0] = np.nan
    m[1, 1] = np.nan
    m[0, [3, 4]] = 0.4                   # (2, 3), (3, 4): above threshold 0.25 but below (2, 4) = 0.7
    slip, step = classify_regions(m, MisalignmentParams())
    assert slip.tolist() == [False, False, False, True, False, False] and not step.any()
    slip, _ = classify_regions(m, MisalignmentParams(slip_margin=None))       # the absolute test alone
    assert not slip.any()
    slip, _ = classify_regions(m, MisalignmentParams(slip_margin=0.35))       # margin larger than the gap
    assert not slip.any()
    slip, _ = classify_regions(m, MisalignmentParams(threshold=0.15))         # 0.4 >= 2.5 x 0.15: not a slip
    assert not slip.any()
    slip, _ = classify_regions(m, MisalignmentParams(threshold=-0.2))         # a low threshold finds nothing
    assert not slip.any()
    for bad in (-0.1, 3.0, True, "x"):
        with pytest.raises(InputError, match="slip_margin"):
            MisalignmentParams(slip_margin=bad)
