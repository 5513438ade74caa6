"""Open emkit layers in Neuroglancer, served from this machine.

:func:`serve` starts Neuroglancer's Python server (which hosts the viewer page offline) bound to
127.0.0.1, serves local layers with :class:`~emkit.view.server.FileServer`, and returns a
:class:`ViewerHandle` whose ``url`` opens the view. ``gs://`` and ``s3://`` layers are given to
Neuroglancer directly. :func:`show` is the same for notebooks.
"""
from __future__ import annotations

import html
import os
import threading
import time
from typing import Iterable, Sequence

from ..errors import InputError
from ..io.layer import local_path
from .layers import LayerRef, resolve_layers
from .server import FileServer
from .state import DEFAULT_BASE, neuroglancer_link, neuroglancer_state

__all__ = ["ViewerHandle", "serve", "show"]


class ViewerHandle:
    """A running view: Neuroglancer's viewer, its state and the server of the local layers.

    Attributes
    ----------
    url : link to the viewer page (valid while this process runs and the handle is not stopped).
    viewer : the ``neuroglancer.Viewer``.
    state : the Neuroglancer JSON state the viewer started with.
    layers : the :class:`~emkit.view.layers.LayerRef` shown, in the order given.
    file_server : the server of local layers, or None when every layer is remote.
    synapses : ``{annotation layer name: {"table", "folder", "segmentation_layer"}}`` of the synapse
        output folders shown (see :func:`emkit.view.center_on_synapse`).
    """

    def __init__(self, viewer, state: dict, layers: list[LayerRef], file_server: FileServer | None,
                 synapses: dict | None = None):
        self.viewer = viewer
        self.synapses = synapses or {}
        self.state = state
        self.layers = layers
        self.file_server = file_server
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return self.viewer.get_viewer_url()

    def link(self, base: str = DEFAULT_BASE) -> str:
        """The same state as a link to another Neuroglancer client (e.g. the public demo).

        Local layers in it point at this machine's server, so it works only here and while
        the handle runs; remote layers work anywhere.
        """
        return neuroglancer_link(self.state, base)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` is called (from another thread), ``timeout`` seconds pass
        (None: forever) or Ctrl-C (KeyboardInterrupt propagates). Returns True if stopped."""
        end = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            left = 1.0 if end is None else min(1.0, end - time.monotonic())
            if left <= 0:
                break
            self._stopped.wait(left)  # short waits so Ctrl-C is seen promptly
        return self._stopped.is_set()

    def stop(self) -> None:
        """Stop serving the local layers and forget the viewer (its page stops updating)."""
        self._stopped.set()
        if self.file_server is not None:
            self.file_server.stop()
        import neuroglancer.server as ngs

        srv = ngs.global_server
        if srv is not None:
            srv.viewers.pop(self.viewer.token, None)

    @property
    def segments(self) -> dict[str, list[int]]:
        """``{segmentation layer name: selected segment ids}`` the view opened with (their meshes,
        where the layer has some, show in the 3D panel)."""
        return {l["name"]: [int(i) for i in l["segments"]] for l in self.state["layers"]
                if l.get("type") == "segmentation" and l.get("segments")}

    def __enter__(self) -> "ViewerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ViewerHandle({self.url!r}, layers={[r.name for r in self.layers]})"

    def _repr_html_(self) -> str:
        url = html.escape(self.url, quote=True)
        names = html.escape(", ".join(r.name for r in self.layers))
        return (f'<p>Neuroglancer: <a href="{url}" target="_blank">{url}</a> ({names})</p>'
                f'<iframe src="{url}" width="100%" height="600" style="border:0"></iframe>')


def _start_neuroglancer(bind: str, port: int):
    import neuroglancer
    import neuroglancer.server as ngs

    if ngs.is_server_running():
        running = ngs.global_server
        if port and running.port != port:
            raise InputError(f"the Neuroglancer server already runs on port {running.port}; "
                             f"cannot also serve on port {port} from this process")
    else:
        neuroglancer.set_server_bind_address(bind, int(port))
    try:
        return neuroglancer.Viewer()
    except OSError as exc:
        raise InputError(f"cannot start the Neuroglancer server on {bind}:{port}: {exc}") from None


def serve(
    urls: str | os.PathLike | Sequence | dict,
    *,
    names: Sequence[str] | None = None,
    bind: str = "127.0.0.1",
    port: int = 0,
    layout: str = "auto",
    position_zyx: Sequence[float] | None = None,
    segments=None,
    n_segments: int = 5,
) -> ViewerHandle:
    """Show layers in a Neuroglancer viewer served from this machine.

    Parameters
    ----------
    urls : layer URLs or local paths, a dataset folder (all its layers), or ``{name: url}``.
    names : one display name per URL (a dataset folder's name prefixes its layers).
    bind : address both servers listen on; default ``127.0.0.1`` (this machine only).
    port : port of the viewer page (0: any free port). Local data gets its own free port.
    layout : Neuroglancer layout (``4panel``, ``xy``, ``3d``, ``xy-3d``, …); ``auto`` (default):
        ``xy-3d`` when meshes are shown, else ``4panel``.
    position_zyx : centre of the view in voxels (z, y, x); default the first layer's centre.
    segments : segments to select so their meshes show in 3D: ids (``[12, 40]`` or ``"12,40"``)
        for the segmentation layers with meshes, or ``{layer name: ids}``. Default: the
        ``n_segments`` largest segments of each segmentation layer whose info names a mesh folder
        (written by :func:`emkit.mesh.mesh_layers` / ``emkit mesh``).
    n_segments : how many segments the default selection takes (0: none).

    Returns
    -------
    ViewerHandle
        ``handle.url`` is the link to open; ``handle.stop()`` ends serving.

    Layer types: ``image`` → grayscale image layer, ``affinities`` → image layer with an RGB
    shader (z, y, x → red, green, blue), ``probability`` → image, ``segmentation`` →
    segmentation layer (with its meshes in the 3D panel for the selected segments), ``mask`` →
    image layer with a coloured, half transparent shader.
    """
    refs = resolve_layers(urls, names)
    refs, synapses = _add_synapse_partners(urls, refs)
    server = FileServer(bind=bind) if any(r.is_local for r in refs) else None

    def source(ref: LayerRef) -> str:
        if ref.is_local:
            return "precomputed://" + server.url_for(local_path(ref.url))
        return "precomputed://" + ref.url

    try:
        state = neuroglancer_state(refs, sources=source, layout=layout, position_zyx=position_zyx,
                                   segments=segments, n_segments=n_segments)
        _add_synapse_layers(state, synapses)
        viewer = _start_neuroglancer(bind, port)
        viewer.set_state(state)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    return ViewerHandle(viewer, state, refs, server, synapses)


def _url_list(urls) -> list:
    if isinstance(urls, dict):
        return list(urls.values())
    if isinstance(urls, (str, os.PathLike)):
        return [urls]
    return [u for u in urls if isinstance(u, (str, os.PathLike))]


def _add_synapse_partners(urls, refs: list[LayerRef]):
    """Synapse output folders among/below ``urls``: their tables, and the image and segmentation
    layers they were made from (added when not shown yet, so the synapses' partners can be seen)."""
    from ..io.layer import layer_exists, normalize_url
    from ..synapse.table import read_synapse_table
    from .layers import describe_layer
    from .synapses import _provenance, find_synapse_folders

    found: dict = {}
    for u in _url_list(urls):
        for name, folder in find_synapse_folders(u).items():
            if folder not in [f["folder"] for f in found.values()]:
                found[name] = {"folder": folder}
    if not found:
        return refs, {}
    refs = list(refs)
    names = {r.name for r in refs}
    by_url = {normalize_url(r.url).rstrip("/"): r.name for r in refs}
    out = {}
    for name, info in found.items():
        prov = _provenance(info["folder"])
        layers = prov.get("layers") or {}
        seg_name = None
        for role in ("image", "segmentation"):
            url = layers.get(role)
            if not url or not layer_exists(url):
                continue
            key = normalize_url(url).rstrip("/")
            if key not in by_url:
                n, k = role, 2
                while n in names:
                    n, k = f"{role}-{k}", k + 1
                ref = describe_layer(url, n)
                refs.append(ref)
                names.add(n)
                by_url[key] = n
            if role == "segmentation":
                seg_name = by_url[key]
        lname = "synapses" if len(found) == 1 else f"{name}/synapses"
        while lname in names:
            lname += "_"
        names.add(lname)
        out[lname] = {"table": read_synapse_table(info["folder"]), "folder": info["folder"],
                      "segmentation_layer": seg_name}
    return refs, out


def _add_synapse_layers(state: dict, synapses: dict) -> None:
    from .synapses import synapse_annotation_layer

    if not synapses or "dimensions" not in state:
        return
    d = state["dimensions"]
    res = (d["z"][0] * 1e9, d["y"][0] * 1e9, d["x"][0] * 1e9)
    for lname, info in synapses.items():
        seg = info["segmentation_layer"]
        state["layers"].append(synapse_annotation_layer(info["table"], res, name=lname, segmentation_layer=seg))
        for layer in state["layers"]:
            if seg and layer["name"] == seg:
                layer.pop("visible", None)


def show(urls: str | os.PathLike | Iterable | dict, **kwargs) -> ViewerHandle:
    """:func:`serve` for notebooks: the handle displays as a link and an embedded viewer."""
    return serve(urls, **kwargs)
