"""emkit.transfer and ``emkit transfer``: chunked copies equal the source and the in-memory copy,
rechunk and re-encode, crop, resume after the whole run is killed, and refuse bad input.

Real layers on file:// under tmp_path, a real dask LocalCluster (2 processes on 127.0.0.1).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emkit.cli.main import main as emkit_main
from emkit.errors import BboxError, InputError, LayerExistsError
from emkit.geometry import Bbox
from emkit.io import Layer
from emkit.runtime import Cluster, Markers, markers_url
from emkit.transfer import RUN_NAME, copy_array, default_task_size, transfer

SHAPE = (19, 70, 50)  # no axis is a multiple of the chunks below
OFFSET = (3, 17, 9)


@pytest.fixture(scope="module")
def cluster():
    with Cluster(n_workers=2, quiet=True) as c:
        yield c


def make_source(path, kind, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "image":
        data = rng.integers(0, 256, SHAPE, dtype=np.uint8)
    elif kind == "affinities":
        data = rng.random((3, *SHAPE), dtype=np.float32)
    else:  # segmentation: blocky ids with large values
        data = (rng.integers(1, 40, (SHAPE[0], SHAPE[1] // 5 + 1, SHAPE[2] // 5 + 1)).astype(np.uint64) + 2**40)
        data = data.repeat(5, 1).repeat(5, 2)[:, :SHAPE[1], :SHAPE[2]].copy()
        data[:, :7, :7] = 0
    layer = Layer.create(path, kind, SHAPE, voxel_offset=OFFSET, chunk_size=(8, 32, 32), resolution=(40, 8, 8))
    layer.write(data, OFFSET)
    return layer, data


@pytest.mark.parametrize("kind, encoding", [("image", None), ("affinities", "fpzip"),
                                            ("segmentation", "compresso")])
def test_chunked_transfer_equals_source_and_array_copy(tmp_path, cluster, kind, encoding):
    src, data = make_source(tmp_path / "src", kind)
    rep = transfer(src.url, tmp_path / "chunked", chunk_size=(4, 16, 16), task_size=(8, 16, 32), encoding=encoding,
                   client=cluster, progress=False)
    dest = Layer.open(tmp_path / "chunked")
    # rechunked, re-encoded, same geometry and meaning
    assert dest.chunk_size == (4, 16, 16) and dest.encoding == (encoding or src.encoding)
    assert (dest.kind.name, dest.size, dest.voxel_offset, dest.resolution, dest.channel_names, dest.dtype) == \
           (kind, SHAPE, OFFSET, (40.0, 8.0, 8.0), src.channel_names, src.dtype)
    assert rep.chunks == 3 * 5 * 2 and rep.executed == rep.chunks and rep.voxels == int(np.prod(SHAPE))
    assert rep.mvx_per_s > 0 and not rep.resumed
    got = dest.read()
    np.testing.assert_array_equal(got, data)  # > 10 storage chunks written and read back
    # the in-memory path gives the same layer content
    arr = copy_array(src.url, tmp_path / "array", chunk_size=(4, 16, 16), encoding=encoding)
    np.testing.assert_array_equal(arr.read(), got)
    assert arr.describe() | {"url": ""} == dest.describe() | {"url": ""}
    # plain CloudVolume opens the result unchanged
    from cloudvolume import CloudVolume

    cv = CloudVolume(dest.url, parallel=1, progress=False)
    block = np.asarray(cv[OFFSET[2]:OFFSET[2] + 7, OFFSET[1]:OFFSET[1] + 9, OFFSET[0]:OFFSET[0] + 5])
    want = data[..., :5, :9, :7] if data.ndim == 4 else data[None, :5, :9, :7]
    np.testing.assert_array_equal(block.transpose(3, 2, 1, 0), want)


def test_serial_transfer_with_bbox_keeps_coordinates(tmp_path):
    src, data = make_source(tmp_path / "src", "image")
    box = Bbox((7, 33, 9), (22, 87, 41))
    rep = transfer(src.url, tmp_path / "crop", bbox="7:22,33:87,9:41", chunk_size=(4, 16, 16), workers=0,
                   progress=False)
    crop = Layer.open(tmp_path / "crop")
    assert crop.bbox == box and rep.bbox == str(box) and rep.dashboard_link == ""
    np.testing.assert_array_equal(crop.read(), data[box.slices(OFFSET)])
    arr = copy_array(src.url, tmp_path / "crop_array", bbox=box, chunk_size=(4, 16, 16))
    np.testing.assert_array_equal(arr.read(), crop.read())


def test_existing_destination_is_refused_resumed_or_overwritten(tmp_path):
    src, data = make_source(tmp_path / "src", "image")
    other = Layer.create(tmp_path / "other", "image", (4, 8, 8))
    before = {p: p.read_bytes() for p in Path(tmp_path / "other").rglob("*") if p.is_file()}
    with pytest.raises(LayerExistsError, match="overwrite"):
        transfer(src.url, other.url, workers=0, progress=False)
    with pytest.raises(LayerExistsError, match="overwrite"):
        copy_array(src.url, other.url)
    assert {p: p.read_bytes() for p in Path(tmp_path / "other").rglob("*") if p.is_file()} == before

    dest = tmp_path / "dest"
    transfer(src.url, dest, chunk_size=(4, 16, 16), workers=0, progress=False)
    again = transfer(src.url, dest, chunk_size=(4, 16, 16), workers=0, progress=False)  # same run: nothing to do
    assert again.resumed and again.executed == 0 and again.skipped == again.chunks
    assert "already complete" in again.summary()
    with pytest.raises(LayerExistsError, match="other parameters.*chunk_size_zyx"):
        transfer(src.url, dest, chunk_size=(8, 16, 16), workers=0, progress=False)
    rep = transfer(src.url, dest, chunk_size=(8, 16, 16), overwrite=True, workers=0, progress=False)
    assert not rep.resumed and rep.executed == rep.chunks
    assert Layer.open(dest).chunk_size == (8, 16, 16)
    np.testing.assert_array_equal(Layer.open(dest).read(), data)
    assert Markers(markers_url(dest, RUN_NAME)).count() == rep.chunks  # old markers were dropped


def test_bad_inputs(tmp_path):
    src, _ = make_source(tmp_path / "src", "image")
    with pytest.raises(InputError, match=r"multiple of .*\(4, 16, 16\)"):
        transfer(src.url, tmp_path / "d", chunk_size=(4, 16, 16), task_size=(6, 16, 16), workers=0)
    with pytest.raises(InputError, match="no Precomputed layer"):
        transfer(tmp_path / "missing", tmp_path / "d", workers=0)
    with pytest.raises(BboxError, match="outside"):
        transfer(src.url, tmp_path / "d", bbox="0:5,17:30,9:20", workers=0)
    with pytest.raises(InputError, match="bbox must look like"):
        transfer(src.url, tmp_path / "d", bbox="0:5,17:30", workers=0)
    seg, _ = make_source(tmp_path / "seg", "segmentation")
    with pytest.raises(InputError, match="encoding 'jpeg' does not fit kind 'segmentation'"):
        transfer(seg.url, tmp_path / "d", encoding="jpeg", workers=0)
    with pytest.raises(InputError, match="is the source"):
        transfer(src.url, src.url, workers=0)
    assert not (tmp_path / "d").exists()  # nothing was created by refused calls


def test_default_task_size_is_whole_chunks():
    ts = default_task_size((16, 128, 128), (64, 512, 512), 1)
    assert all(t % c == 0 for t, c in zip(ts, (16, 128, 128)))
    assert np.prod(ts) <= 4 * 2**20 and np.prod(ts) >= 2**20
    assert np.prod([s // t for s, t in zip((64, 512, 512), ts)]) >= 8  # enough tasks to share
    assert default_task_size((4, 16, 16), (4, 16, 16), 8) == (4, 16, 16)
    assert default_task_size((16, 128, 128), (64, 512, 512), 8) == (16, 128, 256)  # 4 MiB of uint64


def test_imports_stay_light():
    code = ("import sys, emkit, emkit.runtime, emkit.transfer, emkit.cli.transfer; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'cloudvolume')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_transfer_prints_summary_and_errors(tmp_path, capsys):
    src, data = make_source(tmp_path / "src", "segmentation")
    rc = emkit_main(["transfer", str(tmp_path / "src"), str(tmp_path / "d"), "--chunk", "4,32,32",
                     "--encoding", "raw", "--workers", "0", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "MVx/s" in out and f"{int(np.prod(SHAPE)):,} voxels" in out
    d = Layer.open(tmp_path / "d")
    assert d.encoding == "raw" and d.chunk_size == (4, 32, 32)
    np.testing.assert_array_equal(d.read(), data)
    rc = emkit_main(["transfer", str(tmp_path / "src"), str(tmp_path / "d"), "--chunk", "8,32,32", "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("emkit transfer: error:") and "overwrite" in err and len(err.splitlines()) == 1
    rc = emkit_main(["transfer", str(tmp_path / "src"), str(tmp_path / "e"), "--chunk", "4,32"])
    assert rc == 2 and "chunk" in capsys.readouterr().err


def test_killed_transfer_command_resumes_only_missing_chunks(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (64, 128, 64), dtype=np.uint8)
    src = Layer.create(tmp_path / "src", "image", data.shape, chunk_size=(16, 64, 64), voxel_offset=(1, 2, 3))
    src.write(data, (1, 2, 3))
    dest = tmp_path / "dest"
    args = [str(tmp_path / "src"), str(dest), "--chunk", "4,16,16", "--task", "4,16,16"]
    markers = Markers(markers_url(dest, RUN_NAME))
    proc = subprocess.Popen([sys.executable, "-m", "emkit.cli.main", "transfer", *args, "--workers", "1", "--quiet"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (dest / ".emkit").exists() and markers.count() >= 5:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its dask scheduler and worker
        proc.wait()
    done = markers.done()
    total = 16 * 8 * 4
    assert 5 <= len(done) < total, f"{len(done)} chunks were done when the command was killed"
    mdir = dest / ".emkit" / RUN_NAME / "done"
    mtimes = {n: (mdir / n).stat().st_mtime_ns for n in done}

    rep = transfer(src.url, dest, chunk_size=(4, 16, 16), task_size=(4, 16, 16), workers=0, progress=False)
    assert rep.resumed and (rep.skipped, rep.executed) == (len(done), total - len(done))
    assert {n: (mdir / n).stat().st_mtime_ns for n in done} == mtimes  # finished chunks were not redone
    assert len(markers.done()) == total
    np.testing.assert_array_equal(Layer.open(dest).read(), data)
