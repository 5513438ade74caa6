"""Run chunk tasks over volumes: serially, on a local dask cluster, or on a remote scheduler.

Plan (:func:`plan_chunks`) → run (:func:`map_chunks`) → resume (:class:`Markers`).
Importing this package imports neither dask nor distributed; they load when a cluster starts.
"""
from .atomic import put_atomic, put_json_atomic, remove_stale_temporaries
from .cluster import Cluster, map_batches, machine_cores, stage_client, start_cluster
from .map import ChunkTask, MapReport, map_chunks, run_chunk
from .markers import Markers, markers_url
from .plan import ChunkSpec, check_aligned, chunk_name, count_chunks, plan_chunks

__all__ = [
    "Cluster", "start_cluster", "machine_cores", "stage_client", "map_batches",
    "ChunkTask", "ChunkSpec", "MapReport", "map_chunks", "run_chunk",
    "Markers", "markers_url",
    "plan_chunks", "count_chunks", "check_aligned", "chunk_name",
    "put_atomic", "put_json_atomic", "remove_stale_temporaries",
]
