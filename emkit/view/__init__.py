"""Seeing the data: Neuroglancer views of emkit layers (napari lives in ``emkit_widgets``).

* :func:`serve` / :func:`show` — open layers (or a dataset folder) in Neuroglancer served from
  this machine (127.0.0.1); returns a :class:`ViewerHandle` with the link in ``.url``.
* :func:`neuroglancer_state` / :func:`neuroglancer_link` — the JSON state and a shareable link
  for layers the browser can reach itself (``gs://``, ``s3://``, ``http(s)://``).
* segmentation layers with meshes (``emkit mesh``) open with their largest segments selected
  (:func:`largest_segments`, or ``segments=``) and a 3D panel showing those segments' meshes.
* synapse output folders (``synapses.parquet``) given or found in a dataset folder are shown as
  an annotation layer of points, linked to the segmentation they were found on;
  :func:`center_on_synapse` centres a running viewer on one.
* :class:`FileServer` — the CORS file server for local Precomputed folders (serves ``.gz``
  chunks with ``Content-Encoding: gzip``).

Neuroglancer itself is imported only when a viewer starts.
"""
from .layers import LayerRef, describe_layer, find_layers, resolve_layers
from .segments import largest_segments
from .server import FileServer
from .state import DEFAULT_BASE, neuroglancer_link, neuroglancer_state
from .synapses import center_on_synapse, find_synapse_folders, synapse_annotation_layer
from .viewer import ViewerHandle, serve, show

__all__ = ["serve", "show", "ViewerHandle", "neuroglancer_state", "neuroglancer_link", "DEFAULT_BASE",
           "FileServer", "LayerRef", "describe_layer", "find_layers", "resolve_layers", "center_on_synapse",
           "find_synapse_folders", "synapse_annotation_layer", "largest_segments"]
