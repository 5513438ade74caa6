"""Training presets: ``phantom`` makes its own training and validation phantoms.

``emkit train boundary --preset phantom`` (no ``--data``) generates phantoms with defects
(:func:`emkit.phantom.make_phantom`, seeds :data:`PHANTOM_TRAIN_SEEDS`, validation seed
:data:`PHANTOM_VAL_SEED`) and writes them under ``OUT/data/`` as dataset folders, so they go
through the same sampler as any user's data. Evaluate shipped weights on a seed outside
:data:`PHANTOM_TRAIN_SEEDS` + (:data:`PHANTOM_VAL_SEED`,), e.g. 0.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

__all__ = ["PHANTOM_TRAIN_SEEDS", "PHANTOM_VAL_SEED", "PRESETS", "preset_overrides", "prepare_phantoms"]

PHANTOM_TRAIN_SEEDS = (101, 102, 103, 104, 105, 106)
PHANTOM_VAL_SEED = 199

#: preset name -> task -> TrainConfig fields it sets (the user's explicit options win). Sized for
#: about 45-60 min on a 2-core CPU (one step of the (8, 16, 32, 64) net on 16×128×128 costs
#: ~1.9 CPU-seconds, measured; see the report), far from the paper's 550K + 1M iterations.
PRESETS = {
    "phantom": {
        "boundary": {"widths": (8, 16, 32, 64), "patch_size": (16, 128, 128), "lr": 1e-3, "iterations": 2500,
                     "val_interval": 250, "checkpoint_interval": 250, "phantom_size": (64, 256, 256),
                     "augment": "boundary"},
        "semantic": {"widths": (8, 16, 32, 64), "patch_size": (16, 128, 128), "lr": 1e-3, "iterations": 2500,
                     "val_interval": 250, "checkpoint_interval": 250, "phantom_size": (64, 384, 384),
                     "augment": "semantic", "output_1x1": True},
        # The paper's cleft net has widths 32, 40, 80 (Methods, Synapse detection); one step of it on
        # 16x128x128 costs 4.7 s on one CPU thread (measured), too slow for a ~35 min CPU budget: this
        # preset keeps its three levels and their ratios at half the width (16, 20, 40; 1.3 s/step).
        # Phantoms of 64x384x384 hold ~20 clefts each; validation scores the clefts of a
        # central 32x256x256 crop of the validation phantom.
        # Plain BCE (the paper's loss) predicted no cleft voxel after 80 iterations (measured), so the
        # preset rebalances the cleft channel (rebalance_cleft; see TrainConfig) to learn in ~500 steps
        # on a shared CPU (~4 s/step with three trainings on two cores).
        "cleft": {"widths": (16, 20, 40), "patch_size": (16, 128, 128), "lr": 1e-3, "iterations": 480,
                  "val_interval": 80, "checkpoint_interval": 80, "phantom_size": (64, 384, 384),
                  "rebalance_cleft": True,
                  "val_size": (32, 256, 256), "augment": "cleft"},
    },
}


def preset_overrides(name: str | None, task: str) -> dict:
    """The TrainConfig fields preset ``name`` sets for ``task`` ({} for None)."""
    if name is None:
        return {}
    try:
        return dict(PRESETS[name][task])
    except KeyError:
        raise InputError(f"unknown preset {name!r} for task {task!r}; presets: {sorted(PRESETS)}") from None


def prepare_phantoms(root, size, seeds, defects="default", resolution=(40, 8, 8), progress=True) -> list[str]:
    """Write (or reuse) phantom dataset folders ``root/phantom_<seed>``; returns their paths.

    A folder that already holds a complete phantom (its ``gt/phantom.json``) is reused as is, so
    a resumed run trains on the same data.
    """
    from ..phantom import make_phantom, write_phantom

    out = []
    for s in seeds:
        d = Path(root) / f"phantom_{int(s)}"
        if not (d / "gt" / "phantom.json").is_file():
            if progress:
                print(f"emkit train: generating phantom seed {s} of size {tuple(size)} in {d}", flush=True)
            ph = make_phantom(tuple(size), seed=int(s), resolution=tuple(resolution), defects=defects)
            write_phantom(ph, str(d), overwrite=True, progress=False)
        out.append(str(d))
    return out
