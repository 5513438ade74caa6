"""The package imports light, and every command answers --help."""
import subprocess
import sys

import pytest

from emkit.cli.main import COMMANDS, build_parser, main


def test_import_is_light():
    code = ("import sys, emkit, emkit.io, emkit.geometry, emkit.cli.main as m; m.build_parser(); "
            "heavy = [x for x in ('torch', 'dask', 'distributed', 'neuroglancer', 'napari', 'ipywidgets') "
            "if x in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported at import time: {out.stdout}"


def test_every_command_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    names = set(sub.choices)
    assert {c.rstrip("_") for c in COMMANDS} <= names


@pytest.mark.parametrize("command", [c.rstrip("_") for c in COMMANDS])
def test_help_for_each_command(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"emkit {command}" in out and len(out.splitlines()) > 3


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_torch_is_a_declared_dependency_installed_by_make_test():
    """torch is the 'nets' extra, pinned to the CPU build the Makefile installs first, and `make test` installs
    that extra; CI runs with CI set, so tests that need torch, chromium or Xvfb fail there instead of skipping."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pyproject = (root / "pyproject.toml").read_text()   # (tomllib is Python 3.11+; emkit supports 3.10)
    extras = pyproject[pyproject.index("[project.optional-dependencies]"):]
    extras = extras[:extras.index("\n[", 1)]
    assert re.findall(r"^nets = (.*)$", extras, re.M) == ['["torch==2.13.0"]']
    make = (root / "Makefile").read_text()
    pins = re.findall(r"pip install -q torch==([\d.]+)", make)
    assert pins == ["2.13.0"]
    install = re.search(r"pip install -q -e '\.\[([a-z,]+)\]'", make)
    assert install and {"widgets", "notebook", "test", "nets"} <= set(install.group(1).split(","))
    assert make.index("torch==2.13.0") < make.index(install.group(0))   # the CPU build first
    ci = (root / ".ci" / "run").read_text()
    assert "export CI=true" in ci and ci.index("export CI=true") < ci.index("make test")


def test_skips_fail_under_ci(tmp_path):
    """Under CI (the CI variable set) a skipped test is a failure; outside CI it stays a skip."""
    import os
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    (tmp_path / "conftest.py").write_text((tests / "conftest.py").read_text())
    (tmp_path / "helpers_require.py").write_text((tests / "helpers_require.py").read_text())
    (tmp_path / "test_probe.py").write_text(
        "import pytest\nfrom helpers_require import require\n"
        "def test_missing():\n    require('no_such_module_for_emkit_tests')\n"
        "def test_skip():\n    pytest.skip('because')\n"
        "@pytest.mark.allow_skip_in_ci(reason='probe')\ndef test_allowed():\n    pytest.skip('allowed')\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(tmp_path),
           "-o", "markers=allow_skip_in_ci", "--rootdir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    local = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert local.returncode == 0 and "3 skipped" in local.stdout, local.stdout[-2000:]
    ci = subprocess.run(cmd, capture_output=True, text=True, env={**env, "CI": "true"}, cwd=tmp_path)
    assert ci.returncode == 1 and "2 failed, 1 skipped" in ci.stdout, ci.stdout[-2000:]
    assert "CI requires no_such_module_for_emkit_tests" in ci.stdout and "skipped under CI" in ci.stdout
