"""The `cluster:` section of a pipeline configuration (issue 12 §3): validated with the bad field and
value named; the SLURM / PBS job scripts it would submit (dask-jobqueue, no batch system needed)
carry the configured cores, memory, walltime, queue and account; a `kind: local` configuration runs
on a real LocalCluster with the same outputs as in process; no secret of a layer URL or of the
environment reaches the run folder or the terminal."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
import yaml

from emkit.errors import InputError

BASE = {"input": {"layer": "file:///x/image"}, "output": "o"}

#: the README / phantom.yaml example of a SLURM section (walltime quoted, as it must be in YAML)
SLURM_YAML = """
cluster:
  kind: slurm
  jobs: 3
  cores: 8
  threads: 2
  memory: 24GiB
  walltime: "01:30:00"
  queue: short
  account: lab42
  job_extra_directives: ["--exclusive"]
  job_script_prologue: ["source /opt/emkit/bin/activate"]
  interface: lo
"""


def cfg_with(cluster: dict):
    from emkit.pipeline.config import config_from_dict

    return config_from_dict({**BASE, "cluster": cluster})


def error_of(cluster: dict) -> str:
    from emkit.pipeline.config import ConfigError

    with pytest.raises(ConfigError) as e:
        cfg_with(cluster)
    return str(e.value)


# -- validation ------------------------------------------------------------------------------

def test_cluster_section_refuses_bad_values_naming_the_field():
    msg = error_of({"kind": "slrum"})
    assert "cluster.kind" in msg and "'slrum'" in msg and "slurm" in msg
    msg = error_of({"kind": "slurm", "cores": 4})
    assert "needs cluster.memory" in msg
    msg = error_of({"kind": "slurm", "cores": 4, "memory": "lots"})
    assert "cluster.memory" in msg and "'lots'" in msg
    # YAML reads an unquoted 12:00:00 as 43200 (seconds): refused, saying to quote it
    unquoted = yaml.safe_load("walltime: 12:00:00")["walltime"]
    msg = error_of({"kind": "pbs", "cores": 4, "memory": "4GB", "walltime": unquoted})
    assert "cluster.walltime" in msg and "43200" in msg and "quoted" in msg
    msg = error_of({"kind": "slurm", "cores": 4, "memory": "4GB", "walltime": "2 hours"})
    assert "cluster.walltime" in msg and "'2 hours'" in msg
    msg = error_of({"kind": "slurm", "cores": 4, "memory": "4GB", "queue": "short; rm -rf ~"})
    assert "cluster.queue" in msg and "rm -rf" in msg
    msg = error_of({"kind": "slurm", "cores": 4, "memory": "4GB", "job_extra_directives": ["--a\n#SBATCH --b"]})
    assert "cluster.job_extra_directives" in msg and "one non-empty line" in msg
    msg = error_of({"kind": "pbs", "cores": 6, "threads": 4, "memory": "4GB"})
    assert "cluster.cores (6) must be a multiple of cluster.threads (4)" in msg
    msg = error_of({"kind": "local", "workers": 2, "queue": "short"})
    assert "cluster.queue (for kind slurm / pbs) does not apply to kind 'local'" in msg
    msg = error_of({"kind": "local", "workers": -1})
    assert "cluster.workers" in msg and "-1" in msg
    msg = error_of({"kind": "kubernetes", "workers": 2})
    assert "needs cluster.image" in msg
    msg = error_of({"kind": "kubernetes", "image": "x/emkit:1", "name": "Emkit_Cluster"})
    assert "cluster.name" in msg and "Emkit_Cluster" in msg
    msg = error_of({"scheduler": "not an address"})
    assert "cluster.scheduler" in msg and "'not an address'" in msg
    assert "not both" in error_of({"workers": 2, "scheduler": "tcp://127.0.0.1:8786"})


def test_cluster_section_defaults_overrides_and_round_trip():
    from emkit.pipeline.cluster import KIND_FIELDS, effective_cluster
    from emkit.pipeline.config import config_from_dict

    assert cfg_with({}).cluster.in_process and cfg_with({"workers": 0}).cluster.kind == "local"
    att = cfg_with({"scheduler": "tcp://10.0.0.5:8786"}).cluster
    assert att.kind == "scheduler" and att.scheduler == "tcp://10.0.0.5:8786"
    assert cfg_with({"workers": 0, "scheduler": "tcp://h:8786"}).cluster.kind == "scheduler"  # --set over {workers: 0}
    slurm = config_from_dict({**BASE, **yaml.safe_load(SLURM_YAML)})
    # --workers / --scheduler replace the section
    local3 = effective_cluster(slurm.cluster, workers=3)
    assert local3.model_dump(exclude_none=True) == {"kind": "local", "workers": 3, "threads": 1}
    local = cfg_with({"kind": "local", "workers": 2, "threads": 2, "memory": "2GiB"}).cluster
    assert effective_cluster(local, workers=4).model_dump() == {"kind": "local", "workers": 4, "threads": 2,
                                                                 "memory": "2GiB"}
    assert effective_cluster(local, scheduler="tcp://h:1").kind == "scheduler"
    assert effective_cluster(local) is local
    with pytest.raises(InputError, match="--workers.*-2"):
        effective_cluster(local, workers=-2)
    with pytest.raises(InputError, match="not both"):
        effective_cluster(local, workers=1, scheduler="tcp://h:1")
    # dumped with its kind's fields only (the run folder's pipeline.yaml), and read back the same
    for cfg in (slurm, cfg_with({}), cfg_with({"scheduler": "tcp://h:1"}),
                cfg_with({"kind": "kubernetes", "image": "ghcr.io/me/emkit:1", "workers": 3, "memory": "8GiB"})):
        data = cfg.model_dump(mode="json", exclude_none=True)
        assert set(data["cluster"]) <= {"kind", *KIND_FIELDS[cfg.cluster.kind]}
        assert config_from_dict(yaml.safe_load(yaml.safe_dump(data))) == cfg


def test_the_documented_examples_validate():
    """Each `cluster:` example of emkit.pipeline.cluster's docstring (the README's) is a valid section."""
    import textwrap

    import emkit.pipeline.cluster as mod

    block = textwrap.dedent(mod.__doc__.split("::\n", 1)[1].split("\n\n``emkit run", 1)[0])
    examples, current = [], []
    for line in block.splitlines():
        if line.startswith("cluster:") and current:
            examples.append("\n".join(current))
            current = []
        if line.strip():
            current.append(line)
    examples.append("\n".join(current))
    kinds = [cfg_with(yaml.safe_load(text)["cluster"]).cluster.kind for text in examples]
    assert kinds == ["local", "local", "scheduler", "slurm", "kubernetes"]


def test_every_cluster_field_is_documented():
    from emkit.pipeline.cluster import KIND_FIELDS, ClusterConfig

    for name, f in ClusterConfig.model_fields.items():
        assert f.description, f"ClusterConfig.{name} has no description"
    assert {f for fs in KIND_FIELDS.values() for f in fs} | {"kind"} == set(ClusterConfig.model_fields)


# -- dask-jobqueue: the job script it would submit ---------------------------------------------

@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_job_script_carries_the_configured_resources(kind):
    pytest.importorskip("dask_jobqueue")
    from emkit.pipeline.cluster import make_cluster
    from emkit.pipeline.config import config_from_dict

    data = yaml.safe_load(SLURM_YAML)
    data["cluster"]["kind"] = kind
    if kind == "pbs":
        data["cluster"]["job_extra_directives"] = ["-l place=excl"]
    cfg = config_from_dict({**BASE, **data})
    cluster = make_cluster(cfg, scale=False, quiet=True)   # the scheduler only: nothing is submitted
    try:
        script = cluster.job_script()
        address = cluster.client.scheduler.address
    finally:
        cluster.close()
    lines = script.splitlines()
    if kind == "slurm":
        want = ["#SBATCH -p short", "#SBATCH -A lab42", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=24G",
                "#SBATCH -t 01:30:00", "#SBATCH --exclusive"]
    else:
        want = ["#PBS -q short", "#PBS -A lab42", "#PBS -l select=1:ncpus=8:mem=24GB", "#PBS -l walltime=01:30:00",
                "#PBS -l place=excl"]
    assert [w for w in want if w not in lines] == [], script
    assert "source /opt/emkit/bin/activate" in lines
    worker = [ln for ln in lines if "dask_worker" in ln]
    assert len(worker) == 1, script
    # 8 cores / 2 threads = 4 worker processes of 2 threads, 24 GiB / 4 each, on the configured interface
    for part in (address, "--nworkers 4", "--nthreads 2", "--memory-limit 6.00GiB", "--interface lo"):
        assert part in worker[0], worker[0]
    assert address.startswith("tcp://127.0.0.1:")   # interface lo: the scheduler listened on loopback only


def test_jobqueue_without_its_submit_command_is_refused():
    pytest.importorskip("dask_jobqueue")
    from emkit.pipeline.cluster import make_cluster

    if shutil.which("sbatch"):
        pytest.skip("this machine has sbatch")
    cfg = cfg_with({"kind": "slurm", "cores": 2, "memory": "4GiB"})
    with pytest.raises(InputError, match="sbatch, which is not on this machine's PATH"):
        make_cluster(cfg, quiet=True)


def test_kubernetes_options_and_missing_package():
    from emkit.pipeline.cluster import kubernetes_options, make_cluster

    cfg = cfg_with({"kind": "kubernetes", "image": "ghcr.io/me/emkit:1", "workers": 3, "threads": 2,
                    "memory": "8GiB", "namespace": "lab"})
    kw = kubernetes_options(cfg.cluster)
    gib8 = str(8 * 2 ** 30)
    assert kw == {"name": "emkit", "image": "ghcr.io/me/emkit:1", "n_workers": 3, "namespace": "lab",
                  "resources": {"requests": {"cpu": "2", "memory": gib8}, "limits": {"cpu": "2", "memory": gib8}},
                  "worker_command": ["dask", "worker", "--nthreads", "2", "--memory-limit", gib8]}
    try:
        import dask_kubernetes  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match="pip install dask-kubernetes"):
            make_cluster(cfg, quiet=True)


# -- a real local cluster ----------------------------------------------------------------------

def test_local_kind_runs_a_pipeline_on_a_local_cluster(tmp_path):
    from emkit.pipeline.config import config_from_dict
    from emkit.pipeline.run import run_pipeline

    def run(name, cluster):
        cfg = config_from_dict({"input": {"phantom": {"shape": [8, 64, 64], "seed": 1, "defects": "none"}},
                                "output": str(tmp_path / name), "stages": {"pyramids": {"layers": ["image"]}},
                                "cluster": cluster})
        return run_pipeline(cfg, progress=False, echo=None)

    serial = run("serial", {})
    assert serial.dashboard_link == ""
    rep = run("local", {"kind": "local", "workers": 2, "threads": 1, "memory": "1GiB"})
    assert rep.dashboard_link.startswith("http://127.0.0.1:")   # a LocalCluster ran the stages (on loopback)
    assert rep.records["pyramids"]["status"] == "done" and rep.records["pyramids"]["summary"]["image"]["mips"] >= 1
    from cloudvolume import CloudVolume

    a, b = (np.asarray(CloudVolume(f"file://{tmp_path / n / 'image'}", mip=1)[:]) for n in ("serial", "local"))
    assert a.shape == (32, 32, 8, 1) and a.any() and np.array_equal(a, b)    # (x, y, z, c)


# -- credentials -------------------------------------------------------------------------------

def test_redact_masks_url_secrets_and_secret_environment_values(monkeypatch):
    from emkit.pipeline import redact as mod
    from emkit.pipeline.redact import redact, redact_text, redact_url, secrets_in

    monkeypatch.setattr(mod, "_KNOWN", set())   # what this test makes redact remember stays here

    assert redact_url("https://reader:pa55word@host:443/a/b?token=abc&x=1#k=v") == \
        "https://reader:***@host:443/a/b?token=***&x=***#k=***"
    assert redact_url("https://ghp_0123456789@host/x") == "https://***@host/x"
    assert redact_url("precomputed://https://u:pa55word@h/a") == "precomputed://https://u:***@h/a"
    for plain in ("gs://bucket/image", "s3://b/k", "file:///tmp/run/seg", "tcp://127.0.0.1:8786"):
        assert redact_url(plain) == plain and redact_text(f"at {plain}.") == f"at {plain}."
    assert secrets_in({"a": ["https://u:pa55word@h/x?sig=0123456789"]}) == {"pa55word", "0123456789"}
    env = {"AWS_SECRET_ACCESS_KEY": "aws-secret-0123", "GITHUB_TOKEN": "ghp-token-4567", "HOME": "/home/me-long",
           "SHORT_TOKEN": "1"}
    rec = {"command": "emkit run c --set input.layer=https://u:pa55word@h/i?token=tok-0123456",
           "error": "failed with url: /i?token=tok-0123456/info key aws-secret-0123, ghp-token-4567",
           "n": 3, "list": ("/home/me-long", None)}
    out = redact(rec, environ=env)
    text = repr(out)
    for secret in ("pa55word", "tok-0123456", "aws-secret-0123", "ghp-token-4567"):
        assert secret not in text
    assert out["n"] == 3 and out["list"] == ("/home/me-long", None)   # not secrets: kept
    assert "https://u:***@h/i?token=***" in out["command"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


def test_no_secret_reaches_the_run_folder_or_the_terminal(tmp_path, monkeypatch, capsys):
    """A run whose image layer (served over HTTP on loopback) has a `?token=` in its URL, and whose
    ground-truth layer, given on the command line, a `user:secret@`; secret-named environment variables
    set. The layer cannot be read that way (CloudVolume appends /info after the query): the stage
    fails, quoting the URL. No secret appears in any file of the run folder, in stdout or in stderr."""
    import emkit.cli.main as m
    from emkit.io import Layer

    secrets = ["tok-ABC123xyz", "s3cr3t-pass", "env-secret-XYZ789", "ghp-env-token-456"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secrets[2])
    monkeypatch.setenv("GITHUB_TOKEN", secrets[3])
    served = tmp_path / "served"
    Layer.create(str(served / "image"), "image", (8, 64, 64), chunk_size=(8, 64, 64)).write(
        np.zeros((8, 64, 64), np.uint8))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    cfg, run = tmp_path / "pipeline.yaml", tmp_path / "run"
    cfg.write_text(yaml.safe_dump({"input": {"layer": f"http://127.0.0.1:{port}/image?token={secrets[0]}"},
                                   "output": str(run), "stages": {"boundary": {}, "segment": {}, "evaluate": {}}}))
    gt = f"http://reader:{secrets[1]}@127.0.0.1:{port}/gt"
    saved = list(m.COMMANDS)
    m.COMMANDS[:] = saved + [c for c in ("run", "status") if c not in saved]
    try:
        rc = m.main(["run", str(cfg), "--quiet", "--set", f"stages.evaluate.ground_truth={gt}"])
        rc_status = m.main(["status", str(cfg), "--set", f"stages.evaluate.ground_truth={gt}"])
    finally:
        m.COMMANDS[:] = saved
        httpd.shutdown()
        httpd.server_close()
    out = capsys.readouterr()
    assert rc != 0 and rc_status == 0 and "emkit run: error:" in out.err, (rc, out.err)
    written = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert {p.relative_to(run).as_posix() for p in written} == {"pipeline.yaml", "provenance/boundary.json"}
    for s in secrets:
        assert s not in out.out and s not in out.err, s
        assert [str(p) for p, data in written.items() if s.encode() in data] == [], s
    rec = json.loads((run / "provenance" / "boundary.json").read_text())
    assert rec["status"] == "failed" and rec["config"]["input"]["layer"] == f"http://127.0.0.1:{port}/image?token=***"
    assert "ground_truth=http://reader:***@127.0.0.1" in rec["command"] and "***" in rec["error"]
    assert "reader:***@" in (run / "pipeline.yaml").read_text()
