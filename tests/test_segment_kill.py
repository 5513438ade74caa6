"""A real `emkit segment --workers 0` process killed (SIGKILL) mid-run and during the merge-history
write resumes when started again, and its result equals an uninterrupted run; no partial
history.npz is ever visible (temporary name + rename)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from emkit.io import Layer
from emkit.segment import load_history, segment
from helpers_cells import voronoi


def command(url, out, chunked=True):
    return [sys.executable, "-m", "emkit.cli.main", "segment", url, str(out), "--workers", "0",
            *(["--chunk", "4,16,16"] if chunked else []), "--threshold", "0.4", "--quiet"]


def wait_for(pred, proc, timeout=120.0):
    t0 = time.monotonic()
    try:
        while not pred():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the kill: {proc.stderr.read()}"
            assert time.monotonic() - t0 < timeout, "timed out waiting for the run to reach the kill point"
            time.sleep(0.005)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        raise


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def finish(url, out, chunked=True):
    res = subprocess.run(command(url, out, chunked), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_killed_runs_resume_to_the_uninterrupted_result(tmp_path):
    from emkit.affinity import noisy_affinities

    gt = voronoi((8, 48, 48), 25, seed=2)
    aff = noisy_affinities(gt, 2)
    url = str(tmp_path / "aff")
    Layer.create(url, "affinities", gt.shape).write(aff)
    seg, sv, h = segment(aff, threshold=0.4)  # what an uninterrupted run gives (tested equal elsewhere)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    # 1. killed in the middle of the leaves stage
    out = tmp_path / "out"
    done = out / ".emkit" / "segment" / "markers" / "leaves" / "done"
    proc = subprocess.Popen(command(url, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: done.is_dir() and len(os.listdir(done)) >= 3, proc)
    kill(proc)
    assert not (out / "history.npz").exists()
    n_done = len([f for f in os.listdir(done) if not f.startswith(".")])
    assert n_done < 2 * 3 * 3

    # 2. resumed, then killed while history.npz is being written (the write pauses before its rename)
    proc = subprocess.Popen(command(url, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**env, "EMKIT_TEST_ATOMIC_PAUSE": str(out / "history.npz"),
                                 "EMKIT_TEST_ATOMIC_PAUSE_S": "120"})
    temporaries = (lambda: [f for f in os.listdir(out) if f.startswith(".history.npz.") and f.endswith(".tmp")])
    wait_for(lambda: bool(temporaries()), proc)
    kill(proc)
    assert not (out / "history.npz").exists()  # never visible half-written
    assert len(temporaries()) == 1 and (out / "params.json").exists()
    json.loads((out / "params.json").read_text())  # complete

    # 3. the same command again: resumes (nothing recomputed but the history and relabelling)
    rep = finish(url, out)
    assert rep["executed"]["leaves"] == 0 and rep["executed"]["level0"] == 0 and rep["executed"]["plateaus"] == 0
    assert temporaries() == []
    assert np.array_equal(Layer.open(rep["supervoxels"]).read(), sv)
    assert np.array_equal(Layer.open(rep["segmentation"]).read(), seg)
    h2 = load_history(out)
    for t in (0.9, 0.6, 0.4, 0.2):
        assert np.array_equal(h2.labels_at(t)[1], h.labels_at(t)[1])

    # 4. the whole-volume path (a small volume without --chunk) killed during its history write
    out = tmp_path / "whole"
    proc = subprocess.Popen(command(url, out, chunked=False), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**env, "EMKIT_TEST_ATOMIC_PAUSE": str(out / "history.npz"),
                                            "EMKIT_TEST_ATOMIC_PAUSE_S": "120"})
    wait_for(lambda: out.is_dir() and any(f.startswith(".history.npz.") for f in os.listdir(out)), proc)
    kill(proc)
    assert not (out / "history.npz").exists()
    rep = finish(url, out, chunked=False)
    assert rep["executed"] == {"whole_volume": 1}
    assert np.array_equal(Layer.open(rep["segmentation"]).read(), seg)
    assert not any(f.endswith(".tmp") for f in os.listdir(out))
    assert np.array_equal(load_history(out).labels_at(0.6)[1], h.labels_at(0.6)[1])
