"""Neuroglancer viewer state (JSON) and shareable links for a set of emkit layers.

Neuroglancer speaks ``x, y, z``; emkit speaks ``z, y, x``. The conversion happens here, once.
The state is a plain ``dict`` (Neuroglancer's JSON state), so it can be saved, edited and
turned into a link without importing neuroglancer.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from typing import Callable, Iterable, Mapping, Sequence

from ..errors import InputError
from ..io.layer import normalize_url
from .layers import LayerRef, resolve_layers
from .segments import DEFAULT_N_SEGMENTS, check_segments_have_meshes, largest_segments, parse_segment_ids

__all__ = ["neuroglancer_state", "neuroglancer_link", "layer_state", "DEFAULT_BASE", "SHADERS"]

DEFAULT_BASE = "https://neuroglancer-demo.appspot.com"

# colours for mask layers, one per mask in turn
_MASK_COLOURS = ("#ff3030", "#30c0ff", "#ffd000", "#40ff60", "#ff40ff", "#ff9020", "#a070ff", "#ffffff")

SHADERS: dict[str, str] = {
    # affinities (z, y, x) as (red, green, blue); values are float32 in [0, 1]
    "affinities": (
        "void main() {\n"
        "  emitRGB(clamp(vec3(getDataValue(0), getDataValue(1), getDataValue(2)), 0.0, 1.0));\n"
        "}\n"),
    "probability_rgb": (
        "void main() {\n"
        "  emitRGB(clamp(vec3(getDataValue(0), getDataValue(1), getDataValue(2)), 0.0, 1.0));\n"
        "}\n"),
    "probability_1": "void main() {\n  emitGrayscale(clamp(getDataValue(0), 0.0, 1.0));\n}\n",
    "probability": "void main() {\n  emitGrayscale(clamp(getDataValue(), 0.0, 1.0));\n}\n",
    # a mask: coloured and half transparent where > 0, clear elsewhere
    "mask": (
        '#uicontrol vec3 color color(default="{colour}")\n'
        "#uicontrol float alpha slider(min=0, max=1, default=0.45)\n"
        "void main() {{\n"
        "  float v = toNormalized(getDataValue());\n"
        "  emitRGBA(vec4(color, v > 0.0 ? alpha : 0.0));\n"
        "}}\n"),
}


def _source(url: str) -> str:
    return "precomputed://" + normalize_url(url)


def layer_state(ref: LayerRef, source: str, *, visible: bool = True, mask_index: int = 0,
                segments: Sequence[int] = ()) -> dict:
    """Neuroglancer JSON for one layer.

    Parameters
    ----------
    ref : the layer (its kind picks the layer type and shader).
    source : Neuroglancer data source, e.g. ``precomputed://http://127.0.0.1:8000/…/image``.
    visible : shown when the page opens.
    mask_index : picks the colour of a mask layer.
    segments : segment ids selected in a segmentation layer (their meshes show in the 3D panel;
        the other segments stay faintly visible in the cross-sections).
    """
    out: dict = {"type": "image", "source": source, "name": ref.name}
    if ref.kind == "segmentation":
        out = {"type": "segmentation", "source": source, "name": ref.name, "selectedAlpha": 0.45}
        if segments:
            out["segments"] = [str(int(i)) for i in segments]  # uint64 ids as strings (JSON state)
            out["notSelectedAlpha"] = 0.15
    elif ref.kind == "affinities":
        out.update(shader=SHADERS["affinities"], opacity=1.0, blend="default")
    elif ref.kind == "probability":
        key = "probability_rgb" if ref.num_channels >= 3 else ("probability_1" if ref.num_channels == 2 else "probability")
        out.update(shader=SHADERS[key], opacity=1.0)
    elif ref.kind == "mask":
        colour = _MASK_COLOURS[mask_index % len(_MASK_COLOURS)]
        out.update(shader=SHADERS["mask"].format(colour=colour), opacity=1.0)
    else:  # image: Neuroglancer's grayscale shader with its contrast control
        out.update(opacity=1.0)
    if not visible:
        out["visible"] = False
    return out


def neuroglancer_state(
    layers: Mapping[str, str] | Sequence[str] | str | Iterable[LayerRef],
    *,
    sources: Mapping[str, str] | Callable[[LayerRef], str] | None = None,
    kinds: Mapping[str, str] | None = None,
    fetch_remote: bool = True,
    layout: str = "auto",
    position_zyx: Sequence[float] | None = None,
    panel_px: tuple[int, int] | None = None,
    segments: Mapping[str, Sequence[int]] | Sequence[int] | str | None = None,
    n_segments: int = DEFAULT_N_SEGMENTS,
) -> dict:
    """Neuroglancer JSON state showing ``layers``.

    Parameters
    ----------
    layers : ``{name: url}``, a list of URLs or local paths (dataset folders expand to their
        layers), or :class:`~emkit.view.layers.LayerRef` objects.
    sources : how each layer's data reaches the browser: ``{name: source}`` or a function of the
        :class:`LayerRef`. Default ``precomputed://<url>``, which works for ``gs://``, ``s3://``
        and ``http(s)://`` layers; local ``file://`` layers need a server (use
        :func:`emkit.view.serve`, which fills this in).
    kinds : ``{name: kind}`` for layers whose info file cannot be read from here (the kind
        picks the layer type; without it, a name containing ``seg``/``label`` means segmentation).
    fetch_remote : read remote layers' ``info`` files over HTTPS (resolution, bounds, kind);
        False makes no request (Neuroglancer then takes dimensions from the data it loads).
    layout : Neuroglancer layout (``4panel``, ``xy``, ``xz``, ``yz``, ``3d``, ``xy-3d``, …);
        ``auto``: ``xy-3d`` (a cross-section beside a large 3D panel) when meshes are shown,
        else ``4panel``.
    position_zyx : where the view is centred, in voxels (z, y, x) of the first layer; default
        the centre of the first layer whose bounds are known.
    panel_px : (width, height) in screen pixels of one cross-section panel, to zoom so the
        volume fills it; default suits a 1280×720 page.
    segments : segments to select, so that their meshes show in 3D: ``{layer name: [ids]}``, or
        ids (a list or ``"12,40"``) for every segmentation layer that has meshes (the first
        segmentation layer when none has). Default: the ``n_segments`` largest segments of each
        segmentation layer whose info names a mesh folder (see
        :func:`emkit.view.segments.largest_segments`).
    n_segments : how many segments the default selection takes per layer (0: none).

    Returns
    -------
    dict
        The state: ``dimensions`` (x, y, z in metres from the first layer's resolution; left
        out when no layer's info could be read),
        ``position``, ``crossSectionScale``, ``layers`` (images first, then segmentations, then
        masks; only the first image-like layer — image, affinities or probability — and the
        first segmentation with shown meshes, else the first segmentation, are visible, the others
        are listed for a click to show) and ``layout``.
    """
    if isinstance(layers, (str, os.PathLike)) or isinstance(layers, Mapping):
        refs = resolve_layers(layers, kinds=kinds, fetch_remote=fetch_remote)
    else:
        items = list(layers)
        refs = [r for r in items if isinstance(r, LayerRef)]
        if len(refs) != len(items):
            refs = resolve_layers(items, kinds=kinds, fetch_remote=fetch_remote)
    if not refs:
        raise InputError("no layers to show")
    if sources is None:
        local = [r.url for r in refs if r.is_local]
        if local:
            raise InputError(f"local layer {local[0]} must be served to a browser: use emkit.view.serve() "
                             "or pass sources={name: 'precomputed://http://…'}")
        get = lambda r: _source(r.url)  # noqa: E731
    elif callable(sources):
        get = sources
    else:
        missing = [r.name for r in refs if r.name not in sources]
        if missing:
            raise InputError(f"no source given for layer(s) {missing}; got sources for {sorted(sources)}")
        get = lambda r: sources[r.name]  # noqa: E731

    selected = _select_segments(refs, segments, n_segments)
    seg_refs = [r for r in refs if r.kind == "segmentation"]
    shown_seg = next((r.name for r in seg_refs if r.mesh and selected.get(r.name)),
                     seg_refs[0].name if seg_refs else None)
    meshes_shown = any(r.name == shown_seg and r.mesh and selected.get(r.name) for r in seg_refs)
    if layout == "auto":
        layout = "xy-3d" if meshes_shown else "4panel"

    known = [r for r in refs if r.resolution is not None]
    first = known[0] if known else None
    state: dict = {"layers": [], "layout": layout}
    if first is not None:  # else Neuroglancer takes them from the first layer it loads
        res = first.resolution
        state["dimensions"] = {ax: [res[i] * 1e-9, "m"] for ax, i in (("x", 2), ("y", 1), ("z", 0))}
    if position_zyx is not None:
        pos = [float(v) for v in position_zyx]
        if len(pos) != 3:
            raise InputError(f"position_zyx must have 3 values (z, y, x), got {position_zyx!r}")
        state["position"] = [pos[2], pos[1], pos[0]]
    elif first is not None:
        centre = [o + s / 2 for o, s in zip(first.voxel_offset, first.size)]
        state["position"] = [centre[2], centre[1], centre[0]]
    if first is not None:
        w, h = panel_px or ((600, 330) if layout == "4panel" else
                            (600, 680) if "-" in layout else (1200, 680))
        _, sy, sx = first.size
        state["crossSectionScale"] = max(sx / w, sy / h) * 1.05
        nm = [s * r for s, r in zip(first.size, res)]
        state["projectionScale"] = max(nm) / res[2] * 1.6

    order = sorted(range(len(refs)), key=lambda i: ({"segmentation": 1, "mask": 2}.get(refs[i].kind, 0), i))
    seen_img = False
    n_mask = 0
    for i in order:
        ref = refs[i]
        visible = True
        if ref.kind == "segmentation":
            visible = ref.name == shown_seg
        if ref.kind in ("image", "affinities", "probability"):
            visible, seen_img = not seen_img, True
        layer = layer_state(ref, get(ref), visible=visible, mask_index=n_mask,
                            segments=selected.get(ref.name, ()))
        state["layers"].append(layer)
        n_mask += ref.kind == "mask"
    state["selectedLayer"] = {"layer": state["layers"][0]["name"], "visible": False}
    if meshes_shown:
        state["showSlices"] = False  # the 3D panel shows the meshes, not the cross-section planes
    return state


def _select_segments(refs: list[LayerRef], segments, n_segments: int) -> dict[str, list[int]]:
    """``{segmentation layer name: [ids]}`` to select (see :func:`neuroglancer_state`)."""
    segs = [r for r in refs if r.kind == "segmentation"]
    by_name = {r.name: r for r in segs}
    if segments is None:
        return {r.name: largest_segments(r.url, n_segments, mesh_dir=r.mesh) for r in segs if r.mesh}
    if isinstance(segments, Mapping):
        unknown = [k for k in segments if k not in by_name]
        if unknown:
            raise InputError(f"segments given for {unknown}, which are not segmentation layers here; "
                             f"segmentation layers: {sorted(by_name)}")
        out = {k: parse_segment_ids(v) for k, v in segments.items()}
    else:
        ids = parse_segment_ids(segments)
        if not segs:
            raise InputError(f"segments {ids} given, but no segmentation layer is shown")
        targets = [r for r in segs if r.mesh] or segs[:1]
        out = {r.name: list(ids) for r in targets}
    for name, ids in out.items():
        ref = by_name[name]
        if ref.mesh and ids:
            check_segments_have_meshes(ref.url, ids, ref.mesh, name)
    return out


def neuroglancer_link(state: Mapping, base: str = DEFAULT_BASE) -> str:
    """A URL that opens ``state`` in the Neuroglancer client at ``base``.

    The default client is Google's public demo; the layers' sources must be reachable from the
    browser that opens the link (``gs://`` and ``s3://`` public buckets are; a local server is
    only from this machine).
    """
    if not isinstance(state, Mapping):
        raise InputError(f"state must be a dict (Neuroglancer JSON state), got {type(state).__name__}")
    text = json.dumps(state, separators=(",", ":"))
    return f"{base.rstrip('/')}/#!" + urllib.parse.quote(text, safe="~@#$&()*!+=:;,.?/'")
