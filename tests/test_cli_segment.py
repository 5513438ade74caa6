"""``emkit segment``: round trip through layers, refusals, bad input."""
import json

import numpy as np
import pytest

from emkit.cli.main import main


@pytest.fixture
def aff_url(tmp_path):
    from emkit.affinity import noisy_affinities
    from emkit.io import Layer

    gt = np.zeros((8, 48, 40), np.uint64)
    gt[:, :20] = 1
    gt[:, 20:, :25] = 2
    gt[:, 20:, 25:] = 3
    gt[4:, :20, 20:] = 4
    aff = noisy_affinities(gt, 0)
    url = str(tmp_path / "aff")
    Layer.create(url, "affinities", gt.shape).write(aff)
    return url, aff


def test_segment_round_trip(tmp_path, aff_url, capsys):
    from emkit.io import Layer
    from emkit.segment import load_history, segment

    url, aff = aff_url
    out = str(tmp_path / "out")
    rc = main(["segment", url, out, "--chunk", "4,20,16", "--workers", "0", "--threshold", "0.4", "--quiet"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["threshold"] == 0.4 and report["chunk_size_zyx"] == [4, 20, 16]
    assert report["executed"]["leaves"] == 2 * 3 * 3
    seg, sv, h = segment(aff, threshold=0.4)
    assert np.array_equal(Layer.open(report["supervoxels"]).read(), sv)
    assert np.array_equal(Layer.open(report["segmentation"]).read(), seg)
    assert len(np.unique(seg[seg > 0])) == 4  # the four objects
    assert np.array_equal(load_history(out).labels_at(0.7)[1], h.labels_at(0.7)[1])
    # existing outputs are refused, then replaced with --overwrite
    assert main(["segment", url, out, "--workers", "0", "--quiet"]) == 2
    assert "already exist" in capsys.readouterr().err
    assert main(["segment", url, out, "--workers", "0", "--quiet", "--overwrite", "--threshold", "0.99"]) == 0
    rep = json.loads(capsys.readouterr().out)  # a small volume without --chunk: one piece, in this process
    assert rep["executed"] == {"whole_volume": 1} and rep["runner"] == "in-process (whole volume)"
    assert np.array_equal(Layer.open(report["segmentation"]).read(), segment(aff, threshold=0.99)[0])


def test_segment_bad_input(tmp_path, aff_url, capsys):
    from emkit.io import Layer

    url, _ = aff_url
    assert main(["segment", url, str(tmp_path / "o"), "--threshold", "2", "--workers", "0", "--quiet"]) == 2
    assert "threshold must be in [0, 1]" in capsys.readouterr().err
    assert main(["segment", url, str(tmp_path / "o"), "--chunk", "4,0,8", "--workers", "0", "--quiet"]) == 2
    assert "chunk" in capsys.readouterr().err
    img = str(tmp_path / "img")
    Layer.create(img, "image", (8, 48, 40))
    assert main(["segment", img, str(tmp_path / "o"), "--workers", "0", "--quiet"]) == 2
    assert "affinities layer" in capsys.readouterr().err
    Layer.create(str(tmp_path / "sem"), "segmentation", (8, 48, 41))
    assert main(["segment", url, str(tmp_path / "o"), "--semantic", str(tmp_path / "sem"), "--workers", "0",
                 "--quiet"]) == 2
    assert "semantic layer" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --workers and --scheduler exclude each other
        main(["segment", url, str(tmp_path / "o"), "--workers", "1", "--scheduler", "tcp://127.0.0.1:1"])
