"""Training of the nets: patch sampling, targets, losses, augmentation and the training loop.

::

    from emkit.train import TrainConfig, train
    result = train(TrainConfig(task="boundary", data=("phantom_dir",), iterations=1000, out_dir="run"))

Submodules: :mod:`.sampler` (dataset folders → random patches), :mod:`.targets` (affinities,
myelin, semantic one-hot, synaptic clefts + loss masks), :mod:`.losses` (BCE with inverse margin and class
rebalancing), :mod:`.augment` (the paper's augmentations), :mod:`.loop` (TrainConfig, Trainer,
train), :mod:`.presets` (``phantom``: boundary, semantic and cleft nets).
torch is imported only when a net is built or trained.
"""
__all__ = ["TrainConfig", "TrainResult", "Trainer", "train", "adapted_model", "PatchSampler", "open_dataset",
           "make_targets"]

_LAZY = {"TrainConfig": "loop", "TrainResult": "loop", "Trainer": "loop", "train": "loop", "adapted_model": "loop",
         "PatchSampler": "sampler", "open_dataset": "sampler", "make_targets": "targets"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
