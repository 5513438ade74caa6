"""Training iterations per second: an emkit Trainer step against plain torch on the same net.

emkit's step = sample a patch from Precomputed layers + augment + targets + loss + backward +
AMSGrad; plain torch = forward + BCE + backward + AMSGrad of the same RSUNet on a random tensor
of the same patch. The difference is the data pipeline's cost. Net and patch: the shipped
boundary preset (widths 8, 16, 32, 64; patch 16×128×128; 2 threads). Writes results/training.json.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = 20


def main() -> int:
    import torch

    from emkit.phantom import make_phantom, write_phantom
    from emkit.train.loop import TrainConfig, Trainer

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as d:
        write_phantom(make_phantom((64, 256, 256), seed=101), d + "/ph", progress=False)
        write_phantom(make_phantom((32, 256, 256), seed=199), d + "/val", progress=False)
        cfg = TrainConfig(task="boundary", data=(d + "/ph",), val_data=(d + "/val",), iterations=STEPS, widths=(8, 16, 32, 64),
                          patch_size=(16, 128, 128), augment="boundary", threads=2, val_interval=10**6,
                          checkpoint_interval=10**6, progress=False, seed=0)
        tr = Trainer(cfg)
        tr.step()  # warm-up
        t = time.perf_counter()
        for _ in range(STEPS):
            tr.step()
        emkit_s = (time.perf_counter() - t) / STEPS
        model = tr.model
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
        x = torch.rand(1, 1, 16, 128, 128)
        y = (torch.rand(1, model.config.out_channels, 16, 128, 128) > 0.5).float()
        model.train()
        t = time.perf_counter()
        for _ in range(STEPS + 1):
            if _ == 1:
                t = time.perf_counter()
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            opt.step()
        torch_s = (time.perf_counter() - t) / STEPS
    rows = [{"method": "emkit Trainer.step (sampler + augment + targets + loss + AMSGrad)", "s/iteration": round(emkit_s, 3),
             "iterations/s": round(1 / emkit_s, 2)},
            {"method": "plain torch (forward + BCE + backward + AMSGrad, random tensors)", "s/iteration": round(torch_s, 3),
             "iterations/s": round(1 / torch_s, 2)}]
    print(rows)
    res = {"title": "Training speed (boundary preset, CPU)", "command": ".venv/bin/python benchmarks/training_speed.py",
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
           "date": datetime.date.today().isoformat(), "rows": rows,
           "notes": (f"RSUNet widths (8, 16, 32, 64), patch 16x128x128, batch 1, 2 torch threads, mean of {STEPS} steps after "
                     f"one warm-up; load average at the end {os.getloadavg()[0]:.1f}. The shipped boundary net took "
                     "2,500 such steps (emkit/models/boundary.json).")}
    (HERE / "results" / "training.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
