"""Training step of the boundary net per resolution on CPU: emkit's RSUNet against plain torch.

One step = forward + BCE + backward + AMSGrad on a random patch, batch 1 (the data pipeline is
``training_speed.py``'s subject). Two patches of the same voxel count (262,144):

* anisotropic 40×8×8 nm, patch 16×128×128 (the phantom preset);
* isotropic 10×10×10 nm, patch 64×64×64 (FIB-SEM).

Rows per patch: emkit's RSUNet (widths 8, 16, 32, 64; its ``Conv3d`` keeps torch's CPU on the
oneDNN kernels), the same net with torch's own ``nn.Conv3d`` (plain torch: the slow reference
kernel wherever torch's heuristic picks it), and a stock 3D U-Net (two 3×3×3 conv + BatchNorm +
ReLU per level, max-pool 2, transposed-conv up, widths f·(1, 2, 4, 8) with f chosen for about the
same parameter count). The variants are timed in turns (round robin) so that other load on the
machine falls on all of them alike. Issue 13 §3 goals: an isotropic step within 1.2× of an
anisotropic one of the same voxel count, and within 1.5× of the stock U-Net.

    python benchmarks/net_speed.py [--steps 5] [--threads 1]

Writes results/net_speed.json (RESULTS.md via report.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _cli import machine  # noqa: E402


def stock_unet(f: int, levels: int = 4):
    """A stock 3D U-Net (Çiçek et al. 2016 layout, 'same' padding): widths f·2^l."""
    import torch
    from torch import nn

    def block(a, b):
        return nn.Sequential(nn.Conv3d(a, b, 3, padding=1), nn.BatchNorm3d(b), nn.ReLU(inplace=True),
                             nn.Conv3d(b, b, 3, padding=1), nn.BatchNorm3d(b), nn.ReLU(inplace=True))

    class UNet3D(nn.Module):
        def __init__(self):
            super().__init__()
            w = [f * 2 ** i for i in range(levels)]
            self.down = nn.ModuleList([block(1, w[0])] + [block(w[i - 1], w[i]) for i in range(1, levels)])
            self.up = nn.ModuleList([nn.ConvTranspose3d(w[i], w[i - 1], 2, stride=2) for i in range(levels - 1, 0, -1)])
            self.dec = nn.ModuleList([block(2 * w[i - 1], w[i - 1]) for i in range(levels - 1, 0, -1)])
            self.out = nn.Conv3d(w[0], 3, 1)

        def forward(self, x):
            skips = []
            for i, b in enumerate(self.down):
                if i:
                    x = torch.nn.functional.max_pool3d(x, 2)
                x = b(x)
                skips.append(x)
            for up, dec, s in zip(self.up, self.dec, reversed(skips[:-1])):
                x = dec(torch.cat([up(x), s], 1))
            return self.out(x)

    return UNet3D()


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    a = ap.parse_args(argv)

    import torch
    from torch import nn

    from emkit.nets import NetConfig, RSUNet
    from emkit.nets.rsunet import Conv3d

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cases = {"anisotropic 40x8x8 nm, patch 16x128x128": ((40, 8, 8), (16, 128, 128)),
             "isotropic 10x10x10 nm, patch 64x64x64": ((10, 10, 10), (64, 64, 64))}
    variants = {}
    for case, (res, patch) in cases.items():
        cfg = NetConfig(widths=(8, 16, 32, 64), resolution=res, patch_size=patch)
        net = RSUNet(cfg)
        plain = RSUNet(cfg)
        plain.load_state_dict(net.state_dict())
        for m in plain.modules():
            if isinstance(m, Conv3d):
                m.__class__ = nn.Conv3d          # torch's own convolution: same weights, torch's kernel choice
        variants[(case, "emkit RSUNet (emkit Conv3d)")] = (net, patch, cfg.out_channels)
        variants[(case, "same RSUNet, plain torch nn.Conv3d")] = (plain, patch, cfg.out_channels)
        if case.startswith("isotropic"):
            target = n_params(net)
            f = min(range(4, 17), key=lambda f: abs(n_params(stock_unet(f)) - target))
            variants[(case, f"stock 3D U-Net (BatchNorm, f={f})")] = (stock_unet(f), patch, 3)
    state = {}
    for key, (m, patch, oc) in variants.items():
        m.train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-4, amsgrad=True)
        x = torch.rand(1, 1, *patch)
        y = (torch.rand(1, oc, *patch) > 0.5).float()
        state[key] = (m, opt, x, y, [])

    def step(key):
        m, opt, x, y, _ = state[key]
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x)[:, :y.shape[1]], y)
        loss.backward()
        opt.step()

    for key in state:  # warm-up
        step(key)
    for _ in range(a.steps):
        for key in state:
            t = time.perf_counter()
            step(key)
            state[key][4].append(time.perf_counter() - t)
    rows = []
    for (case, variant), (m, *_rest, ts) in state.items():
        med = statistics.median(ts)
        rows.append({"patch": case, "net": variant, "parameters": n_params(m), "s/step (median)": round(med, 3),
                     "min": round(min(ts), 3), "steps/s": round(1 / med, 2)})
        print(rows[-1], flush=True)
    med = {(r["patch"].split()[0], r["net"].split()[0]): r["s/step (median)"] for r in rows}
    iso_vs_aniso = med[("isotropic", "emkit")] / med[("anisotropic", "emkit")]
    iso_vs_stock = med[("isotropic", "emkit")] / med[("isotropic", "stock")]
    iso_vs_plain = med[("isotropic", "same")] / med[("isotropic", "emkit")]
    res = {"title": "Training step per resolution (CPU): emkit RSUNet vs plain torch and a stock 3D U-Net",
           "command": f".venv/bin/python benchmarks/net_speed.py --steps {a.steps} --threads {a.threads}",
           "machine": machine(), "date": datetime.date.today().isoformat(), "rows": rows,
           "ratios": {"isotropic / anisotropic (emkit)": round(iso_vs_aniso, 2),
                      "isotropic emkit / stock U-Net": round(iso_vs_stock, 2),
                      "isotropic plain torch / emkit (speed-up)": round(iso_vs_plain, 2)},
           "notes": (f"Forward + BCE + backward + AMSGrad, batch 1, random tensors, {a.threads} torch thread(s); median "
                     f"of {a.steps} steps after one warm-up, the variants in turns so that other load falls on all "
                     f"alike (load average at the end {os.getloadavg()[0]:.1f}). Same voxel count in both patches "
                     f"(262,144). Ratios: isotropic/anisotropic step (emkit) {iso_vs_aniso:.2f} (goal <= 1.2); "
                     f"isotropic emkit / stock U-Net {iso_vs_stock:.2f} (goal <= 1.5); emkit's Conv3d speeds the "
                     f"isotropic step {iso_vs_plain:.1f}x over torch's own nn.Conv3d (torch picks its slow "
                     "reference kernel for batch 1 when C*z*y <= 20480; emkit permutes the axes of thin patches "
                     "and runs isotropic ones as a batch of two halves, see emkit.nets.rsunet.Conv3d).")}
    (HERE / "results" / "net_speed.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res["ratios"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
