"""What every emkit training run shares: its device, its folder (``last.pt``, ``best.pt``,
``log.json``) and how a resumed run gets its own configuration back.

Used by the 2D nets' training loops (:mod:`emkit.detect.train`, :mod:`emkit.align.fieldnet_train`);
torch is imported inside the functions.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError

__all__ = ["start_run", "saved_train_config"]


def start_run(out_dir, *, resume: bool, device: str, threads: int | None, seed: int):
    """Set torch's threads and seed, pick the device and check the run folder.

    Parameters
    ----------
    out_dir : the run folder (made when missing).
    resume : continue the run there (its ``last.pt`` must exist); otherwise it must not hold one.
    device : ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (a GPU when torch sees one).
    threads : torch CPU threads (None or 0: torch's default).
    seed : torch's seed.

    Returns
    -------
    ``(device, out, last, best)``: the device name and the folder's paths.
    """
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but torch sees no CUDA device; use --device cpu")
    out = Path(out_dir)
    last, best = out / "last.pt", out / "best.pt"
    if not resume and last.exists():
        raise InputError(f"{out} already holds a training run (last.pt); give another --out or --resume")
    if resume and not last.is_file():
        raise InputError(f"cannot resume: {last} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    return device, out, last, best


def saved_train_config(out_dir, changes: dict, allowed, fields, what: str) -> dict:
    """The training configuration saved in ``out_dir/last.pt`` as keyword arguments, with
    ``changes`` applied (``None`` keeps the saved value) and ``out_dir`` set.

    Parameters
    ----------
    allowed : the options a resume may change (others are refused, naming them).
    fields : the configuration class's field names (saved keys outside them are dropped).
    what : the run's name in messages (e.g. ``"defect-net"``).
    """
    from ..nets.checkpoint import load_checkpoint

    last = Path(str(out_dir)) / "last.pt"
    if not last.is_file():
        raise InputError(f"cannot resume: {last} does not exist")
    bad = sorted(set(changes) - set(allowed))
    if bad:
        raise InputError(f"a resumed {what} run cannot change {', '.join(bad)} (only {', '.join(allowed)})")
    saved = (load_checkpoint(last).get("extra") or {}).get("train_config")
    if not isinstance(saved, dict):
        raise InputError(f"cannot resume: {last} holds no train_config")
    kw = {k: v for k, v in saved.items() if k in fields}
    kw.update({k: v for k, v in changes.items() if v is not None})
    kw["out_dir"] = str(out_dir)
    return kw
