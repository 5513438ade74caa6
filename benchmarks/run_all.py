"""Run every benchmark script in this folder, then assemble RESULTS.md (``make bench``)."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all.py", "report.py", "real_em.py", "gpu_check.py"}  # gpu_check needs a GPU (tools/device_run.sh)

for script in sorted(HERE.glob("*.py")):
    if script.name in SKIP or script.name.startswith("_"):
        continue
    print(f"== {script.name}", flush=True)
    subprocess.run([sys.executable, str(script)], check=True)
subprocess.run([sys.executable, str(HERE / "report.py")], check=True)
