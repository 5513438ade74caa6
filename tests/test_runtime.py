"""emkit.runtime: chunk plans, done-markers, serial and distributed chunk maps.

Uses a real dask LocalCluster (2 worker processes on 127.0.0.1) and real Precomputed layers on
file:// under tmp_path. A worker is killed on purpose (os._exit inside a task) and a whole run is
killed (SIGKILL of a subprocess and its workers) to check that runs complete and resume.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from emkit.errors import BboxError, InputError, TaskFailedError
from emkit.geometry import Bbox
from emkit.io import Layer
from emkit.runtime import (Cluster, Markers, check_aligned, chunk_name, count_chunks, map_chunks, markers_url,
                           plan_chunks)

OFFSET = (2, 5, 3)
SHAPE = (13, 40, 36)  # not a multiple of the chunk (4, 16, 16) on any axis
CHUNK = (4, 16, 16)


# ---- tasks (module level: workers import this module by name) ------------------------------------
@dataclass(frozen=True)
class MaxFilterTask:
    """3x3x3 maximum filter of src into dest; needs a halo of 1. Edges replicate (mode='nearest').

    ``log_dir``: every execution leaves a file ``<chunk>.<random>`` there.
    ``die_in``: the chunk (name) whose first attempt kills its worker process (``os._exit``).
    ``fail_in``: the chunk (name) that always raises ValueError.
    """

    src: str
    dest: str
    log_dir: str = ""
    die_in: str = ""
    fail_in: str = ""
    sleep: float = 0.0

    def __call__(self, chunk: Bbox, read_bbox: Bbox) -> None:
        name = chunk_name(chunk)
        if self.log_dir:
            Path(self.log_dir, f"{name}.{uuid.uuid4().hex}").touch()
        if name == self.fail_in:
            raise ValueError(f"bad voxels in {name}")
        if name == self.die_in:
            flag = Path(self.log_dir, "died")
            if not flag.exists():
                flag.touch()
                os._exit(1)  # the worker process dies mid-task
        time.sleep(self.sleep)
        src, dest = Layer.open(self.src), Layer.open(self.dest)
        data = src.read(read_bbox)
        want = chunk.grow(1)
        pad = [(a - w, v - b) for a, b, w, v in zip(read_bbox.start, read_bbox.stop, want.start, want.stop)]
        data = np.pad(data, pad, mode="edge")
        out = ndimage.maximum_filter(data, size=3, mode="nearest")[1:-1, 1:-1, 1:-1]
        dest.write(out, chunk.start)


def executions(log_dir) -> list[str]:
    return sorted(p.name.split(".")[0] for p in Path(log_dir).iterdir() if "." in p.name)


# ---- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    with Cluster(n_workers=2, quiet=True) as c:
        yield c


@pytest.fixture
def src(tmp_path):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 250, SHAPE, dtype=np.uint8)
    layer = Layer.create(tmp_path / "src", "image", SHAPE, voxel_offset=OFFSET, chunk_size=CHUNK)
    layer.write(data, OFFSET)
    return layer, data


def new_dest(tmp_path, name="dest"):
    return Layer.create(tmp_path / name, "image", SHAPE, voxel_offset=OFFSET, chunk_size=CHUNK)


def expected(data):
    return ndimage.maximum_filter(data, size=3, mode="nearest")


# ---- planning -----------------------------------------------------------------------------------------
def test_plan_covers_bounds_once_and_clips_halo():
    bounds = Bbox.from_shape(SHAPE, OFFSET)
    specs = list(plan_chunks(bounds, CHUNK, halo=(1, 2, 3)))
    assert len(specs) == count_chunks(bounds, CHUNK) == 4 * 3 * 3
    cover = np.zeros(SHAPE, int)
    for s in specs:
        cover[s.chunk.slices(OFFSET)] += 1
        assert bounds.contains(s.read_bbox) and s.read_bbox.contains(s.chunk)
        assert s.read_bbox == s.chunk.grow((1, 2, 3)).intersect(bounds)
    assert (cover == 1).all()
    assert specs[0].read_bbox.start == OFFSET  # clipped at the low edge
    inner = specs[1 * 9 + 1 * 3 + 1]
    assert inner.read_bbox.shape == tuple(c + 2 * h for c, h in zip(CHUNK, (1, 2, 3)))
    assert [s.index for s in specs] == list(range(len(specs)))


def test_plan_grid_origin_and_bad_halo():
    bounds = Bbox((4, 0, 0), (12, 16, 16))
    specs = list(plan_chunks(bounds, (8, 16, 16), origin=(0, 0, 0)))
    assert [s.chunk for s in specs] == [Bbox((4, 0, 0), (8, 16, 16)), Bbox((8, 0, 0), (12, 16, 16))]
    assert count_chunks(bounds, (8, 16, 16), origin=(0, 0, 0)) == 2
    with pytest.raises(InputError, match="halo"):
        list(plan_chunks(bounds, 4, halo=-1))


def test_check_aligned():
    layer_box = Bbox.from_shape(SHAPE, OFFSET)
    check_aligned(layer_box, (8, 32, 16), CHUNK, layer_box)
    with pytest.raises(InputError, match=r"multiple of .*\(4, 16, 16\)"):
        check_aligned(layer_box, (6, 16, 16), CHUNK, layer_box)
    with pytest.raises(InputError, match="not aligned"):
        check_aligned(Bbox((3, 5, 3), (15, 45, 39)), CHUNK, CHUNK, layer_box)
    check_aligned(Bbox((6, 5, 3), (15, 45, 39)), CHUNK, CHUNK, layer_box)  # stops at the layer edge
    with pytest.raises(BboxError, match="outside"):
        check_aligned(Bbox((0, 5, 3), (15, 45, 39)), CHUNK, CHUNK, layer_box)


# ---- markers -------------------------------------------------------------------------------------------
def test_markers_roundtrip_bind_and_reset(tmp_path):
    m = Markers(markers_url(tmp_path / "out", "stage"))
    assert m.url.endswith("/out/.emkit/stage")
    assert m.bind({"a": 1, "t": (1, 2)}) is False
    assert m.bind({"a": 1, "t": [1, 2]}) is True  # same parameters: resume
    with pytest.raises(InputError, match="differs in: a"):
        m.bind({"a": 2, "t": [1, 2]})
    b = Bbox((0, 0, 0), (4, 16, 16))
    assert not m.is_done(b)
    m.mark_done(b, seconds=0.1)
    assert m.is_done(b) and m.done() == {"0-4_0-16_0-16"} and m.count() == 1
    assert m.reset() == 2 and m.params() is None and m.count() == 0
    with pytest.raises(InputError, match="run name"):
        markers_url(tmp_path, "a/b")


# ---- serial path ------------------------------------------------------------------------------------
def test_serial_map_with_halo_matches_whole_array(tmp_path, src):
    layer, data = src
    dest = new_dest(tmp_path)
    rep = map_chunks(MaxFilterTask(layer.url, dest.url), layer.bbox, CHUNK, halo=1, workers=0, progress=False)
    assert (rep.total, rep.executed, rep.skipped, rep.dashboard_link) == (36, 36, 0, "")
    np.testing.assert_array_equal(dest.read(), expected(data))


def test_serial_failure_then_resume_recomputes_only_missing(tmp_path, src):
    layer, data = src
    dest = new_dest(tmp_path)
    logs = tmp_path / "log"
    logs.mkdir()
    markers = Markers(markers_url(dest.url, "maxfilter"))
    specs = list(plan_chunks(layer.bbox, CHUNK, halo=1))
    bad = specs[20].name
    with pytest.raises(TaskFailedError) as err:
        map_chunks(MaxFilterTask(layer.url, dest.url, str(logs), fail_in=bad), layer.bbox, CHUNK, halo=1,
                   markers=markers, workers=0, retries=2, progress=False)
    assert str(specs[20].chunk) in str(err.value) and "ValueError: bad voxels" in str(err.value)
    assert err.value.bbox == specs[20].chunk and isinstance(err.value.original, ValueError)
    assert executions(logs).count(bad) == 3  # 1 attempt + 2 retries
    done = markers.done()
    assert bad not in done and done == {s.name for s in specs[:20]}

    for p in logs.iterdir():
        p.unlink()
    rep = map_chunks(MaxFilterTask(layer.url, dest.url, str(logs)), layer.bbox, CHUNK, halo=1,
                     markers=markers, workers=0, progress=False)
    assert (rep.skipped, rep.executed) == (20, 16)
    assert executions(logs) == sorted(s.name for s in specs[20:])
    np.testing.assert_array_equal(dest.read(), expected(data))
    # reset=True recomputes everything
    rep = map_chunks(MaxFilterTask(layer.url, dest.url), layer.bbox, CHUNK, halo=1, markers=markers,
                     reset=True, workers=0, progress=False)
    assert (rep.skipped, rep.executed) == (0, 36)


def test_map_rejects_bad_arguments(src):
    layer, _ = src
    task = MaxFilterTask(layer.url, layer.url)
    with pytest.raises(InputError, match="retries"):
        map_chunks(task, layer.bbox, CHUNK, workers=0, retries=-1)
    with pytest.raises(InputError, match="at most one"):
        map_chunks(task, layer.bbox, CHUNK, workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(InputError, match="Bbox"):
        map_chunks(task, (0, 0, 0), CHUNK, workers=0)


# ---- distributed path ------------------------------------------------------------------------------
def test_cluster_is_local_and_attachable(cluster):
    assert cluster.n_workers == 2 and cluster.nthreads == 2
    assert cluster.dashboard_link.startswith("http://127.0.0.1:")
    addr = cluster.client.scheduler.address
    assert addr.startswith("tcp://127.0.0.1:")
    with Cluster(scheduler=addr, quiet=True) as attached:
        assert attached.n_workers == 2
    assert cluster.client.submit(sum, [1, 2]).result() == 3  # closing the attached client left the scheduler up
    with pytest.raises(InputError, match="not both"):
        Cluster(n_workers=1, scheduler=addr)


def test_distributed_map_many_chunks(tmp_path, src, cluster):
    layer, data = src
    dest = new_dest(tmp_path)
    markers = Markers(markers_url(dest.url, "maxfilter"))
    rep = map_chunks(MaxFilterTask(layer.url, dest.url), layer.bbox, CHUNK, halo=1, markers=markers,
                     client=cluster, max_in_flight=3, progress=False)
    assert (rep.total, rep.executed) == (36, 36) and markers.count() == 36
    assert rep.dashboard_link == cluster.dashboard_link
    np.testing.assert_array_equal(dest.read(), expected(data))


def test_killed_worker_run_completes_identical(tmp_path, src, cluster):
    layer, data = src
    ref = new_dest(tmp_path, "ref")
    map_chunks(MaxFilterTask(layer.url, ref.url), layer.bbox, CHUNK, halo=1, workers=0, progress=False)

    dest = new_dest(tmp_path)
    logs = tmp_path / "log"
    logs.mkdir()
    specs = list(plan_chunks(layer.bbox, CHUNK))
    victim = specs[17].name
    pids_before = set(cluster.client.run(os.getpid).values())
    markers = Markers(markers_url(dest.url, "maxfilter"))
    rep = map_chunks(MaxFilterTask(layer.url, dest.url, str(logs), die_in=victim, sleep=0.02), layer.bbox, CHUNK,
                     halo=1, markers=markers, client=cluster, progress=False)
    assert (logs / "died").exists()  # a worker really died
    assert executions(logs).count(victim) == 2  # killed attempt + the rescheduled one
    assert rep.executed == 36 and markers.count() == 36
    np.testing.assert_array_equal(dest.read(), ref.read())
    # the nanny replaced the dead worker process
    cluster.client.wait_for_workers(2, timeout=60)
    assert set(cluster.client.run(os.getpid).values()) != pids_before


def test_distributed_failure_names_bbox_and_leaves_no_marker(tmp_path, src, cluster):
    layer, _ = src
    dest = new_dest(tmp_path)
    logs = tmp_path / "log"
    logs.mkdir()
    bad = list(plan_chunks(layer.bbox, CHUNK))[5]
    markers = Markers(markers_url(dest.url, "maxfilter"))
    with pytest.raises(TaskFailedError, match=rf"chunk {bad.chunk}.*ValueError: bad voxels in {bad.name}"):
        map_chunks(MaxFilterTask(layer.url, dest.url, str(logs), fail_in=bad.name), layer.bbox, CHUNK, halo=1,
                   markers=markers, client=cluster, retries=1, progress=False)
    assert executions(logs).count(bad.name) == 2
    assert not markers.is_done(bad.chunk)


_KILLED_RUN = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_runtime import MaxFilterTask
    from emkit.io import Layer
    from emkit.runtime import map_chunks
    if __name__ == "__main__":
        layer = Layer.open({src!r})
        map_chunks(MaxFilterTask({src!r}, {dest!r}, {logs!r}, sleep=0.15), layer.bbox, (4, 16, 16), halo=1,
                   markers={markers!r}, workers=1, progress=False)
""")


def test_killed_run_resumes_only_missing_chunks(tmp_path, src):
    layer, data = src
    dest = new_dest(tmp_path)
    logs = tmp_path / "log"
    logs.mkdir()
    markers = Markers(markers_url(dest.url, "maxfilter"))
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN.format(tests=str(Path(__file__).parent), src=layer.url, dest=dest.url,
                                         logs=str(logs), markers=markers.url))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while markers.count() < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, the scheduler and the worker, at once
        proc.wait()
    done = markers.done()
    assert 4 <= len(done) < 36, f"{len(done)} chunks done when the run was killed"
    mtimes = {n: os.stat(Path(markers.url[len("file://"):], "done", n)).st_mtime_ns for n in done}
    for p in logs.iterdir():
        p.unlink()

    rep = map_chunks(MaxFilterTask(layer.url, dest.url, str(logs)), layer.bbox, CHUNK, halo=1, markers=markers,
                     workers=0, progress=False)
    all_names = {s.name for s in plan_chunks(layer.bbox, CHUNK)}
    assert sorted(executions(logs)) == sorted(all_names - done)  # exactly the missing chunks ran, once each
    assert (rep.skipped, rep.executed) == (len(done), 36 - len(done))
    assert {n: os.stat(Path(markers.url[len("file://"):], "done", n)).st_mtime_ns for n in done} == mtimes
    np.testing.assert_array_equal(dest.read(), expected(data))


_PAUSED_WRITE = """
from emkit.runtime import Markers
Markers({url!r}).bind({{"run": 2}})
"""


def test_atomic_writes_never_leave_a_partial_file(tmp_path):
    """run.json (and every marker) goes to a temporary name and is renamed when complete: a process
    killed just before the rename leaves no run.json, so the next run binds afresh instead of failing
    on a truncated file; stray temporaries are not counted as done chunks and can be cleared."""
    from emkit.runtime import put_atomic, remove_stale_temporaries

    put_atomic(str(tmp_path), "a/b.bin", b"x" * 1000)
    assert (tmp_path / "a" / "b.bin").read_bytes() == b"x" * 1000
    assert os.listdir(tmp_path / "a") == ["b.bin"]
    url = str(tmp_path / "markers")
    env = {**os.environ, "EMKIT_TEST_ATOMIC_PAUSE": str(tmp_path / "markers" / "run.json"),
           "EMKIT_TEST_ATOMIC_PAUSE_S": "120"}
    proc = subprocess.Popen([sys.executable, "-c", _PAUSED_WRITE.format(url=url)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (os.path.isdir(tmp_path / "markers") and os.listdir(tmp_path / "markers")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    left = os.listdir(tmp_path / "markers")
    assert len(left) == 1 and left[0].startswith(".run.json.") and left[0].endswith(".tmp")
    m = Markers(url)
    assert m.params() is None          # no run.json, not a truncated one
    assert m.bind({"run": 1}) is False  # a fresh run binds
    (tmp_path / "markers" / "done").mkdir()
    (tmp_path / "markers" / "done" / ".0-4_0-4_0-4.abc.tmp").write_bytes(b"{")
    m.mark_done(Bbox((0, 0, 0), (4, 4, 8)))
    assert m.done() == {"0-4_0-4_0-8"}
    assert remove_stale_temporaries(url, "run.json") == 1
    assert remove_stale_temporaries(url, "done/0-4_0-4_0-4") == 1
    assert sorted(os.listdir(tmp_path / "markers")) == ["done", "run.json"]
