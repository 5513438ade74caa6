"""Checkpoints that carry their own config: ``save(model, path, extra=...)``, ``load(path)``,
``load_model(name_or_path)`` for the shipped weights in ``emkit/models/``.

File format (``torch.save`` of plain types, loaded with ``weights_only=True``)::

    {"format": "emkit-net/1", "config": NetConfig.to_dict(), "state_dict": {...},
     "extra": {...provenance: command, seed, git revision, iteration, metrics...},
     "training": {...optional: optimizer state, RNG states, log; written by emkit.train...}}
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import InputError
from .config import NetConfig
from .rsunet import RSUNet

__all__ = ["FORMAT", "save", "load", "load_checkpoint", "load_model", "models_dir", "available_models",
           "shipped_models", "MODELS_DIR_ENV"]

FORMAT = "emkit-net/1"


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def save(model: RSUNet, path, *, extra: dict | None = None, training: dict | None = None) -> Path:
    """Write ``model`` (weights + config) and provenance ``extra`` (JSON-able) to ``path``.

    ``training`` (optimizer state, RNG states; anything ``torch.save`` handles with
    ``weights_only``) is stored for resuming. Written to a temporary file then renamed, so a
    crash never leaves a half-written checkpoint.
    """
    if not isinstance(model, RSUNet):
        raise InputError(f"save needs an emkit RSUNet, got {type(model).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state,
            "extra": _jsonable(extra or {})}
    if training is not None:
        blob["training"] = training
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """The raw checkpoint dict of ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad input
        raise InputError(f"{str(path)!r} is not a readable emkit checkpoint: {e}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(f"{str(path)!r} is not an emkit checkpoint (format {FORMAT!r})")
    return blob


def load(path, map_location="cpu") -> RSUNet:
    """The model saved at ``path``, in eval mode, with ``model.extra`` (provenance) attached."""
    blob = load_checkpoint(path, map_location)
    model = RSUNet(NetConfig.from_dict(blob["config"]))
    model.load_state_dict(blob["state_dict"])
    model.extra = blob.get("extra", {})
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    return model.eval()


#: Environment variable naming another folder of shipped weights (tests, a site's own model zoo).
MODELS_DIR_ENV = "EMKIT_MODELS_DIR"


def models_dir() -> Path:
    """Folder of the shipped weights: ``emkit/models``, or the folder named by the environment
    variable ``EMKIT_MODELS_DIR`` when it is set."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "models"


def available_models() -> list[str]:
    """Names of the shipped models (``<models_dir>/<name>.pt``)."""
    d = models_dir()
    return sorted(p.stem for p in d.glob("*.pt")) if d.is_dir() else []


_SHIPPED_CACHE: dict = {}


def shipped_models(family: str | None = None) -> dict[str, dict]:
    """The shipped models and the facts that choose between them, by name.

    ``family`` (e.g. ``"boundary"``) keeps the model named so and those named ``<family>_*``
    (``boundary``, ``boundary_iso``, …). Each value holds ``path`` (the ``.pt`` file),
    ``resolution`` (training voxel size, z, y, x nm, from the checkpoint's config) and ``heads``
    (head names).
    """
    out = {}
    for name in available_models():
        if family is not None and name != family and not name.startswith(family + "_"):
            continue
        path = models_dir() / f"{name}.pt"
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        facts = _SHIPPED_CACHE.get(key)
        if facts is None:
            raw = load_checkpoint(path)["config"]
            if raw.get("arch", "rsunet") != "rsunet":  # another architecture (the 2D defect U-Net)
                facts = {}
            else:
                cfg = NetConfig.from_dict(raw)
                facts = {"path": str(path), "resolution": tuple(float(r) for r in cfg.resolution),
                         "heads": tuple(h.name for h in cfg.heads)}
            _SHIPPED_CACHE[key] = facts
        if facts:
            out[name] = dict(facts)
    return out


def load_model(name_or_path, map_location="cpu") -> RSUNet:
    """A shipped model by name (``"boundary"``, ``"semantic"``) or a checkpoint by path."""
    p = Path(str(name_or_path))
    if p.suffix == ".pt" or p.is_file() or os.sep in str(name_or_path):
        return load(p, map_location)
    cand = models_dir() / f"{name_or_path}.pt"
    if not cand.is_file():
        raise InputError(f"no shipped model {name_or_path!r}; available: {available_models() or 'none yet'} "
                         "(or give a checkpoint path)")
    return load(cand, map_location)
