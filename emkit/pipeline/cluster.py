"""The ``cluster:`` section of a pipeline configuration, and the dask cluster it builds.

Where the chunk tasks of ``emkit run`` run (paper: Methods, Distributed computation — the paper's
stages ran as chunk tasks on a cloud cluster; results do not depend on where). ``kind`` picks the
engine; the fields that apply to each kind (any other field is an error naming it)::

    cluster: {workers: 0}                        # kind local (default): 0 = serially in this process
    cluster: {kind: local, workers: 4, threads: 1, memory: 4GiB}    # a local cluster: 4 processes × 1 thread
    cluster: {scheduler: tcp://10.0.0.5:8786}    # kind scheduler: attach to a running scheduler

    cluster:                                     # kind slurm (or pbs): dask-jobqueue submits `jobs` batch jobs
      kind: slurm                                # each running cores/threads worker processes
      jobs: 10                                   # → 10 jobs × 8 workers = 80 single-threaded workers
      cores: 8                                   # cores per job (SLURM --cpus-per-task, PBS ncpus)
      memory: 32GiB                              # memory per job (SLURM --mem, PBS mem)
      threads: 1                                 # threads per worker process (default 1)
      walltime: "12:00:00"                       # quoted: YAML reads an unquoted 12:00:00 as 43200
      queue: normal                              # partition (SLURM -p) / queue (PBS -q)
      account: mylab                             # SLURM -A / PBS -A
      job_extra_directives: ["--exclusive"]      # more #SBATCH / #PBS lines, verbatim
      job_script_prologue: ["source ~/emkit/.venv/bin/activate"]   # shell lines before the worker starts
      interface: ib0                             # network interface of scheduler and workers (optional)

    cluster:                                     # kind kubernetes: dask-kubernetes' KubeCluster (operator)
      kind: kubernetes
      image: ghcr.io/me/emkit:0.4                # a worker image with this emkit installed (required)
      workers: 8                                 # worker pods
      threads: 2                                 # threads per worker (its CPU request and limit)
      memory: 8GiB                               # memory per worker (request and limit)
      namespace: emkit                           # default: the current context's namespace
      name: emkit                                # the DaskCluster resource's name

``emkit run --workers N`` replaces the section with a local cluster of N workers (threads and
memory kept when the section is local), ``--scheduler ADDR`` with kind scheduler.

For SLURM and PBS the scheduler runs inside the ``emkit run`` process (e.g. on a login node) and
the workers, started by the batch jobs, connect to it: the job runs ``sys.executable -m
distributed.cli.dask_worker``, so the compute nodes must see the same Python environment (the
usual shared home / project file system; ``job_script_prologue`` can activate it). Its dashboard
listens on the login node's loopback (``ssh -L`` to reach it). dask-jobqueue's own configuration
(``~/.config/dask/jobqueue.yaml``) supplies the options this section leaves out (walltime, queue, ...).

Credentials: layers on ``gs://`` and ``s3://`` use CloudVolume's own conventions — secrets files
in ``~/.cloudvolume/secrets/`` (``google-secret.json``, ``aws-secret.json``) or the provider's
standard environment variables / application-default credentials — on the machine of each worker.
Never put a secret in this configuration: it is written into the run folder (``pipeline.yaml``).
"""
from __future__ import annotations

import re
import shutil
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from ..errors import InputError
from ..runtime.cluster import ClientCluster

__all__ = ["ClusterConfig", "CLUSTER_KINDS", "KIND_FIELDS", "make_cluster", "effective_cluster",
           "jobqueue_options", "kubernetes_options", "JobCluster"]

#: the engines a ``cluster:`` section may name.
CLUSTER_KINDS = ("local", "scheduler", "slurm", "pbs", "kubernetes")
_JOBQUEUE = ("jobs", "cores", "threads", "memory", "walltime", "queue", "account", "job_extra_directives",
             "job_script_prologue", "interface", "local_directory", "log_directory")
#: the fields that apply to each kind (``kind`` itself applies to all).
KIND_FIELDS = {
    "local": ("workers", "threads", "memory"),
    "scheduler": ("scheduler",),
    "slurm": _JOBQUEUE,
    "pbs": _JOBQUEUE,
    "kubernetes": ("workers", "threads", "memory", "image", "namespace", "name"),
}
#: fields a kind cannot do without.
_REQUIRED = {"scheduler": ("scheduler",), "slurm": ("cores", "memory"), "pbs": ("cores", "memory"),
             "kubernetes": ("image",)}

_WALLTIME = re.compile(r"^(\d+-)?\d{1,4}(:\d{2}){1,2}$")          # [D-]HH:MM[:SS]
_TOKEN = re.compile(r"^[^\s#'\"\\;`$|&<>()]+$")                    # one shell / batch-directive word
_ADDRESS = re.compile(r"^((tcp|tls|ucx|ws|wss|inproc)://)?[^\s/:]+(:\d+)?$")
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ClusterConfig(BaseModel):
    """Where the chunk tasks run (paper: Methods, Distributed computation); results do not depend on it.

    See the module docstring for one example per kind. Every field is optional except those a kind
    needs (``scheduler`` for kind scheduler, ``cores`` and ``memory`` for slurm/pbs, ``image``
    for kubernetes); fields that do not apply to the chosen kind are refused, naming them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["local", "scheduler", "slurm", "pbs", "kubernetes"] = Field(
        "local", description="the engine: 'local' (this machine; default), 'scheduler' (a running dask scheduler), "
                             "'slurm' / 'pbs' (batch jobs through dask-jobqueue), 'kubernetes' (dask-kubernetes); "
                             "default 'scheduler' when a scheduler address is given, else 'local'")
    workers: Optional[int] = Field(None, ge=0, description="local: worker processes, 0 = serially in this process "
                                                           "(default 0); kubernetes: worker pods (default 1)")
    threads: int = Field(1, ge=1, description="threads per worker process (default 1: emkit's chunk tasks are "
                                              "CPU-bound numpy/numba/torch, one per core); slurm/pbs: each job "
                                              "runs cores/threads worker processes")
    memory: Optional[str] = Field(None, description="memory, e.g. '4GiB': local and kubernetes per worker "
                                                    "(default: the machine's memory shared by the workers / no "
                                                    "limit), slurm/pbs per job (required)")
    scheduler: Optional[str] = Field(None, description="kind scheduler: address of a running dask scheduler "
                                                       "(tcp://host:8786)")
    jobs: int = Field(1, ge=1, description="slurm/pbs: batch jobs submitted, each running cores/threads workers "
                                           "(default 1)")
    cores: Optional[int] = Field(None, ge=1, description="slurm/pbs: cores per job (SLURM --cpus-per-task, PBS "
                                                         "ncpus; required)")
    walltime: Optional[str] = Field(None, description="slurm/pbs: time limit of a job, '[D-]HH:MM[:SS]' in quotes "
                                                      "(default: dask-jobqueue's configuration, 00:30:00)")
    queue: Optional[str] = Field(None, description="slurm/pbs: partition (SLURM -p) or queue (PBS -q) "
                                                   "(default: the site's)")
    account: Optional[str] = Field(None, description="slurm/pbs: account / project charged (-A) (default: the user's)")
    job_extra_directives: list[str] = Field(default_factory=list, description="slurm/pbs: extra #SBATCH / #PBS "
                                                                              "directives, e.g. ['--exclusive'] "
                                                                              "(default none)")
    job_script_prologue: list[str] = Field(default_factory=list, description="slurm/pbs: shell lines run before "
                                                                             "the worker starts, e.g. activating "
                                                                             "the environment (default none); "
                                                                             "never a secret")
    interface: Optional[str] = Field(None, description="slurm/pbs: network interface the scheduler and workers "
                                                       "use, e.g. 'ib0' (default: dask's choice)")
    local_directory: Optional[str] = Field(None, description="slurm/pbs: workers' scratch folder on the compute "
                                                             "node (default: dask's)")
    log_directory: Optional[str] = Field(None, description="slurm/pbs: folder of the jobs' stdout/stderr files "
                                                           "(default: the submit folder)")
    image: Optional[str] = Field(None, description="kubernetes: container image of scheduler and workers, with "
                                                   "this emkit installed (required)")
    namespace: Optional[str] = Field(None, description="kubernetes: namespace (default: the current context's)")
    name: str = Field("emkit", description="kubernetes: name of the DaskCluster resource (default 'emkit')")

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data):
        if isinstance(data, dict) and data.get("kind") is None:
            data = {**data, "kind": "scheduler" if data.get("scheduler") else "local"}
            if data["kind"] == "scheduler" and data.get("workers") == 0:   # {workers: 0} + --set cluster.scheduler=
                data.pop("workers")
            if data["kind"] == "scheduler" and data.get("workers"):
                raise ValueError("give either cluster.workers (a local cluster) or cluster.scheduler (attach to a "
                                 "running one), not both")
        return data

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v):
        if v is None:
            return v
        from dask.utils import parse_bytes

        try:
            n = parse_bytes(v) if isinstance(v, str) else int(v)
        except (ValueError, TypeError):
            raise ValueError("memory must be a size such as '4GiB', '4GB' or '4000MB'") from None
        if isinstance(v, bool) or n <= 0:
            raise ValueError("memory must be a positive size such as '4GiB'")
        return str(v).replace(" ", "")

    @field_validator("walltime", mode="before")
    @classmethod
    def _walltime(cls, v):
        if v is None:
            return v
        if not isinstance(v, str):
            raise ValueError("walltime must be a quoted string '[D-]HH:MM[:SS]' such as \"02:00:00\" (YAML reads "
                             "an unquoted 12:00:00 as the number of seconds)")
        if not _WALLTIME.match(v.strip()):
            raise ValueError("walltime must be '[D-]HH:MM[:SS]', e.g. '02:00:00' or '1-12:00:00'")
        return v.strip()

    @field_validator("queue", "account", "interface")
    @classmethod
    def _word(cls, v, info):
        if v is not None and not _TOKEN.match(v):
            raise ValueError(f"{info.field_name} must be one word without spaces, quotes or shell characters")
        return v

    @field_validator("job_extra_directives", "job_script_prologue")
    @classmethod
    def _lines(cls, v, info):
        for line in v:
            if "\n" in line or "\r" in line or not line.strip():
                raise ValueError(f"each {info.field_name} entry must be one non-empty line")
        return v

    @field_validator("scheduler")
    @classmethod
    def _address(cls, v):
        if v is not None and not _ADDRESS.match(v.strip()):
            raise ValueError("scheduler must be a dask scheduler address such as tcp://host:8786")
        return None if v is None else v.strip()

    @field_validator("name")
    @classmethod
    def _k8s_name(cls, v):
        if not _K8S_NAME.match(v):
            raise ValueError("name must be a Kubernetes resource name: lower-case letters, digits and '-'")
        return v

    @model_validator(mode="after")
    def _fits_kind(self):
        allowed = set(KIND_FIELDS[self.kind]) | {"kind"}
        stray = [f for f in type(self).model_fields if f in self.model_fields_set and f not in allowed]
        if stray:
            where = {f: [k for k, fs in KIND_FIELDS.items() if f in fs] for f in stray}
            parts = [f"cluster.{f} (for kind {' / '.join(ks)})" for f, ks in where.items()]
            raise ValueError(f"{', '.join(parts)} does not apply to kind {self.kind!r}; its fields: "
                             f"{', '.join(KIND_FIELDS[self.kind])}")
        missing = [f for f in _REQUIRED.get(self.kind, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"kind {self.kind!r} needs {', '.join('cluster.' + f for f in missing)}")
        if self.kind in ("slurm", "pbs") and self.cores % self.threads:
            raise ValueError(f"cluster.cores ({self.cores}) must be a multiple of cluster.threads ({self.threads}): "
                             "each job runs cores/threads worker processes")
        if self.kind == "kubernetes" and self.workers == 0:
            raise ValueError("cluster.workers must be >= 1 for kind 'kubernetes'")
        return self

    @model_serializer(mode="wrap")
    def _only_this_kind(self, handler):
        # dumped (e.g. into the run folder's pipeline.yaml) with the fields of its kind only, so it reloads
        data = handler(self)
        keep = set(KIND_FIELDS[self.kind]) | {"kind"}
        return {k: v for k, v in data.items() if k in keep}

    # -- what it builds ---------------------------------------------------------------------

    @property
    def in_process(self) -> bool:
        """True when the tasks run serially in this process (kind local, 0 workers)."""
        return self.kind == "local" and not self.workers

    def describe(self) -> str:
        """One line saying where the tasks run."""
        k = self.kind
        if k == "local":
            return "in this process" if self.in_process else f"local dask cluster, {self.workers} worker(s) × " \
                                                            f"{self.threads} thread(s)"
        if k == "scheduler":
            return f"dask scheduler {self.scheduler}"
        if k in ("slurm", "pbs"):
            return (f"{k.upper()} via dask-jobqueue: {self.jobs} job(s) × {self.cores // self.threads} worker(s) × "
                    f"{self.threads} thread(s)")
        return f"Kubernetes via dask-kubernetes: {self.workers or 1} worker pod(s) × {self.threads} thread(s)"


def effective_cluster(cluster: ClusterConfig, *, workers: int | None = None,
                      scheduler: str | None = None) -> ClusterConfig:
    """``cluster`` with the command line's ``--workers`` / ``--scheduler`` applied (they replace it).

    ``scheduler`` → kind scheduler; ``workers`` → kind local with that many workers (the section's
    threads and memory kept when it is local). Raises :class:`InputError` for both, or bad values.
    """
    from pydantic import ValidationError

    if workers is not None and scheduler is not None:
        raise InputError("give either --workers or --scheduler, not both")
    try:
        if scheduler is not None:
            return ClusterConfig(kind="scheduler", scheduler=scheduler)
        if workers is not None:
            keep = {"threads": cluster.threads, "memory": cluster.memory} if cluster.kind == "local" else {}
            return ClusterConfig(kind="local", workers=workers, **{k: v for k, v in keep.items() if v is not None})
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"{'--scheduler' if scheduler is not None else '--workers'}: "
                         f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})") from None
    return cluster


def jobqueue_options(cluster: ClusterConfig) -> dict:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` / ``PBSCluster`` for a slurm / pbs section.

    Each job has ``cores`` cores and ``memory``; it runs ``cores // threads`` worker processes
    (dask-jobqueue's ``processes``). Options the section leaves out are not passed, so
    dask-jobqueue's configuration supplies them.
    """
    if cluster.kind not in ("slurm", "pbs"):
        raise InputError(f"jobqueue_options: cluster kind is {cluster.kind!r}, not slurm or pbs")
    kw = {"cores": cluster.cores, "memory": cluster.memory, "processes": cluster.cores // cluster.threads,
          "scheduler_options": {"dashboard_address": "127.0.0.1:0"}}
    for f in ("walltime", "queue", "account", "interface", "local_directory", "log_directory"):
        if getattr(cluster, f) is not None:
            kw[f] = getattr(cluster, f)
    if cluster.job_extra_directives:
        kw["job_extra_directives"] = list(cluster.job_extra_directives)
    if cluster.job_script_prologue:
        kw["job_script_prologue"] = list(cluster.job_script_prologue)
    if cluster.interface is not None:
        kw["scheduler_options"]["interface"] = cluster.interface
    return kw


def kubernetes_options(cluster: ClusterConfig) -> dict:
    """Keyword arguments of ``dask_kubernetes.operator.KubeCluster`` for a kubernetes section.

    Workers get ``threads`` CPUs and ``memory`` as both request and limit, and run ``dask worker
    --nthreads threads`` (plus ``--memory-limit`` when memory is given).
    """
    if cluster.kind != "kubernetes":
        raise InputError(f"kubernetes_options: cluster kind is {cluster.kind!r}, not kubernetes")
    res = {"cpu": str(cluster.threads)}
    command = ["dask", "worker", "--nthreads", str(cluster.threads)]
    if cluster.memory is not None:
        from dask.utils import parse_bytes

        res["memory"] = str(parse_bytes(cluster.memory))
        command += ["--memory-limit", str(parse_bytes(cluster.memory))]
    kw = {"name": cluster.name, "image": cluster.image, "n_workers": cluster.workers or 1,
          "resources": {"requests": dict(res), "limits": dict(res)}, "worker_command": command}
    if cluster.namespace is not None:
        kw["namespace"] = cluster.namespace
    return kw


class JobCluster(ClientCluster):
    """A dask client on a cluster object this process started (dask-jobqueue or dask-kubernetes).

    Same surface as :class:`emkit.runtime.Cluster` (``client``, ``dashboard_link``, ``nthreads``,
    ``n_workers``, ``close``, context manager); ``cluster`` is the dask-jobqueue / dask-kubernetes
    object (``cluster.job_script()`` is the batch script a slurm/pbs cluster submits).
    """

    def __init__(self, cluster, kind: str):
        from distributed import Client

        self.cluster, self.kind = cluster, kind
        try:
            self.client = Client(cluster)
        except BaseException:
            cluster.close()
            raise

    def job_script(self) -> str:
        """The batch script submitted per job (slurm / pbs)."""
        return self.cluster.job_script()

    def _close_cluster(self) -> None:
        """The dask-jobqueue / dask-kubernetes cluster (cancelling its batch jobs / deleting its pods)."""
        self.cluster.close()

    def __repr__(self) -> str:
        return f"JobCluster({self.kind}, workers={self.n_workers}, dashboard={self.dashboard_link!r})"


def _need(module: str, extra: str, kind: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"cluster kind {kind!r} needs the {extra} package: pip install {extra}") from None


def make_cluster(cfg, *, workers: int | None = None, scheduler: str | None = None, scale: bool = True,
                 quiet: bool = False):
    """Build the cluster a configuration's ``cluster:`` section describes; None to run in this process.

    Parameters
    ----------
    cfg : a :class:`~emkit.pipeline.config.PipelineConfig` (its ``cluster``) or a :class:`ClusterConfig`.
    workers, scheduler : the command line's ``--workers`` / ``--scheduler`` (:func:`effective_cluster`).
    scale : slurm/pbs/kubernetes: submit the jobs / start the worker pods (False: build the
        scheduler only, e.g. to read ``job_script()``).
    quiet : do not print the dashboard link.

    Returns
    -------
    None (kind local with 0 workers), an :class:`emkit.runtime.Cluster` (local, scheduler) or a
    :class:`JobCluster` (slurm, pbs, kubernetes); close it when done.

    Raises
    ------
    InputError : a scheduler that cannot be reached; dask-jobqueue / dask-kubernetes missing.
    """
    cluster = cfg if isinstance(cfg, ClusterConfig) else cfg.cluster
    cluster = effective_cluster(cluster, workers=workers, scheduler=scheduler)
    if cluster.in_process:
        return None
    if cluster.kind in ("local", "scheduler"):
        from ..runtime import Cluster

        if cluster.kind == "scheduler":
            return Cluster(scheduler=cluster.scheduler, quiet=quiet)
        return Cluster(n_workers=cluster.workers, threads_per_worker=cluster.threads, memory_limit=cluster.memory,
                       quiet=quiet)
    if cluster.kind in ("slurm", "pbs"):
        jq = _need("dask_jobqueue", "dask-jobqueue", cluster.kind)
        submit = "sbatch" if cluster.kind == "slurm" else "qsub"
        if scale and shutil.which(submit) is None:   # else the submission fails in the background and the run waits
            raise InputError(f"cluster kind {cluster.kind!r} submits its jobs with {submit}, which is not on this "
                             f"machine's PATH: run emkit on the cluster's login node")
        obj = (jq.SLURMCluster if cluster.kind == "slurm" else jq.PBSCluster)(**jobqueue_options(cluster))
        out = JobCluster(obj, cluster.kind)
        if scale:
            try:
                obj.scale(jobs=cluster.jobs)
            except BaseException:
                out.close()
                raise
    else:
        op = _need("dask_kubernetes.operator", "dask-kubernetes", cluster.kind)
        kw = kubernetes_options(cluster)
        if not scale:
            kw["n_workers"] = 0
        out = JobCluster(op.KubeCluster(**kw, quiet=quiet), cluster.kind)
    if not quiet:
        print(f"{cluster.describe()}; dask dashboard: {out.dashboard_link}", flush=True)
    return out
