"""Packaging: compatible ranges in pyproject.toml, exact versions in constraints.txt (the lock file),
and the Makefile, environment.yml and binder/ all installing from that one lock file."""
from __future__ import annotations

import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _project() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        from pip._vendor import tomli as tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _constraints(path: Path = ROOT / "constraints.txt") -> dict[str, str]:
    pins: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert m, f"constraints.txt:{n}: not an exact pin 'name==version': {line!r}"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"constraints.txt:{n}: {name} pinned twice"
        pins[name] = m.group(2)
    return pins


def _lock_python() -> str:
    m = re.search(r"for Python (\d+\.\d+)", (ROOT / "constraints.txt").read_text())
    assert m, "constraints.txt must say which Python it was made for"
    return m.group(1)


def _writer():
    spec = importlib.util.spec_from_file_location("write_constraints", ROOT / "tools" / "write_constraints.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _requirements(extras=None) -> list[Requirement]:
    project = _project()
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra, lines in project["optional-dependencies"].items():
        if extras is None or extra in extras:
            reqs += [Requirement(r) for r in lines]
    return reqs


def _make_extras() -> set[str]:
    make = (ROOT / "Makefile").read_text()
    m = re.search(r"pip install -q -e '\.\[([a-z,]+)\]' -c constraints\.txt", make)
    assert m, "make install must install emkit with -c constraints.txt"
    return set(m.group(1).split(","))


# --- ranges and pins ---------------------------------------------------------------------------
def test_pyproject_declares_ranges_and_the_lock_pins_each_inside_them():
    pins = _constraints()
    reqs = _requirements()
    assert len(reqs) > 20
    pinned_exactly = [str(r) for r in reqs if any(s.operator in ("==", "===") for s in r.specifier)]
    # a library declares ranges; only torch (the CPU build the shipped nets were made with) is exact
    assert [canonicalize_name(Requirement(r).name) for r in pinned_exactly] == ["torch"], pinned_exactly
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in pins, f"pyproject requires {r} but constraints.txt has no pin for {name}"
        assert any(s.operator in (">=", "~=", "==") for s in r.specifier), f"{r}: no lower bound"
        assert r.specifier.contains(pins[name], prereleases=True), \
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's range {r}"
    # pitfall 4 of the stack notes: zfpy 1.0.1.post0 breaks numcodecs; the range must exclude it
    zfpy = next(r for r in reqs if canonicalize_name(r.name) == "zfpy")
    assert not zfpy.specifier.contains("1.0.1.post0") and zfpy.specifier.contains("1.0.1")
    # the pipeline config (pydantic + YAML) and its shipped configs are part of the package
    names = {canonicalize_name(r.name) for r in _requirements(extras=())}
    assert {"pydantic", "pyyaml", "numpy"} <= names and "torch" not in names  # torch is an extra
    assert "pipeline/configs/*.yaml" in (ROOT / "pyproject.toml").read_text()


def test_lock_file_parser_rejects_ranges_and_duplicates(tmp_path):
    bad = tmp_path / "c.txt"
    bad.write_text("numpy>=2.0\n")
    with pytest.raises(AssertionError, match="not an exact pin"):
        _constraints(bad)
    bad.write_text("numpy==2.4.6\nNumPy==2.4.5\n")
    with pytest.raises(AssertionError, match="pinned twice"):
        _constraints(bad)


def test_installed_versions_equal_the_lock():
    """What `make install` brought in (emkit's closure with the extras it installs) is exactly the lock."""
    pins = _constraints()
    installed = _writer().closure(tuple(sorted(_make_extras())))
    assert len(installed) > 100
    missing = sorted(set(installed) - set(pins))
    assert not missing, f"installed but not pinned in constraints.txt (run tools/write_constraints.py): {missing}"
    differ = {n: (v, pins[n]) for n, v in installed.items() if Version(v).public != Version(pins[n]).public}
    assert not differ, f"installed version != constraints.txt pin: {differ}"
    # every pin for a package that is installed at all (the bench extra may not be) matches too
    for name, version in pins.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        assert Version(have).public == Version(version).public, f"{name}: installed {have}, pinned {version}"
    if "torch" in installed:  # the CPU build, never a CUDA one
        assert Version(installed["torch"]).local == "cpu", installed["torch"]


# --- the installers: Makefile, conda, binder ----------------------------------------------------
def test_makefile_installs_from_the_lock_with_the_cpu_torch():
    make = (ROOT / "Makefile").read_text()
    torch_line = next(l for l in make.splitlines() if "pip install -q torch==" in l)
    assert "-c constraints.txt" in torch_line and "$(TORCH_INDEX)" in torch_line
    assert re.search(rf"^TORCH_INDEX \?= {re.escape(CPU_INDEX)}$", make, re.M)
    assert {"widgets", "notebook", "test", "nets"} <= _make_extras()
    assert re.search(r"pip install -q -e '\.\[bench\]' -c constraints\.txt", make)
    assert re.search(r"^\$\(STAMP\):.*constraints\.txt", make, re.M)  # a new lock re-installs
    torch = re.search(r"torch==([\d.]+)", torch_line).group(1)
    assert _constraints()["torch"] == torch


def test_conda_environment_agrees_with_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = [d for d in deps if isinstance(d, str) and d.startswith("python=")]
    assert python == [f"python={_lock_python()}"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert "-c constraints.txt" in pip  # conda runs pip from this file's folder: the root lock file
    assert f"--extra-index-url {CPU_INDEX}" in pip
    _check_pins(pip, "environment.yml")
    editable = [p for p in pip if p.startswith("-e .[")]
    assert len(editable) == 1 and set(editable[0][5:-1].split(",")) == _make_extras()


def test_binder_agrees_with_the_lock():
    lines = [l.strip() for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    cons = [l.split(None, 1)[1] for l in lines if l.startswith("-c ")]
    assert cons == ["../constraints.txt"]  # relative to binder/requirements.txt
    assert (ROOT / "binder" / cons[0]).resolve() == (ROOT / "constraints.txt").resolve()
    assert f"--extra-index-url {CPU_INDEX}" in lines
    _check_pins(lines, "binder/requirements.txt")
    editable = [l for l in lines if l.startswith("-e .[")]
    assert len(editable) == 1
    assert {"widgets", "notebook", "nets"} <= set(editable[0][5:-1].split(","))  # every notebook runs
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert runtime == f"python-{_lock_python()}"


def _check_pins(lines, where):
    """Requirement lines in an installer file pin exactly what constraints.txt pins."""
    pins = _constraints()
    reqs = [Requirement(l) for l in lines if not l.startswith("-")]
    assert "torch" in {canonicalize_name(r.name) for r in reqs}, f"{where} must install the CPU torch first"
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in pins, f"{where}: {r} has no pin in constraints.txt"
        assert r.specifier.contains(pins[name]), f"{where}: {r} disagrees with constraints.txt ({pins[name]})"


def test_lock_writer_reproduces_the_lock():
    """tools/write_constraints.py, run in the environment `make test` passes in, writes constraints.txt."""
    w = _writer()
    if "{}.{}".format(*sys.version_info[:2]) != _lock_python():
        pytest.fail(f"the lock is for Python {_lock_python()}, this is {sys.version.split()[0]}")
    text = w.render()
    pins = _constraints()
    made = {canonicalize_name(l.split("==")[0]): l.split("==")[1] for l in text.splitlines()
            if l and not l.startswith("#")}
    # waterz (bench extra) is pinned even where `make bench` never ran
    assert {n: v for n, v in pins.items() if n in made} == made
