"""Which net runs on an image: a shipped family name resolved by resolution, or a model as given.

``emkit infer boundary IMAGE …`` (and :func:`emkit.inference.infer_layers` with ``"boundary"``)
picks, among the shipped models of that family — ``boundary`` and ``boundary_*`` in
``emkit/models/`` (or ``$EMKIT_MODELS_DIR``) — the one whose training resolution is nearest the
image's as the net will see it, after the whole-factor averaging (smallest sum over z, y, x of
``|log(averaged image nm / net nm)|``, then the least averaging) among those the resampling rule
accepts (:func:`emkit.inference.resample.plan_resampling`), and says which. The same holds for
``semantic`` and ``cleft`` (the synaptic-cleft net: ``cleft``, ``cleft_*``). A full shipped name
(``boundary_iso``), a checkpoint path or a model object is used
as given. When no shipped model of the family fits, the error lists them with their resolutions
and says how to fine-tune one on the user's data.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import InputError
from .resample import MAX_DOWNSAMPLE, RESOLUTION_TOLERANCE, _fmt, plan_resampling

__all__ = ["FAMILIES", "is_family_name", "choose_model", "fine_tune_hint"]

#: Names that stand for a family of shipped models chosen by resolution.
FAMILIES = ("boundary", "semantic", "cleft")


def is_family_name(ref) -> bool:
    """True when ``ref`` is a family name (``boundary``, ``semantic``, ``cleft``) and not an existing path."""
    if not isinstance(ref, (str, os.PathLike)):
        return False
    s = os.fspath(ref)
    return s in FAMILIES and not Path(s).exists()


def fine_tune_hint(family: str = "boundary") -> str:
    task = family if family in FAMILIES else "boundary"
    return (f"Fine-tune a net on an annotated crop of your data: emkit train {task} --data YOUR_DATASET "
            f"--init {task} --out runs/tuned (the net adopts your data's resolution), then emkit infer "
            "runs/tuned/best.pt …; or allow more averaging with --max-downsample.")


def _distance(a, b) -> float:
    return sum(abs(math.log(x / y)) for x, y in zip(a, b))


def choose_model(family: str, image_resolution, *, tolerance: float = RESOLUTION_TOLERANCE,
                 max_downsample: int = MAX_DOWNSAMPLE, what: str = "the image") -> tuple[str, str, str]:
    """The shipped model of ``family`` for an image of ``image_resolution`` (z, y, x nm).

    Returns
    -------
    (name, path, note) : the chosen model's name, its checkpoint path, and a one-line note
        saying which was chosen and why (printed by ``emkit infer``).

    Raises
    ------
    InputError : no shipped model of the family, or none whose resolution the image can be
        brought to; the message lists the shipped models with their resolutions and how to
        fine-tune.
    """
    from ..nets import shipped_models

    models = shipped_models(family)
    if not models:
        from ..nets import available_models

        raise InputError(f"no shipped {family} model installed (available: {available_models() or 'none'}); "
                         "give a checkpoint path. " + fine_tune_hint(family))
    fits, refused = [], []
    for name, facts in models.items():
        try:
            plan = plan_resampling(facts["resolution"], image_resolution, tolerance=tolerance,
                                   max_downsample=max_downsample, warn=False)
        except InputError as exc:
            refused.append((name, facts, str(exc)))
            continue
        # judged at the resolution the net will see (after averaging), then by the least averaging
        seen = tuple(r * f for r, f in zip(image_resolution, plan.factors))
        fits.append((_distance(seen, facts["resolution"]), sum(f > 1 for f in plan.factors), name, facts, plan))
    listing = ", ".join(f"{n} {_fmt(f['resolution'])}" for n, f in models.items())
    if not fits:
        raise InputError(f"no shipped {family} model fits {what} at {_fmt(image_resolution)}: the shipped ones are "
                         f"{listing}; averaging by whole factors up to {max_downsample} per axis must bring the "
                         f"image within {tolerance:g}x of a net's resolution on every axis. "
                         + fine_tune_hint(family))
    fits.sort(key=lambda t: t[:3])
    *_, name, facts, plan = fits[0]
    note = (f"model {family} -> shipped {name}, the nearest to the image's {_fmt(image_resolution)} of: {listing}")
    return name, facts["path"], note
