"""Replay the first iterations of a shipped net's recorded training command, and record them.

A shipped net's ``emkit/models/<NAME>.json`` holds the ``command`` that trained it. This script
runs that command again for a few iterations — the same arguments, except ``--iterations N``,
``--threads 1`` (one thread: deterministic on the CPU) and a scratch ``--out`` — and compares the
per-iteration training losses with the ``replay`` record in the json (``--check``), or writes that
record (``--record``): the replayed command, the losses (total and per head), the git revision
and a fingerprint of the sources that determine training, so that a mismatch can tell "the code
changed" from "the same code gives other numbers here".

``tests/test_model_provenance.py`` runs the check. When training changes on purpose (targets,
sampler, augmentations, net, phantom), re-record with
``.venv/bin/python tools/replay_training.py boundary --record`` and commit the json.

Usage::

    python tools/replay_training.py boundary --check      # exit 1 if the losses differ
    python tools/replay_training.py boundary --record     # (re)write the "replay" record
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "emkit" / "models"
#: sources whose content decides the losses of a replay (hashed into ``source_fingerprint``).
SOURCES = ("emkit/train", "emkit/nets", "emkit/phantom", "emkit/defects.py", "emkit/io", "emkit/geometry.py")
DEFAULT_ITERATIONS = 3
DEFAULT_TOLERANCE = 1e-5


def source_fingerprint(root: Path = ROOT) -> str:
    """sha256 over the path and content of every ``*.py`` under :data:`SOURCES` (sorted)."""
    h = hashlib.sha256()
    for entry in SOURCES:
        p = root / entry
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def git_revision(root: Path = ROOT) -> str:
    """``HEAD``'s hash, with ``+uncommitted changes`` when the training sources differ from it."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *SOURCES], cwd=root, capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return rev + (" + uncommitted changes to the training sources" if dirty else "") if rev else "unknown (no git)"


def replay_args(command: str, out_dir, iterations: int) -> list[str]:
    """The arguments of ``emkit …`` for a replay of the recorded ``command``: the same, except
    ``--iterations``, ``--threads 1``, ``--out OUT_DIR`` and ``--no-progress``."""
    words = shlex.split(command.split(" (")[0])  # a note in parentheses may follow the command
    if words[:2] != ["emkit", "train"]:
        raise ValueError(f"not an `emkit train` command: {command!r}")
    args, skip = [], False
    for i, w in enumerate(words[1:]):
        if skip:
            skip = False
            continue
        if w in ("--iterations", "--threads", "--out"):
            skip = True
            continue
        if w in ("--no-progress", "--resume"):
            continue
        args.append(w)
    return [*args, "--out", str(out_dir), "--iterations", str(int(iterations)), "--threads", "1", "--no-progress"]


def display_command(args: list[str]) -> str:
    out = list(args)
    out[out.index("--out") + 1] = "OUT"
    return "emkit " + " ".join(shlex.quote(a) for a in out)


def run_replay(command: str, iterations: int = DEFAULT_ITERATIONS, work_dir=None) -> dict:
    """Run the replay in a subprocess (one torch thread); return its losses, head losses and seconds."""
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        out = Path(tmp) / "run"
        args = replay_args(command, out, iterations)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "emkit.cli.main", *args], cwd=tmp, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(f"replay `{display_command(args)}` failed (exit {proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        log = json.loads((out / "log.json").read_text())
    tr = log["train"]
    return {"command": display_command(args), "iterations": int(iterations),
            "iteration": [int(i) for i in tr["iteration"]], "losses": [float(v) for v in tr["loss"]],
            "head_losses": {k: [float(v) for v in vs] for k, vs in tr["heads"].items()},
            "seconds": round(seconds, 1)}


def compare(record: dict, got: dict) -> list[str]:
    """What differs between a ``replay`` record and a fresh replay (empty: they agree)."""
    tol = float(record.get("tolerance", DEFAULT_TOLERANCE))
    problems = []
    if got["iteration"] != list(range(1, record["iterations"] + 1)):
        problems.append(f"iterations run {got['iteration']}, expected 1..{record['iterations']}")
    pairs = [("loss", record["losses"], got["losses"])]
    pairs += [(f"loss_{k}", v, got["head_losses"].get(k, [])) for k, v in record["head_losses"].items()]
    for name, want, have in pairs:
        if len(want) != len(have) or any(abs(a - b) > tol * max(1.0, abs(a)) for a, b in zip(want, have)):
            problems.append(f"{name}: recorded {want}, replayed {have}")
    return problems


def explain(record: dict, problems: list[str]) -> str:
    now = source_fingerprint()
    why = ("the training sources changed since the record (source_fingerprint differs): if that change is "
           "intended, re-record with `python tools/replay_training.py NAME --record`"
           if now != record.get("source_fingerprint") else
           "the training sources are the ones recorded (same fingerprint): the same code gives other losses here "
           "(non-determinism, or another torch/numpy build)")
    return "replay does not match the record: " + "; ".join(problems) + f". {why}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="shipped model name (emkit/models/<name>.json)")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="replay and compare with the recorded losses")
    mode.add_argument("--record", action="store_true", help="replay and write the 'replay' record")
    ap.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = ap.parse_args(argv)
    meta_path = MODELS / f"{args.name}.json"
    meta = json.loads(meta_path.read_text())
    if args.check:
        rec = meta.get("replay")
        if not rec:
            sys.exit(f"{meta_path} has no 'replay' record; write one with --record")
        got = run_replay(meta["command"], rec["iterations"])
        problems = compare(rec, got)
        print(json.dumps({"recorded": rec["losses"], "replayed": got["losses"], "seconds": got["seconds"]}))
        if problems:
            print(explain(rec, problems), file=sys.stderr)
            return 1
        return 0
    got = run_replay(meta["command"], args.iterations)
    again = run_replay(meta["command"], args.iterations)
    if compare({**got, "tolerance": 0.0}, again):
        sys.exit(f"two replays differ (not deterministic here): {got['losses']} vs {again['losses']}; nothing recorded")
    import platform

    import numpy
    import torch

    meta["replay"] = {
        "what": ("the first iterations of `command` (above) run again with the current code: the same arguments "
                 "except --iterations, --threads 1 (deterministic), a scratch --out and --no-progress. "
                 "tests/test_model_provenance.py replays it and requires the same losses (within tolerance, relative "
                 "above 1)."),
        "command": got["command"], "iterations": got["iterations"], "losses": got["losses"],
        "head_losses": got["head_losses"], "tolerance": DEFAULT_TOLERANCE,
        "git_revision": git_revision(), "source_fingerprint": source_fingerprint(),
        "recorded": datetime.date.today().isoformat(),
        "environment": f"Python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}, "
                       f"{platform.machine()}",
        "wall_seconds_per_replay": got["seconds"],
    }
    newline = "\n" if meta_path.read_text().endswith("\n") else ""
    meta_path.write_text(json.dumps(meta, indent=1) + newline)
    print(f"recorded {meta_path}: replay losses {got['losses']} ({got['seconds']} s, twice identical)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
