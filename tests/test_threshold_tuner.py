"""The threshold tuner: overlay follows the slider, scores equal emkit.evaluate on the cut,
one call sends the cut to a real Neuroglancer server."""
import json
import urllib.request

import numpy as np
import pytest

from emkit.affinity import noisy_affinities
from emkit.errors import InputError, LayerExistsError
from emkit.evaluate import evaluate
from emkit.io import Layer
from emkit.segment import AgglomerationParams, WatershedParams, agglomerate, region_graph, watershed
from emkit_widgets.threshold_tuner import ThresholdTuner

SHAPE = (8, 48, 56)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(5)
    zz, yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]]
    seeds = rng.uniform(0, 1, (10, 3)) * SHAPE
    d = sum((c[None] - seeds[:, i, None, None, None]) ** 2 for i, c in enumerate((zz * 3, yy, xx)))
    gt = (np.argmin(d, axis=0) + 1).astype(np.uint64)
    aff = noisy_affinities(gt, 3, noise=0.25)
    sv = watershed(aff, WatershedParams(size_threshold=0, dust_size=0))
    hist = agglomerate(region_graph(sv, aff), AgglomerationParams(constraints=False))
    img = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    return img, sv, hist, gt


def test_section_and_overlay_follow_the_threshold(case):
    img, sv, hist, gt = case
    tuner = ThresholdTuner(img, sv, hist, gt, z=3)
    fine, _ = tuner.render(threshold=1.5)      # no merge applies: supervoxels
    coarse, _ = tuner.render(threshold=0.0)    # every merge applies
    assert fine.shape == coarse.shape == SHAPE[1:] + (3,) and fine.dtype == np.float32
    assert 0 <= fine.min() and fine.max() <= 1
    n_fine = np.unique(tuner.section(1.5)).size
    n_coarse = np.unique(tuner.section(0.0)).size
    assert n_coarse < n_fine
    assert np.any(fine != coarse)
    np.testing.assert_array_equal(tuner.section(1.5), sv[3])
    for t in (0.2, 0.5, 0.8):
        np.testing.assert_array_equal(tuner.section(t, z=5), hist.segmentation(sv, t)[5])
    # the image shows through where nothing is drawn over it
    tuner.alpha = 0.0
    plain, _ = tuner.render(threshold=1.5, z=3)
    edge = np.zeros(SHAPE[1:], bool)
    edge[:, :-1] |= sv[3][:, 1:] != sv[3][:, :-1]
    edge[:-1, :] |= sv[3][1:, :] != sv[3][:-1, :]
    np.testing.assert_allclose(plain[~edge, 0], img[3][~edge] / 255.0, atol=1e-6)
    with pytest.raises(IndexError):
        tuner.render(z=SHAPE[0])


def test_scores_equal_evaluate_on_the_cut(case):
    img, sv, hist, gt = case
    tuner = ThresholdTuner(img, sv, hist, gt)
    seen = set()
    for t in (0.0, 0.3, 0.5, 0.7, 0.9, 1.5):
        _, s = tuner.render(threshold=t)
        want = evaluate(hist.segmentation(sv, t), gt)
        for key in ("voi_split", "voi_merge", "voi", "arand", "arand_precision", "arand_recall", "n_seg"):
            assert s[key] == pytest.approx(want[key], abs=1e-12), (t, key)
        seen.add(round(s["voi_split"], 9))
    assert len(seen) > 2  # the scores really change with the threshold
    assert ThresholdTuner(img, sv, hist).render(0.5)[1] is None


def test_checks_shapes(case):
    img, sv, hist, gt = case
    with pytest.raises(InputError, match="image shape"):
        ThresholdTuner(img[:, :10], sv, hist)
    with pytest.raises(InputError, match="gt shape"):
        ThresholdTuner(img, sv, hist, gt[:2])
    with pytest.raises(InputError, match="z must be"):
        ThresholdTuner(img, sv, hist, z=99)


def test_widget_slider_redraws(case):
    img, sv, hist, gt = case
    tuner = ThresholdTuner(img, sv, hist, gt, threshold=0.9)
    box = tuner.widget()
    png, html = tuner._controls["image"].value, tuner._controls["scores"].value
    assert "VOI" in html and "ARAND" in html
    tuner._controls["threshold"].value = 0.0
    assert tuner.threshold == 0.0
    assert tuner._controls["image"].value != png and tuner._controls["scores"].value != html
    tuner._controls["z"].value = 1
    assert tuner.z == 1
    assert box is tuner._widget


def test_send_to_neuroglancer(case, tmp_path):
    img, sv, hist, gt = case
    tuner = ThresholdTuner(img, sv, hist, gt, threshold=0.4)
    handle = tuner.send_to_neuroglancer(tmp_path / "ds")
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        names = [layer["name"] for layer in handle.state["layers"]]
        assert set(names) == {"image", "gt/segmentation", "segmentation_t0.400"}
        cut = Layer.open(tmp_path / "ds" / "segmentation_t0.400")
        np.testing.assert_array_equal(cut.read(), hist.segmentation(sv, 0.4))
        np.testing.assert_array_equal(Layer.open(tmp_path / "ds" / "image").read(), img)
        np.testing.assert_array_equal(Layer.open(tmp_path / "ds" / "gt" / "segmentation").read(), gt)
        src = next(layer["source"] for layer in handle.state["layers"] if layer["name"] == "segmentation_t0.400")
        with urllib.request.urlopen(src[len("precomputed://"):] + "/info", timeout=5) as r:
            assert json.loads(r.read())["type"] == "segmentation"
    finally:
        handle.stop()
    # the same cut again: refused unless asked; image and gt layers are reused, not rewritten
    with pytest.raises(LayerExistsError):
        tuner.send_to_neuroglancer(tmp_path / "ds")
    tuner.threshold = 0.6
    h2 = tuner.send_to_neuroglancer(tmp_path / "ds")
    h2.stop()
    np.testing.assert_array_equal(Layer.open(tmp_path / "ds" / "segmentation_t0.600").read(),
                                  hist.segmentation(sv, 0.6))


def test_set_threshold_moves_the_slider(case):
    img, sv, hist, gt = case
    tuner = ThresholdTuner(img, sv, hist, gt, threshold=0.9)
    tuner.set_threshold(0.3)
    assert tuner.threshold == 0.3
    tuner.widget()
    html = tuner._controls["scores"].value
    tuner.set_threshold(0.0)
    assert tuner._controls["threshold"].value == 0.0 and tuner._controls["scores"].value != html


def test_from_affinities_takes_tuned_parameters(case, tmp_path):
    from emkit.segment import segment
    from emkit.segment.tune import params_dict, save_params, tune

    img, _, _, gt = case
    aff = noisy_affinities(gt, 3, noise=0.25)
    res = tune(aff, gt, grid={"dust_size": (0, 50)}, thresholds=(0.2, 0.4, 0.6))
    path = tmp_path / "tuned.json"
    save_params(path, res.to_dict())
    for params in (res, str(path), (res.watershed, res.agglomeration, res.threshold)):
        tuner = ThresholdTuner.from_affinities(img, aff, gt, params=params)
        assert tuner.threshold == res.threshold
        # the scores shown are those of the tuned segmentation, as emkit.evaluate gives them
        seg, _, _ = segment(aff, threshold=res.threshold, watershed_params=res.watershed,
                            agglomeration_params=res.agglomeration)
        assert tuner.scores()["arand"] == pytest.approx(evaluate(seg, gt)["arand"], abs=1e-12)
        assert tuner.scores()["arand"] == pytest.approx(res.scores["arand"], abs=1e-12)
    assert ThresholdTuner.from_affinities(img, aff, params=None, threshold=0.3).threshold == 0.3
    with pytest.raises(InputError, match="params"):
        ThresholdTuner.from_affinities(img, aff, params=3)
