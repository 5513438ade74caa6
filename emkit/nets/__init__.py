"""Convolutional nets: the Residual Symmetric U-Net of the paper, its config and checkpoints.

``NetConfig``, ``HeadSpec`` and ``normalize`` import without torch; ``RSUNet``, ``save``,
``load``, ``load_model`` import torch on first use::

    from emkit.nets import NetConfig, RSUNet, save, load, normalize
    model = RSUNet(NetConfig(widths=(16, 32, 64), resolution=(40, 8, 8)))
    logits = model(torch.from_numpy(normalize(img))[None, None])   # (1, C, z, y, x)
    aff = torch.sigmoid(logits[:, model.head_slices["affinity"]])
"""
from .config import (
    HEAD_KINDS,
    PAPER_LONG_RANGE_OFFSETS,
    PAPER_RESOLUTION,
    HeadSpec,
    NetConfig,
    CLEFT_WIDTHS,
    boundary_heads,
    cleft_heads,
    derive_downsample,
    derive_patch_size,
    long_range_offsets,
    semantic_heads,
)
from .normalize import normalize

__all__ = [
    "NetConfig", "HeadSpec", "HEAD_KINDS", "PAPER_RESOLUTION", "PAPER_LONG_RANGE_OFFSETS", "long_range_offsets",
    "derive_downsample", "derive_patch_size", "boundary_heads", "semantic_heads", "cleft_heads", "CLEFT_WIDTHS",
    "normalize",
    "RSUNet", "save", "load", "load_checkpoint", "load_model", "available_models",
    "shipped_models", "models_dir",
]

_LAZY = {"RSUNet": "rsunet", "save": "checkpoint", "load": "checkpoint", "load_checkpoint": "checkpoint",
         "load_model": "checkpoint", "available_models": "checkpoint", "shipped_models": "checkpoint",
         "models_dir": "checkpoint"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        mod = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
