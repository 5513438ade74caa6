"""Find the layers to show and the facts a viewer needs about each (kind, resolution, bounds).

Reads only the Precomputed ``info`` file (no CloudVolume), so it is quick and light. A URL may
name one layer (it holds an ``info`` file) or a dataset folder whose sub-folders are layers
(``image``, ``gt/segmentation``, ``masks/fold``, …): then every layer below it is listed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ..errors import InputError
from ..io.layer import local_path, normalize_url

__all__ = ["LayerRef", "describe_layer", "find_layers", "resolve_layers", "is_remote", "http_url"]

# where a remote dataset's layers are looked for (a bucket cannot be walked cheaply)
_CONVENTIONAL = ("image", "affinities", "probability", "segmentation", "semantic", "clefts",
                 "gt/segmentation", "gt/semantic", "gt/clefts")
_DRAW_ORDER = {"image": 0, "affinities": 1, "probability": 1, "mask": 3, "segmentation": 2}
_MAX_DEPTH = 3


@dataclass(frozen=True)
class LayerRef:
    """What a viewer needs to know about one layer.

    Attributes
    ----------
    name : layer name shown in the viewer.
    url : normalized layer URL (``file://``, ``gs://``, ``s3://``, ``http(s)://``).
    kind : emkit kind (``image``, ``affinities``, ``probability``, ``segmentation``, ``mask``).
    resolution : voxel size in nm (z, y, x), or None when the info file could not be read.
    voxel_offset : first voxel (z, y, x), or None.
    size : size in voxels (z, y, x), or None.
    num_channels : channel count.
    mesh : the mesh folder named in a segmentation layer's info (``"mesh"`` entry), or None.
    skeletons : the skeleton folder named in its info (``"skeletons"`` entry), or None.
    """

    name: str
    url: str
    kind: str
    resolution: tuple[float, float, float] | None = None
    voxel_offset: tuple[int, int, int] | None = None
    size: tuple[int, int, int] | None = None
    num_channels: int = 1
    mesh: str | None = None
    skeletons: str | None = None

    @property
    def is_local(self) -> bool:
        return self.url.startswith("file://")


def is_remote(url: str) -> bool:
    """True for URLs a browser can fetch without emkit serving them (gs, s3, http, https)."""
    return normalize_url(url).startswith(("gs://", "s3://", "http://", "https://"))


def http_url(url: str) -> str | None:
    """Public HTTPS address of a ``gs://`` / ``s3://`` / ``http(s)://`` URL (what a browser fetches)."""
    url = normalize_url(url)
    if url.startswith(("http://", "https://")):
        return url
    if url.startswith("gs://"):
        return "https://storage.googleapis.com/" + url[len("gs://"):]
    if url.startswith("s3://"):
        bucket, _, key = url[len("s3://"):].partition("/")
        return f"https://{bucket}.s3.amazonaws.com/{key}"
    return None


def _read_info(url: str, timeout: float = 5.0) -> dict | None:
    """The layer's ``info`` JSON, or None when there is none or it cannot be fetched.

    Remote layers are read as a browser would (anonymous HTTPS, short timeout), since that is
    all Neuroglancer will be able to do with them either.
    """
    import json

    path = local_path(url)
    if path is not None:
        f = os.path.join(path, "info")
        if not os.path.isfile(f):
            return None
        with open(f) as fh:
            return json.load(fh)
    web = http_url(url)
    if web is None:
        return None
    import urllib.request

    try:
        with urllib.request.urlopen(web.rstrip("/") + "/info", timeout=timeout) as r:
            return json.loads(r.read())
    except Exception:  # noqa: BLE001 - unreachable, private or absent: the caller decides
        return None


def _kind_from_info(info: dict, name: str) -> str:
    kind = (info.get("emkit") or {}).get("kind")
    if kind:
        return kind
    if info.get("type") == "segmentation":
        return "segmentation"
    n = int(info.get("num_channels", 1))
    if str(info.get("data_type")) in ("float32", "float64"):
        return "affinities" if n == 3 else "probability"
    if "mask" in name.lower():
        return "mask"
    return "image"


def _guess_kind(name: str) -> str:
    low = name.lower()
    for word, kind in (("mask", "mask"), ("seg", "segmentation"), ("label", "segmentation"),
                       ("cleft", "segmentation"), ("semantic", "segmentation"), ("aff", "affinities")):
        if word in low:
            return kind
    return "image"


def describe_layer(url: str, name: str | None = None, kind: str | None = None, *,
                   read_info: bool = True) -> LayerRef:
    """A :class:`LayerRef` for the layer at ``url``.

    Parameters
    ----------
    url : layer URL or local path.
    name : display name; default the last path component.
    kind : emkit kind, to skip or override what the info file says (needed for remote layers
        whose info cannot be read from here).
    read_info : False skips reading the info file (remote layers only; no request is made).

    Raises
    ------
    InputError
        A local path without an ``info`` file.
    """
    url = normalize_url(url)
    name = name or url.rstrip("/").rsplit("/", 1)[-1]
    info = _read_info(url) if read_info or not is_remote(url) else None
    if info is None:
        if not is_remote(url):
            raise InputError(f"no Precomputed layer at {url} (missing 'info' file)")
        return LayerRef(name, url, kind or _guess_kind(name))
    scale = info["scales"][0]
    return LayerRef(
        name=name, url=url, kind=kind or _kind_from_info(info, name),
        resolution=tuple(float(v) for v in scale["resolution"][::-1]),
        voxel_offset=tuple(int(v) for v in scale.get("voxel_offset", (0, 0, 0))[::-1]),
        size=tuple(int(v) for v in scale["size"][::-1]),
        num_channels=int(info.get("num_channels", 1)),
        mesh=_subfolder(info.get("mesh")),
        skeletons=_subfolder(info.get("skeletons")),
    )


def _subfolder(value) -> str | None:
    """A mesh/skeleton entry of an info file as a folder name (None when absent or not a string)."""
    return value.strip("/") if isinstance(value, str) and value.strip("/") else None


def _is_annotation_layer(url: str) -> bool:
    """A Precomputed annotation layer (``emkit synapses`` writes one), not a volume."""
    return (_read_info(url) or {}).get("@type") == "neuroglancer_annotations_v1"


def find_layers(url: str | os.PathLike) -> dict[str, str]:
    """Layers at ``url``: ``{name: url}``.

    A layer (folder with ``info``) gives itself, named by its last path component. A dataset
    folder gives every layer below it (up to three levels), named by relative path
    (``gt/segmentation``), images first, then segmentations, then masks.

    Raises
    ------
    InputError
        The path does not exist, or holds no layer.
    """
    url = normalize_url(url)
    base = url.rstrip("/").rsplit("/", 1)[-1]
    if _read_info(url) is not None:
        return {base: url}
    path = local_path(url)
    found: list[tuple[str, str]] = []
    if path is not None:
        if not os.path.isdir(path):
            raise InputError(f"no such layer or dataset folder: {path}")
        for root, dirs, files in os.walk(path):
            rel = os.path.relpath(root, path)
            depth = 0 if rel == "." else rel.count(os.sep) + 1
            dirs.sort()
            if depth and "info" in files:
                if not _is_annotation_layer("file://" + root):  # synapse points: shown from their table
                    found.append((rel.replace(os.sep, "/"), "file://" + root))
                dirs[:] = []  # a layer's sub-folders are its scales, not layers
            elif depth >= _MAX_DEPTH:
                dirs[:] = []
    else:
        for rel in _CONVENTIONAL:
            if _read_info(f"{url}/{rel}") is not None:
                found.append((rel, f"{url}/{rel}"))
    if not found:
        raise InputError(f"no Precomputed layer at {url}: no 'info' file there or in its sub-folders")

    def order(item):
        rel, u = item
        info = _read_info(u) or {}
        return (_DRAW_ORDER.get(_kind_from_info(info, rel), 1), rel.count("/"), rel)

    return dict(sorted(found, key=order))


def resolve_layers(urls: str | os.PathLike | Iterable, names: Sequence[str] | None = None,
                   kinds: Mapping[str, str] | None = None, fetch_remote: bool = True) -> list[LayerRef]:
    """Expand URLs (layers or dataset folders) into :class:`LayerRef` s with unique names.

    Parameters
    ----------
    urls : one URL/path, a list of them, or a dict ``{name: url}``.
    names : one name per URL (for a dataset folder, the prefix of its layers' names).
    kinds : ``{name: kind}`` for layers whose kind the info file does not tell (or that cannot be
        read from here, like a private bucket).
    fetch_remote : read remote layers' ``info`` over HTTPS (and look for a remote dataset's
        layers); False takes each remote URL as one layer, as given, without any request.
    """
    if isinstance(urls, dict):
        names, urls = list(urls.keys()), list(urls.values())
    elif isinstance(urls, (str, os.PathLike)):
        urls = [urls]
    urls = list(urls)
    if not urls:
        raise InputError("no layer URL given")
    if names is not None and len(names) != len(urls):
        raise InputError(f"got {len(names)} name(s) for {len(urls)} URL(s): {list(names)!r}")
    refs: list[LayerRef] = []
    seen: set[str] = set()
    for i, u in enumerate(urls):
        given = names[i] if names is not None else None
        remote = is_remote(u)
        try:
            if remote and not fetch_remote:
                raise InputError("not fetched")
            layers = find_layers(u)
        except InputError:
            if not remote:
                raise
            # a bucket we cannot read from here (offline, private): the browser may still reach it
            layers = {normalize_url(u).rsplit("/", 1)[-1]: normalize_url(u)}
        single = len(layers) == 1 and next(iter(layers.values())) == normalize_url(u)
        for rel, lu in layers.items():
            name = (given or rel) if single else (f"{given}/{rel}" if given else rel)
            unique, k = name, 2
            while unique in seen:
                unique, k = f"{name}-{k}", k + 1
            seen.add(unique)
            refs.append(describe_layer(lu, unique, (kinds or {}).get(unique),
                                       read_info=fetch_remote or not remote))
    return refs
