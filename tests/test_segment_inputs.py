"""`emkit segment` / `segment_layers` inputs: affinities, the affinity channels of a probability
layer, a boundary-probability map (float or uint8, imported with `emkit import --kind probability`);
grid checks of the semantic layer; parameter files; in-process runs; in-memory sinks refused on dask."""
import json
import subprocess
import sys

import numpy as np
import pytest

from emkit.affinity import boundary_mask, boundary_to_affinities
from emkit.cli.main import main
from emkit.errors import InputError
from emkit.io import Layer
from emkit.segment import AgglomerationParams, WatershedParams, segment, segment_layers
from emkit.segment.params import BOUNDARY_MAP_WATERSHED
from helpers_cells import voronoi
from emkit.segment.chunked import ArraySink, ArraySource, BoundarySource, FileStore, MemoryStore, run_chunked

SMALL_WS = WatershedParams(size_threshold=40, dust_size=10)


def cells(shape=(10, 64, 72), n=40, seed=3):
    """Voronoi cells, anisotropic (z counts 4x)."""
    return voronoi(shape, n, seed)


@pytest.fixture(scope="module")
def boundary():
    """A boundary-probability map like a pixel classifier's: blurred membranes plus noise, in [0, 1]."""
    from scipy import ndimage

    gt = cells()
    rng = np.random.default_rng(7)
    b = ndimage.gaussian_filter(boundary_mask(gt).astype(np.float32), (0.5, 1.0, 1.0))
    b = b / b.max() + 0.15 * ndimage.gaussian_filter(rng.standard_normal(gt.shape).astype(np.float32), 1.0)
    return np.clip(b, 0, 1).astype(np.float32), gt


def same_result(a, b):
    (seg, sv, h), (seg2, sv2, h2) = a, b
    assert np.array_equal(sv, sv2) and np.array_equal(seg, seg2)
    for t in (0.9, 0.5, 0.2):
        assert np.array_equal(h.labels_at(t)[1], h2.labels_at(t)[1])


@pytest.mark.parametrize("chunk", [(4, 24, 20), (10, 64, 72), (3, 64, 11)])
def test_boundary_source_chunked_equals_whole_volume(boundary, chunk):
    b, _ = boundary
    aff = boundary_to_affinities(b)
    src = BoundarySource(ArraySource(b))
    from emkit.geometry import Bbox

    for box in (Bbox((0, 0, 0), (4, 24, 20)), Bbox((3, 17, 5), (10, 64, 33)), Bbox((9, 63, 71), (10, 64, 72))):
        assert np.array_equal(src.read(box), aff[(slice(None),) + box.slices()])
    sink = ArraySink(b.shape)
    h, _ = run_chunked(src, b.shape, chunk, threshold=0.5, watershed_params=SMALL_WS, sink=sink, workers=0)
    same_result(segment(aff, watershed_params=SMALL_WS), (sink.segmentation, sink.supervoxels, h))


@pytest.mark.parametrize("as_uint8", [False, True])
def test_import_boundary_map_and_segment_through_the_cli(tmp_path, boundary, capsys, as_uint8):
    """A user's boundary map (float [0, 1] or uint8 0..255, npz key boundary_prob) through
    `emkit import --kind probability` and `emkit segment` equals segment(boundary_to_affinities(b))."""
    b, gt = boundary
    if as_uint8:
        b = np.round(b * 255).astype(np.uint8)
    np.savez(tmp_path / "map.npz", boundary_prob=b, labels=gt)
    url = str(tmp_path / "bprob")
    assert main(["import", str(tmp_path / "map.npz"), url, "--key", "boundary_prob", "--kind", "probability",
                 "--resolution", "10,10,10", "--chunk", "8,32,32", "--quiet"]) == 0
    layer = Layer.open(url)
    assert layer.kind.name == "probability" and layer.dtype == np.float32 and layer.num_channels == 1
    stored = layer.read()[0]
    assert np.array_equal(stored, b.astype(np.float32) / 255 if as_uint8 else b)
    capsys.readouterr()
    out = str(tmp_path / "seg")
    assert main(["segment", url, out, "--chunk", "4,24,20", "--threshold", "0.4", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["input_form"] == "boundary probability" and rep["runner"] == "in-process (serial)"
    seg, sv, _ = segment(boundary_to_affinities(b), threshold=0.4, watershed_params=BOUNDARY_MAP_WATERSHED)
    assert np.array_equal(Layer.open(rep["supervoxels"]).read(), sv)
    assert np.array_equal(Layer.open(rep["segmentation"]).read(), seg)
    assert Layer.open(rep["segmentation"]).resolution == (10.0, 10.0, 10.0)


def test_affinity_channels_of_a_probability_layer(tmp_path, boundary, rng):
    """The probability layer `emkit infer --heads affinity,long_range` writes: its affinity_z/y/x
    channels are read, wherever they sit among the others."""
    b, _ = boundary
    aff = boundary_to_affinities(b)
    names = ["long_range_0", "affinity_z", "affinity_y", "long_range_1", "affinity_x"]
    data = rng.random((5,) + b.shape).astype(np.float32)
    data[[1, 2, 4]] = aff
    url = str(tmp_path / "prob")
    Layer.create(url, "probability", b.shape, num_channels=5, channel_names=names).write(data)
    rep = segment_layers(url, tmp_path / "o", chunk_size=(5, 32, 40), watershed_params=SMALL_WS, progress=False)
    assert rep["input_form"] == "affinity channels"
    seg, sv, _ = segment(aff, watershed_params=SMALL_WS)
    assert np.array_equal(Layer.open(rep["segmentation"]).read(), seg)
    assert np.array_equal(Layer.open(rep["supervoxels"]).read(), sv)


def test_other_inputs_are_refused_with_the_accepted_forms(tmp_path):
    img = str(tmp_path / "img")
    Layer.create(img, "image", (4, 8, 8))
    with pytest.raises(InputError) as e:
        segment_layers(img, tmp_path / "o", progress=False)
    msg = str(e.value)
    for part in ("image layer", "1 channel(s)", "uint8", "affinities layer", "affinity_z, affinity_y, affinity_x",
                 "boundary probability", "--kind probability"):
        assert part in msg, part
    Layer.create(str(tmp_path / "two"), "probability", (4, 8, 8), num_channels=2)
    with pytest.raises(InputError, match=r"2 channel\(s\) \(c0, c1\), dtype float32"):
        segment_layers(str(tmp_path / "two"), tmp_path / "o", progress=False)
    Layer.create(str(tmp_path / "myelin"), "probability", (4, 8, 8), num_channels=1, channel_names=["myelin"])
    with pytest.raises(InputError, match=r"\(myelin\)"):
        segment_layers(str(tmp_path / "myelin"), tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kw,match", [(dict(voxel_offset=(1, 0, 0)), r"voxel_offset \(1, 0, 0\)"),
                                      (dict(resolution=(40, 8, 4)), r"resolution \(40, 8, 4\) nm")])
def test_semantic_layer_on_another_grid_is_refused(tmp_path, boundary, kw, match):
    b, gt = boundary
    url = str(tmp_path / "aff")
    Layer.create(url, "affinities", b.shape).write(boundary_to_affinities(b))
    sem = str(tmp_path / "sem")
    Layer.create(sem, "segmentation", b.shape, **kw).write((gt % 5 + 1).astype(np.uint64))
    with pytest.raises(InputError, match=match) as e:
        segment_layers(url, tmp_path / "o", semantic_url=sem, progress=False)
    assert "semantic layer" in str(e.value)
    assert not (tmp_path / "o").exists()


def test_params_file_is_used_recorded_and_overridden(tmp_path, boundary, capsys):
    b, _ = boundary
    aff = boundary_to_affinities(b)
    url = str(tmp_path / "aff")
    Layer.create(url, "affinities", b.shape).write(aff)
    wp = WatershedParams(size_threshold=60, dust_size=20, low=0.05)
    ap = AgglomerationParams(constraints=False)
    pfile = tmp_path / "tuned.json"
    pfile.write_text(json.dumps({"watershed": wp.to_dict(), "agglomeration": ap.to_dict(), "threshold": 0.3,
                                 "scores": {"arand": 0.1}}))
    assert main(["segment", url, str(tmp_path / "a"), "--params", str(pfile), "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["threshold"] == 0.3
    seg, sv, _ = segment(aff, threshold=0.3, watershed_params=wp, agglomeration_params=ap)
    assert not np.array_equal(seg, segment(aff, threshold=0.3)[0])  # the file's parameters matter here
    assert np.array_equal(Layer.open(rep["segmentation"]).read(), seg)
    rec = json.loads((tmp_path / "a" / "params.json").read_text())
    assert rec["watershed"] == wp.to_dict() and rec["agglomeration"] == ap.to_dict() and rec["threshold"] == 0.3
    assert rec["params_file"] == str(pfile) and rec["input"]["form"] == "affinities"
    # an explicit --threshold overrides the file's; the recorded file reproduces a run
    assert main(["segment", url, str(tmp_path / "b"), "--params", str(pfile), "--threshold", "0.6", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    seg6 = segment(aff, threshold=0.6, watershed_params=wp, agglomeration_params=ap)[0]
    assert rep["threshold"] == 0.6 and np.array_equal(Layer.open(rep["segmentation"]).read(), seg6)
    assert main(["segment", url, str(tmp_path / "c"), "--params", str(tmp_path / "b" / "params.json"), "--quiet"]) == 0
    assert np.array_equal(Layer.open(json.loads(capsys.readouterr().out)["segmentation"]).read(), seg6)
    with pytest.raises(InputError, match="not both"):
        segment_layers(url, tmp_path / "d", params=str(pfile), watershed_params=wp, progress=False)


@pytest.mark.parametrize("content,match", [
    (None, "no parameter file at"),
    ("{not json", "not valid JSON"),
    ('{"watershed": {"size_treshold": 5}}', "unknown WatershedParams fields"),
    ('{"watershed": {"low": 2.0}}', "low"),
    ('{"threshold": 1.5}', "threshold must be in"),
    ('{"scores": {}}', "holds none of"),
    ("[1, 2]", "JSON object"),
])
def test_bad_params_file_gives_one_line_error(tmp_path, boundary, capsys, content, match):
    b, _ = boundary
    url = str(tmp_path / "aff")
    Layer.create(url, "affinities", b.shape).write(boundary_to_affinities(b))
    pfile = tmp_path / "p.json"
    if content is not None:
        pfile.write_text(content)
    assert main(["segment", url, str(tmp_path / "o"), "--params", str(pfile), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert match in err and str(pfile) in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_small_volume_runs_in_process_without_dask_or_torch(tmp_path, boundary):
    """Without --workers, a small volume is segmented in the command's own process: no dask cluster,
    and neither dask, torch nor neuroglancer is imported."""
    b, _ = boundary
    url = str(tmp_path / "bprob")
    Layer.create(url, "probability", b.shape, num_channels=1).write(b[None])
    code = ("import json, sys\nsys.argv[0] = 'emkit'  # as the installed command (emkit.cli.faststart applies)\n"
            "from emkit.cli.main import main\n"
            f"rc = main(['segment', {url!r}, {str(tmp_path / 'o')!r}, '--quiet'])\n"
            "from emkit.cli.faststart import command_process\nassert command_process()\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed', 'torch', 'neuroglancer', "
            "'napari'})\nprint('HEAVY', json.dumps(heavy))\nsys.exit(rc)\n")
    from emkit.cli.faststart import fast_start

    assert fast_start() is False  # a process that calls main() itself (this test) is left alone
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert '"runner": "in-process (whole volume)"' in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "HEAVY []"
    seg, sv, _ = segment(boundary_to_affinities(b), watershed_params=BOUNDARY_MAP_WATERSHED)
    assert np.array_equal(Layer.open(str(tmp_path / "o" / "segmentation")).read(), seg)
    assert np.array_equal(Layer.open(str(tmp_path / "o" / "supervoxels")).read(), sv)


def test_whole_volume_path_with_semantic_equals_the_array_function(tmp_path, boundary):
    b, gt = boundary
    aff = boundary_to_affinities(b)
    sem = (gt % 5 + 1).astype(np.uint64)
    url = str(tmp_path / "aff")
    Layer.create(url, "affinities", b.shape, voxel_offset=(3, 0, 7)).write(aff)
    Layer.create(str(tmp_path / "sem"), "segmentation", b.shape, voxel_offset=(3, 0, 7)).write(sem)
    ap = AgglomerationParams(semantic_min_size=300, size_min_supervoxels_both=3, size_max_supervoxels_one=8)
    rep = segment_layers(url, tmp_path / "o", semantic_url=str(tmp_path / "sem"), threshold=0.3,
                         watershed_params=SMALL_WS, agglomeration_params=ap, workers=0, progress=False)
    assert rep["runner"] == "in-process (whole volume)" and rep["executed"] == {"whole_volume": 1}
    seg, sv, h = segment(aff, semantic=sem.astype(np.int64), threshold=0.3, watershed_params=SMALL_WS,
                         agglomeration_params=ap)
    assert len(h.veto_reasons) > 0  # the constraints acted
    assert np.array_equal(Layer.open(rep["segmentation"]).read(), seg)
    assert Layer.open(rep["segmentation"]).voxel_offset == (3, 0, 7)
    from emkit.segment import load_history

    assert np.array_equal(load_history(tmp_path / "o").labels_at(0.6)[1], h.labels_at(0.6)[1])


def test_in_memory_store_or_sink_refused_when_tasks_run_elsewhere(tmp_path, boundary):
    from emkit.runtime import Cluster

    b, _ = boundary
    aff = boundary_to_affinities(b)
    with Cluster(n_workers=1, quiet=True) as cluster:
        with pytest.raises(InputError, match="MemoryStore"):
            run_chunked(ArraySource(aff), b.shape, (5, 32, 36), client=cluster)
        with pytest.raises(InputError, match="ArraySink"):
            run_chunked(ArraySource(aff), b.shape, (5, 32, 36), client=cluster, store=FileStore(str(tmp_path / "s")),
                        sink=ArraySink(b.shape))
        assert not (tmp_path / "s").exists()  # refused before any task ran
    with pytest.raises(InputError, match="workers=2"):
        run_chunked(ArraySource(aff), b.shape, (5, 32, 36), store=MemoryStore(), workers=2)


def test_runner_rule_for_workers_none():
    """workers=None: in this process up to AUTO_CLUSTER_VOXELS voxels, a local cluster sized to the machine above
    (when it has more than one core); explicit workers/scheduler always decide."""
    from emkit.runtime import machine_cores
    from emkit.segment.pipeline import AUTO_CLUSTER_VOXELS, _runner

    assert _runner(None, None, None, AUTO_CLUSTER_VOXELS) == ({"workers": 0}, None, "in-process (serial)")
    big = _runner(None, None, None, AUTO_CLUSTER_VOXELS + 1)
    assert big == ((None, (None, None), None) if machine_cores() > 1 else ({"workers": 0}, None, "in-process (serial)"))
    assert _runner(0, None, None, 10 * AUTO_CLUSTER_VOXELS)[0] == {"workers": 0}
    assert _runner(3, None, None, 1000) == (None, (3, None), None)
    assert _runner(None, "tcp://127.0.0.1:1", None, 1000) == (None, (None, "tcp://127.0.0.1:1"), None)
    with pytest.raises(InputError, match="workers must be >= 0"):
        _runner(-1, None, None, 1000)


def test_boundary_map_out_of_range_names_the_layer_and_is_not_retried(tmp_path, boundary):
    from emkit.errors import TaskFailedError

    b, _ = boundary
    url = str(tmp_path / "b255")
    Layer.create(url, "probability", b.shape, num_channels=1).write((b * 255)[None])
    with pytest.raises(InputError, match=r"b255: boundary probability must be .* divide it by 255"):
        segment_layers(url, tmp_path / "whole", progress=False)
    with pytest.raises(TaskFailedError, match=r"\) failed: InputError: .*b255: boundary probability") as e:
        segment_layers(url, tmp_path / "chunked", chunk_size=(5, 32, 36), workers=0, progress=False)
    assert "retries" not in str(e.value)  # bad input fails the same way again: no retries


def test_real_boundary_map_through_import_segment_evaluate(tmp_path, capsys):
    """A real pixel classifier's boundary map (uint8, FIB-SEM, tests/data/gala_fib_boundary) as a user
    runs it: import, segment chunk by chunk, evaluate against the imported bodies; the same as the
    array functions on the file's arrays."""
    from pathlib import Path

    from emkit.evaluate import evaluate

    npz = Path(__file__).parent / "data" / "gala_fib_boundary" / "gala_fib_train_crop_25x100x100.npz"
    with np.load(npz) as z:
        b, gt = z["boundary"], z["labels"]
    for key, kind, name in (("boundary", "probability", "bprob"), ("labels", "segmentation", "gt")):
        assert main(["import", str(npz), str(tmp_path / name), "--key", key, "--kind", kind, "--resolution",
                     "10,10,10", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "bprob"), str(tmp_path / "seg"), "--chunk", "13,50,64", "--quiet"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["input_form"] == "boundary probability" and rep["executed"]["leaves"] == 2 * 2 * 2
    seg, _, _ = segment(boundary_to_affinities(b), threshold=rep["threshold"], watershed_params=BOUNDARY_MAP_WATERSHED)
    assert np.array_equal(Layer.open(rep["segmentation"]).read(), seg)
    assert main(["evaluate", rep["segmentation"], str(tmp_path / "gt"), "--worst", "0"]) == 0
    scores = json.loads(capsys.readouterr().out)
    want = evaluate(seg, gt.astype(np.uint64), k=0)
    assert scores["arand"] == pytest.approx(want["arand"]) and scores["voi"] == pytest.approx(want["voi"])
    assert scores["n_gt"] == len(np.unique(gt[gt > 0]))
