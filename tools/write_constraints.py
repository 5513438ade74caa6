"""Write ``constraints.txt``: the exact versions of emkit's tested environment (the lock file).

``pyproject.toml`` declares compatible ranges (what ``pip install emkit`` asks of a user's
environment); ``constraints.txt`` pins every package that ``make install`` brings in — emkit's
dependencies, its extras and all of their dependencies — to the version installed in the
environment this runs in (the one ``make test`` passed in). ``make install``, ``environment.yml``
and ``binder/requirements.txt`` install with ``-c constraints.txt``; tests/test_packaging.py
checks the pins against the ranges and against what is installed.

Usage (after changing a range or upgrading a package in ``.venv`` and running ``make test``)::

    .venv/bin/python tools/write_constraints.py            # rewrites constraints.txt
    .venv/bin/python tools/write_constraints.py --check    # exit 1 if it would change
"""
from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("widgets", "notebook", "test", "nets", "cluster", "bench")
HEADER = """\
# Exact versions of emkit's tested environment: `make test` (and CI) run with these.
# pyproject.toml declares the compatible ranges (`pip install emkit` uses only those); this file
# pins the whole closure of emkit[{extras}] for Python {py} on Linux x86-64.
# Used by: Makefile (`pip install -c constraints.txt`), environment.yml, binder/requirements.txt.
# torch is the CPU build (2.13.0+cpu from https://download.pytorch.org/whl/cpu): a constraint
# `torch==2.13.0` accepts the +cpu local version.
# Regenerate with `python tools/write_constraints.py` (from the environment `make test` passed in).
"""


def project_requirements(extras=EXTRAS) -> list[Requirement]:
    """emkit's own requirements and those of ``extras``, read from pyproject.toml."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def _bench_only() -> set[str]:
    """The bench extra's own requirements (canonical names): kept pinned, but absent where `make bench` never ran."""
    return {canonicalize_name(r.name) for r in project_requirements(("bench",))} - \
        {canonicalize_name(r.name) for r in project_requirements(tuple(e for e in EXTRAS if e != "bench"))}


def closure(extras=EXTRAS) -> dict[str, str]:
    """``{canonical name: installed version}`` of emkit[extras]'s requirements and everything they need."""
    env = default_environment()
    todo = [(r.name, tuple(sorted(r.extras))) for r in project_requirements(extras)
            if r.marker is None or r.marker.evaluate({**env, "extra": ""})]
    seen: dict[str, str] = {}
    done: set[tuple[str, str]] = set()
    while todo:
        name, want = todo.pop()
        key = canonicalize_name(name)
        try:
            dist = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            if key in _bench_only():  # the bench extra (waterz builds C++): absent where `make bench` never ran
                continue
            raise LookupError(f"{name} is required but not installed: run `make install` first") from None
        seen[key] = dist.version
        for extra in ("",) + tuple(want):
            if (key, extra) in done:
                continue
            done.add((key, extra))
            for line in dist.requires or []:
                req = Requirement(line)
                if req.marker is None:
                    if extra:
                        continue  # taken with extra ""
                elif not req.marker.evaluate({**env, "extra": extra}):
                    continue
                todo.append((req.name, tuple(sorted(req.extras))))
    return seen


def render() -> str:
    pins = closure()
    pins.pop("emkit", None)
    py = "{}.{}".format(*sys.version_info[:2])
    lines = [HEADER.format(extras=",".join(EXTRAS), py=py)]
    for name in sorted(pins):
        version = pins[name].split("+", 1)[0]  # 2.13.0+cpu -> 2.13.0 (the constraint accepts +cpu)
        lines.append(f"{name}=={version}\n")
    return "".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if constraints.txt differs")
    ap.add_argument("--out", default=str(ROOT / "constraints.txt"))
    a = ap.parse_args(argv)
    try:
        text = render()
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(a.out)
    if a.check:
        same = out.exists() and out.read_text() == text
        print("constraints.txt is up to date" if same else "constraints.txt differs from this environment")
        return 0 if same else 1
    out.write_text(text)
    print(f"wrote {out} ({sum(1 for l in text.splitlines() if l and not l.startswith('#'))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
