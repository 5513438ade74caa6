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
