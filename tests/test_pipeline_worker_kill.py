"""Fault tolerance of `emkit run` on a dask cluster (issue 12 §2): one of the two worker processes of a
real LocalCluster is killed (SIGKILL) while it writes a segment leaf; dask reschedules the lost task,
the run completes, and its outputs are byte-identical to an uninterrupted in-process run.

The leaf write pauses (``EMKIT_TEST_ATOMIC_PAUSE``, emkit.runtime.atomic) so the kill lands inside a
leaf task, on the worker that runs it (found from its own stack), not by timing."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path


#: the reference setup of test_pipeline.py's killed-run test (phantom, boundary net, chunked segmentation)
CONFIG = {"input": {"phantom": {"shape": [16, 128, 128], "seed": 3, "defects": "none"}},
          "stages": {"boundary": {}, "segment": {"chunk": [8, 64, 64]}}}
LEAF = "0-8_0-64_0-64"       # the first leaf chunk (z, y, x voxel ranges)


def _files(folder: Path) -> dict:
    """Every output file's bytes, except records of when and how it ran (dot-folders, JSON, provenance)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or rel.startswith("provenance/") or rel == "pipeline.yaml" or p.suffix == ".json":
            continue
        if rel.startswith(".") or "/." in rel:
            continue
        out[rel] = p.read_bytes()
    return out


def _pause_off_and_who_paused():
    """On a worker (client.run, in its event loop): stop pausing; report (pid, paused in a leaf write?)."""
    import sys

    os.environ.pop("EMKIT_TEST_ATOMIC_PAUSE", None)
    paused = any(f.f_code.co_name == "_test_pause" for f in sys._current_frames().values())
    return os.getpid(), paused


def test_a_worker_killed_mid_stage_is_rescheduled_to_identical_outputs(tmp_path, monkeypatch):
    import torch
    from distributed import Client, LocalCluster

    from emkit.pipeline.config import config_from_dict
    from emkit.pipeline.run import run_pipeline

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (the nanny sets OMP_NUM_THREADS=1): the net's sums agree bit for bit
    try:
        ref = tmp_path / "ref"
        run_pipeline(config_from_dict({**CONFIG, "output": str(ref)}), progress=False, echo=None)
    finally:
        torch.set_num_threads(threads)
    # the second run starts from the reference's phantom and affinities (done, same configuration: skipped),
    # so only the segment stage runs, on the cluster
    run = tmp_path / "run"
    shutil.copytree(ref, run, ignore=lambda d, names: ["seg"] if Path(d) == ref else [])
    (run / "provenance" / "segment.json").unlink()
    frag = run / "seg" / ".emkit" / "segment" / "data" / "frag"
    monkeypatch.setenv("EMKIT_TEST_ATOMIC_PAUSE", str(frag / f"{LEAF}.npz"))
    monkeypatch.setenv("EMKIT_TEST_ATOMIC_PAUSE_S", "120")

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    try:
        before = set(client.run(os.getpid).values())
        assert len(before) == 2
        result = {}

        def target():
            try:
                result["report"] = run_pipeline(config_from_dict({**CONFIG, "output": str(run)}),
                                                scheduler=cluster.scheduler_address, progress=False, echo=None)
            except BaseException as exc:  # reported below
                result["error"] = exc

        th = threading.Thread(target=target, daemon=True)
        th.start()
        t0 = time.monotonic()
        while not (frag.is_dir() and any(f.startswith(f".{LEAF}.npz.") for f in os.listdir(frag))):
            assert th.is_alive(), f"the run ended before the kill: {result}"
            assert time.monotonic() - t0 < 120, "timed out waiting for the leaf write"
            time.sleep(0.01)
        # the leaf's bytes are complete in its temporary file; the worker sleeps before the rename
        monkeypatch.delenv("EMKIT_TEST_ATOMIC_PAUSE")  # the worker the nanny restarts does not pause
        who = client.run(_pause_off_and_who_paused)
        paused = [pid for pid, p in who.values() if p]
        assert len(paused) == 1, who
        os.kill(paused[0], signal.SIGKILL)

        th.join(timeout=180)
        assert not th.is_alive(), "the run did not finish after the worker was killed"
        assert "error" not in result, result.get("error")
        rep = result["report"]
        assert rep.actions == {"phantom": "skip", "boundary": "skip", "segment": "run"}
        rec = rep.records["segment"]
        assert rec["status"] == "done" and "client" in rec["summary"]["runner"]   # on the cluster
        assert rec["summary"]["executed"]["leaves"] == 8        # every leaf written, the lost one again
        after = set(client.run(os.getpid).values())
        assert paused[0] not in after                            # the killed worker is gone (the nanny restarted one)
    finally:
        client.close()
        cluster.close()

    assert (frag / f"{LEAF}.npz").is_file()
    got, want = _files(run), _files(ref)
    assert any(k.startswith("seg/segmentation/") for k in want) and "seg/history.npz" in want
    assert set(got) == set(want)
    assert [k for k in want if got[k] != want[k]] == []
