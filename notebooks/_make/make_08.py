"""Write notebooks/08_scale_out.ipynb (narrative + library calls only).

Run from anywhere: ``python notebooks/_make/make_08.py [OUT.ipynb]``.
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

md, code = new_markdown_cell, new_code_cell
cells = [
    md("# Scaling out: the same code on one laptop, a dask cluster, a lab's scheduler\n\n"
       "Every emkit stage has a plain array function and a *chunked* form over Precomputed layers "
       "(paper: *Distributed computation*). The chunked form cuts the volume into tasks and runs them in this "
       "process, on a local dask cluster, or on any running dask scheduler — the result is the same voxel for "
       "voxel. This notebook segments one affinity layer three ways, shows the dask dashboard, attaches to a "
       "scheduler by its address, and measures throughput against the number of workers.\n\n"
       "Layers may live on `file://`, `gs://` or `s3://`: CloudVolume reads its own credential files "
       "(`~/.cloudvolume/secrets/`), emkit never prints or logs them."),
    code("# parameters: small by default so the notebook runs in a minute or two\n"
         "SIZE = (32, 256, 256)     # voxels, z, y, x, at 40 x 8 x 8 nm\n"
         "SEED = 1\n"
         "CHUNK = (16, 128, 128)    # task size (voxels); memory per task is bounded by it\n"
         "WORKERS = (1, 2)          # worker counts to time\n"
         "OUT_DIR = None            # None: a temporary folder; or a path",
         metadata={"tags": ["parameters"]}),
    code("import tempfile\n"
         "import numpy as np\n"
         "from emkit.phantom import make_phantom\n"
         "from emkit.affinity import noisy_affinities\n"
         "from emkit.io import Layer\n"
         "from emkit.runtime import Cluster, machine_cores\n"
         "from emkit.runtime.scaling import scaling_table\n"
         "from emkit.segment import segment_layers\n"
         "out_dir = OUT_DIR or tempfile.mkdtemp(prefix='emkit-scale-')\n"
         "print('cores on this machine:', machine_cores())"),
    md("## 1. An affinity layer\n\n"
       "A phantom's noisy affinities stand in for a boundary net's output (`emkit infer` writes the same kind "
       "of layer), stored in chunks of the task size."),
    code("ph = make_phantom(SIZE, seed=SEED)\n"
         "aff = noisy_affinities(ph.segmentation, SEED)\n"
         "aff_url = f'{out_dir}/affinities'\n"
         "Layer.create(aff_url, 'affinities', SIZE, resolution=ph.resolution, chunk_size=CHUNK).write(aff)\n"
         "voxels = int(np.prod(SIZE))\n"
         "aff_url, voxels"),
    md("## 2. In this process, then on a local cluster\n\n"
       "`workers=0` runs the chunk tasks one after another here. A `Cluster` starts dask worker processes on "
       "this machine (loopback only) and prints its **dashboard** link: open it to watch the tasks stream "
       "(task stream, progress, memory per worker). The two results are identical."),
    code("serial = segment_layers(aff_url, f'{out_dir}/serial', chunk_size=CHUNK, workers=0, progress=False)\n"
         "cluster = Cluster(n_workers=2)\n"
         "print(cluster)\n"
         "local = segment_layers(aff_url, f'{out_dir}/local', chunk_size=CHUNK, client=cluster, progress=False)\n"
         "same = np.array_equal(Layer(serial['segmentation']).read(), Layer(local['segmentation']).read())\n"
         "print('serial', round(serial['seconds'], 1), 's; cluster', round(local['seconds'], 1), 's; identical:', same)"),
    md("## 3. Attach to a running scheduler\n\n"
       "A lab's cluster is a dask scheduler somewhere (started by `dask scheduler`, by `dask-jobqueue` on "
       "SLURM/PBS, or by `dask-kubernetes`). Anything that knows its address attaches to it — here the local "
       "cluster's own scheduler stands in (emkit attaches a client and leaves the scheduler running). On the command line the same is "
       "`emkit segment AFFINITIES OUT --scheduler tcp://HOST:8786` (and `emkit infer`, `emkit synapses`, "
       "`emkit mesh`, … take `--scheduler` too)."),
    code("address = cluster.client.scheduler.address\n"
         "remote = segment_layers(aff_url, f'{out_dir}/attached', chunk_size=CHUNK, scheduler=address, progress=False)\n"
         "print(address, remote['runner'], 'identical:',\n"
         "      np.array_equal(Layer(remote['segmentation']).read(), Layer(serial['segmentation']).read()))\n"
         "cluster.close()"),
    md("## 4. Throughput against workers\n\n"
       "`scaling_table` runs the stage once per worker count on a fresh cluster (start-up not timed) and "
       "tabulates seconds, voxels per second, speed-up and parallel efficiency. On a laptop the speed-up "
       "stops at the number of cores; on a cluster, a speed-up that flattens before the worker count says the "
       "stage is bound by something else (storage I/O, the scheduler, a serial step). To size a SLURM "
       "cluster, pass `make_cluster=` a function that builds and scales a `dask_jobqueue.SLURMCluster` and "
       "returns a client on it."),
    code("table = scaling_table(lambda c: segment_layers(aff_url, f'{out_dir}/scaling', chunk_size=CHUNK, client=c,\n"
         "                                                overwrite=True, progress=False),\n"
         "                      WORKERS, voxels=voxels)\n"
         "table.drop(columns='dashboard')"),
    code("ax = table.plot(x='workers', y='voxels_per_s', marker='o', title='emkit segment: throughput vs workers')\n"
         "ax.set_ylabel('voxels / s');"),
    md("## 5. A lab's cluster\n\n"
       "On SLURM or PBS, `emkit run` builds the cluster itself from the configuration's `cluster:` section "
       "(dask-jobqueue: `pip install \"emkit[cluster]\"`; run emkit on the login node). Here the section is "
       "validated and the job script it would submit is printed — nothing is submitted (`scale=False`). "
       "`emkit run CONFIG --workers N` or `--scheduler ADDR` replace the section."),
    code("from emkit.pipeline.cluster import ClusterConfig, make_cluster\n"
         "slurm = ClusterConfig(kind='slurm', jobs=10, cores=8, memory='32GiB', threads=1, walltime='02:00:00',\n"
         "                      queue='normal', account='mylab',\n"
         "                      job_script_prologue=['source ~/emkit/.venv/bin/activate'])\n"
         "print(slurm.describe())\n"
         "jobs = make_cluster(slurm, scale=False, quiet=True)   # the scheduler only; on the login node scale=True submits\n"
         "print(jobs.job_script())\n"
         "jobs.close()"),
    md("Before a big run, time a crop at two or three worker counts with `scaling_table` and watch the "
       "dashboard's memory panel to size the workers' memory."),
]
nb = new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                        "name": "python3"}})
nbformat.validate(nb)
out = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "08_scale_out.ipynb"
nbformat.write(nb, str(out))
