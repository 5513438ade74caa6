"""Running README.md's tour and the commands' --help examples as a user types them.

Shared by tests/test_readme.py and tests/test_cli_help.py. The tour runs once per test session in
``<pytest basetemp>/tour`` (a folder that plays the repository root: ``.venv/bin/activate`` puts
this Python's ``emkit`` on PATH, ``tests/data`` links to the repository's), line by line with
bash; the help examples then run in the same folder, after it.

Only the sizes in :data:`SUBSTITUTIONS` are changed, so the run stays small; every one of them
must occur in the text it is applied to (a README edit cannot silently leave a big size in).
``emkit view`` lines without ``--no-block`` serve until Ctrl-C: they are started, the link they
print is awaited, then they get SIGINT (Ctrl-C) and must exit 0.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: (as written, as run): sizes the tests shrink. Nothing else in a command is changed.
SUBSTITUTIONS = [
    ("--size 64,512,512", "--size 16,128,128"),    # the tour's phantom -> a 16x128x128 one
    ("--size 64,256,256", "--size 16,128,128"),    # help examples' phantoms/demo
    ("--iterations 200", "--iterations 2 --patch 16,96,96"),  # 2 training steps; a patch the small phantom holds
    ("(32, 256, 256)", "(16, 128, 128)"),          # the README's Python snippet
    ("--bbox 0:32,0:512,0:512", "--bbox 0:8,0:128,0:128"),  # tune on half of the (small) phantom
    ("input.phantom.shape=64,256,256", "input.phantom.shape=16,128,128"),   # emkit run / status of the shipped phantom config
]

LINE_TIMEOUT = 600


def substitute(text: str) -> tuple[str, list[str]]:
    """``text`` with the :data:`SUBSTITUTIONS` applied, and the ones used."""
    used = []
    for a, b in SUBSTITUTIONS:
        if a in text:
            text = text.replace(a, b)
            used.append(a)
    return text, used


def section(markdown: str, heading: str) -> str:
    """The text of a ``## heading`` section (up to the next ``## ``)."""
    start = markdown.index(f"\n## {heading}\n")
    nxt = markdown.find("\n## ", start + 1)
    return markdown[start: nxt if nxt >= 0 else len(markdown)]


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def tour_blocks(readme: str | None = None) -> list[str]:
    """The bash blocks of README's "A short tour", except those marked 'not run by tests/test_readme.py'."""
    text = section(readme or README.read_text(), "A short tour")
    return [b for b in code_blocks(text, "bash") if "not run by tests/test_readme.py" not in b]


def tour_python(readme: str | None = None) -> list[str]:
    return code_blocks(section(readme or README.read_text(), "A short tour"), "python")


def commands(block: str) -> list[str]:
    """A bash block's command lines (comments and blank lines dropped; trailing comments kept: bash drops them)."""
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def prepare(root: Path) -> Path:
    """Make ``root`` play the repository root: .venv/bin/{activate,emkit} for this Python, tests/data."""
    root.mkdir(parents=True, exist_ok=True)
    bindir = root / ".venv" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    emkit = bindir / "emkit"
    emkit.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m emkit.cli.main "$@"\n')
    emkit.chmod(0o755)
    (bindir / "activate").write_text(f'export PATH="{bindir}:$PATH"\n')
    data = root / "tests" / "data"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        data.symlink_to(REPO / "tests" / "data", target_is_directory=True)
    return root


def _env() -> dict:
    env = dict(os.environ)
    env.pop("EMKIT_MODELS_DIR", None)  # the shipped models, as a user has them
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _serve_and_stop(cmd: str, root: Path, prelude: str, timeout: float = 120) -> tuple[int, str]:
    """Start a serving command (emkit view), wait for the link it prints and for it to say it
    serves ("press Ctrl-C"), then press Ctrl-C (SIGINT to its process group)."""
    proc = subprocess.Popen(["bash", "-c", f"{prelude}\n{cmd}"], cwd=root, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out, link = [], None
    t0 = time.monotonic()
    try:
        for line in proc.stdout:
            out.append(line)
            if line.startswith("http://") or line.startswith("https://"):
                link = line.strip()
            if link and "Ctrl-C" in line:
                break
            if time.monotonic() - t0 > timeout:
                link = None
                break
        if link is None:
            proc.wait(timeout=10)
            return proc.returncode if proc.returncode else 1, "".join(out) + "\n(no viewer link printed)"
        time.sleep(0.5)  # let it enter its serving loop
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        out.append(rest)
        return proc.returncode, "".join(out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_lines(lines: list[str], root: Path, prelude: str = "") -> list[dict]:
    """Run command lines in order in ``root`` with bash; ``source`` lines join the prelude of the
    following ones. Returns one record per line (command as run, rc, seconds, output tail);
    stops at the first failure."""
    records = []
    for line in lines:
        cmd, _ = substitute(line)
        t0 = time.monotonic()
        if re.match(r"^emkit view\b", cmd) and "--no-block" not in cmd:
            rc, out = _serve_and_stop(cmd, root, prelude)
        else:
            try:
                p = subprocess.run(["bash", "-c", f"{prelude}\n{cmd}"], cwd=root, env=_env(), capture_output=True,
                                   text=True, timeout=LINE_TIMEOUT)
                rc, out = p.returncode, p.stdout + p.stderr
            except subprocess.TimeoutExpired as exc:
                rc, out = 124, f"timed out after {LINE_TIMEOUT} s: {exc}"
        records.append({"line": line, "ran": cmd, "rc": rc, "seconds": round(time.monotonic() - t0, 1),
                        "output": out[-3000:]})
        if rc != 0:
            break
        if cmd.startswith("source "):
            prelude += cmd + "\n"
    return records


def run_tour(base: Path) -> tuple[Path, list[dict]]:
    """Run README's tour once per session under ``base/tour``; later calls return the recorded run."""
    root = base / "tour"
    record = base / "tour.json"
    if record.is_file():
        return root, json.loads(record.read_text())
    prepare(root)
    lines = [ln for block in tour_blocks() for ln in commands(block)]
    records = run_lines(lines, root)
    record.write_text(json.dumps(records, indent=1))
    return root, records


def failure_message(records: list[dict]) -> str:
    bad = records[-1]
    return (f"`{bad['line']}` (run as `{bad['ran']}`) exited {bad['rc']} after {bad['seconds']} s:\n"
            f"{bad['output']}")
