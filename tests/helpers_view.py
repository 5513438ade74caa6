"""Helpers for the viewer tests: a small dataset with known content, a real headless Chromium
(driven by playwright, with Debian's chromium binary, never a downloaded browser), Xvfb, and
simple image statistics."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time

import numpy as np

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHAPE = (16, 128, 128)  # z, y, x


def make_view_dataset(root) -> dict:
    """Write a dataset folder with known content; return ``{name: path}`` and the arrays.

    * ``image`` (uint8): 12 Voronoi cells with dark (40) membranes, per-cell brightness
      110-230 and fine texture — grayscale structure.
    * ``gt/segmentation`` (uint64): the cell ids 1..12.
    * ``affinities`` (float32, gzipped chunks on disk): channel z = 1 where x < 64, channel x = 1
      where x >= 64, so Neuroglancer's RGB shader paints the left half red, the right half blue.
    * ``masks/fold`` (uint8): 1 in a square y, x in [40, 80).
    """
    from emkit.io import Layer

    rng = np.random.default_rng(7)
    z, y, x = np.mgrid[0:SHAPE[0], 0:SHAPE[1], 0:SHAPE[2]]
    seeds = rng.uniform(0, 128, size=(12, 2))
    d = (y[None] - seeds[:, 0, None, None, None]) ** 2 + (x[None] - seeds[:, 1, None, None, None]) ** 2
    order = np.sort(d, axis=0)
    cell = np.argmin(d, axis=0)
    membrane = np.sqrt(order[1]) - np.sqrt(order[0]) < 2.0
    bright = rng.uniform(110, 230, size=12)[cell]
    texture = 15 * np.sin(x / 2.3 + z) * np.cos(y / 3.1)
    img = np.where(membrane, 40, bright + texture).clip(0, 255).astype(np.uint8)
    seg = (cell + 1).astype(np.uint64)
    aff = np.zeros((3, *SHAPE), np.float32)
    aff[0, :, :, :64] = 1.0
    aff[2, :, :, 64:] = 1.0
    mask = np.zeros(SHAPE, np.uint8)
    mask[:, 40:80, 40:80] = 1

    paths = {"image": os.path.join(root, "image"), "gt/segmentation": os.path.join(root, "gt", "segmentation"),
             "affinities": os.path.join(root, "affinities"), "masks/fold": os.path.join(root, "masks", "fold")}
    Layer.create(paths["image"], "image", SHAPE).write(img)
    Layer.create(paths["gt/segmentation"], "segmentation", SHAPE).write(seg)
    Layer.create(paths["affinities"], "affinities", SHAPE, chunk_size=(8, 64, 64)).write(aff)
    Layer.create(paths["masks/fold"], "mask", SHAPE).write(mask)
    return {"paths": paths, "image": img, "segmentation": seg, "affinities": aff, "mask": mask}


def find_chromium() -> str | None:
    """Debian's chromium binary, or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


@contextlib.contextmanager
def chromium_page(url: str, user_data_dir, size=(1280, 720)):
    """A playwright page in headless Debian chromium (fresh profile in ``user_data_dir``)."""
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(user_data_dir), executable_path=exe, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": size[0], "height": size[1]})
        try:
            page = ctx.new_page()
            page.goto(url, wait_until="load", timeout=30_000)
            yield page
        finally:
            ctx.close()


def screenshot_array(page, path) -> np.ndarray:
    """Screenshot the page to ``path`` (PNG) and return it as an (h, w, 3) uint8 array."""
    from PIL import Image

    page.screenshot(path=str(path))
    return np.asarray(Image.open(path).convert("RGB"))


def poll(fn, timeout: float = 30.0, interval: float = 1.0):
    """Call ``fn()`` until it returns a truthy value or ``timeout`` seconds pass; return the last value."""
    end = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > end:
            return out
        time.sleep(interval)


def distinct_colours(rgb: np.ndarray, min_share: float = 0.01, bits: int = 3) -> int:
    """How many colours (quantised to ``bits`` per channel) each cover at least ``min_share`` of the pixels."""
    q = (rgb.reshape(-1, 3) >> (8 - bits)).astype(np.int32)
    codes = (q[:, 0] << (2 * bits)) | (q[:, 1] << bits) | q[:, 2]
    counts = np.bincount(codes)
    return int((counts >= min_share * len(codes)).sum())


def free_display() -> int | None:
    """A display number with no X server (no lock file, no socket)."""
    for n in range(90, 200):
        if not os.path.exists(f"/tmp/.X{n}-lock") and not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            return n
    return None


@contextlib.contextmanager
def xvfb(size=(1280, 1024)):
    """Run Xvfb on a free display; yield the DISPLAY string (``":N"``)."""
    exe = shutil.which("Xvfb")
    n = free_display()
    proc = subprocess.Popen([exe, f":{n}", "-screen", "0", f"{size[0]}x{size[1]}x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ok = poll(lambda: os.path.exists(f"/tmp/.X11-unix/X{n}") or proc.poll() is not None, 10, 0.1)
        if proc.poll() is not None or not ok:
            raise RuntimeError(f"Xvfb :{n} did not start: {proc.stderr.read().decode(errors='replace')[-500:]}")
        yield f":{n}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
