"""Assemble benchmarks/RESULTS.md from the JSON files the benchmark scripts write.

Each ``benchmarks/results/<name>.json`` holds ``{"title", "command", "machine", "date",
"rows": [{column: value, ...}, ...], "notes": "..."}``; this script turns each into a section
with a table. Run by ``make bench`` after the benchmarks.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def section(res: dict) -> str:
    lines = [f"## {res.get('title') or res.get('benchmark', '?')}", ""]
    if res.get("command"):
        lines += [f"Command: `{res['command']}`  ", f"Machine: {res.get('machine', '?')}, {res.get('date', '')}", ""]
    rows = res.get("rows", [])
    if rows:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for r in rows:
            lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
        lines.append("")
    for key in ("notes", "conclusion"):
        if res.get(key):
            lines += [res[key], ""]
    return "\n".join(lines)


def main() -> int:
    parts = ["# Benchmark results", "",
             "Written by `benchmarks/report.py` from `benchmarks/results/*.json`; each section names the "
             "command that measured it. Re-run everything with `make bench`.", ""]
    for f in sorted((HERE / "results").glob("*.json")):
        parts.append(section(json.loads(f.read_text())))
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
