"""``emkit import`` and ``emkit export`` through the command line."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from emkit.cli.main import main
from emkit.io import Layer

RNG = np.random.default_rng(3)
EMKIT = Path(sys.executable).parent / "emkit"


def tree_hashes(path):
    return {os.path.relpath(os.path.join(r, f), path): hashlib.sha256(Path(r, f).read_bytes()).hexdigest()
            for r, _, fs in os.walk(path) for f in fs}


def one_line_error(capsys, command):
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"emkit {command}: error:"), err
    assert not any("Traceback" in line for line in err)
    return errors[0]


def test_import_export_round_trip(tmp_path, capsys):
    vol = RNG.integers(0, 256, (6, 40, 30)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "stack.tif", vol, compression="zlib")
    rc = main(["import", str(tmp_path / "stack.tif"), str(tmp_path / "img"), "--kind", "image",
               "--resolution", "50,4,4", "--offset", "1,2,3", "--chunk", "2,16,16", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "kind image" in out and "resolution 50,4,4 nm" in out and "offset 1,2,3" in out
    layer = Layer.open(tmp_path / "img")
    assert layer.chunk_size == (2, 16, 16)
    np.testing.assert_array_equal(layer.read(), vol)
    assert main(["export", str(tmp_path / "img"), str(tmp_path / "crop.npz"), "--bbox", "2:4,10:20,3:33"]) == 0
    with np.load(tmp_path / "crop.npz") as z:
        np.testing.assert_array_equal(z["data"], vol[1:3, 8:18, 0:30])
        assert z["offset"].tolist() == [2, 10, 3] and z["resolution"].tolist() == [50, 4, 4]
        assert str(z["kind"]) == "image"


def test_import_cremi_and_key(tmp_path, capsys):
    ids = RNG.integers(1, 50, (4, 16, 16)).astype(np.uint64)
    with h5py.File(tmp_path / "cremi.hdf", "w") as f:
        f.create_dataset("volumes/raw", data=ids.astype(np.uint8)).attrs["resolution"] = (40.0, 4.0, 4.0)
        f.create_dataset("volumes/labels/neuron_ids", data=ids).attrs["resolution"] = (40.0, 4.0, 4.0)
        f.create_dataset("volumes/labels/clefts", data=ids * 2).attrs["resolution"] = (40.0, 4.0, 4.0)
    assert main(["import", str(tmp_path / "cremi.hdf"), str(tmp_path / "seg"), "--kind", "segmentation",
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note: resolution (40.0, 4.0, 4.0)" in err
    seg = Layer.open(tmp_path / "seg")
    assert seg.resolution == (40, 4, 4) and seg.encoding == "compressed_segmentation"
    np.testing.assert_array_equal(seg.read(), ids)
    assert main(["import", str(tmp_path / "cremi.hdf"), str(tmp_path / "cl"), "--kind", "segmentation",
                 "--key", "volumes/labels/clefts", "--quiet"]) == 0
    np.testing.assert_array_equal(Layer.open(tmp_path / "cl").read(), ids * 2)
    assert main(["import", str(tmp_path / "cremi.hdf"), str(tmp_path / "m"), "--kind", "mask"]) == 2
    assert "--key" in one_line_error(capsys, "import")


def test_rescale_and_default_resolution_note(tmp_path, capsys):
    np.save(tmp_path / "f.npy", RNG.normal(0, 1, (4, 8, 8)).astype(np.float32))
    assert main(["import", str(tmp_path / "f.npy"), str(tmp_path / "a"), "--kind", "image", "--quiet"]) == 2
    assert "--rescale" in one_line_error(capsys, "import")
    assert main(["import", str(tmp_path / "f.npy"), str(tmp_path / "a"), "--kind", "image", "--rescale",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert Layer.open(tmp_path / "a").dtype == np.uint8
    assert main(["import", str(tmp_path / "f.npy"), str(tmp_path / "b"), "--kind", "image", "--rescale",
                 "--rescale-method", "minmax", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note:" in err and "default resolution (40.0, 8.0, 8.0)" in err
    assert Layer.open(tmp_path / "b").read().max() == 255


@pytest.mark.parametrize("args,match", [
    (["import", "{t}/missing.tif", "{t}/l", "--kind", "image"], "no such file"),
    (["import", "{t}/v.npy", "{t}/l", "--kind", "image", "--resolution", "4,4"], "--resolution"),
    (["import", "{t}/v.npy", "{t}/l", "--kind", "image", "--chunk", "0,8,8"], "--chunk"),
    (["import", "{t}/v.npy", "{t}/l", "--kind", "image", "--key", "raw"], "single array"),
    (["import", "{t}/w.npy", "{t}/l", "--kind", "probability"], "float"),  # int16 (uint8 0..255 is taken)
    (["import", "{t}/v.npy", "{t}/l", "--kind", "image", "--encoding", "fpzip"], "encoding 'fpzip'"),
    (["export", "{t}/nothing", "{t}/o.npz"], "no Precomputed layer"),
    (["export", "{t}/existing", "{t}/o.npy"], ".npz"),
    (["export", "{t}/existing", "{t}/o.npz", "--bbox", "0:9,0:4,0:4"], "outside"),
    (["export", "{t}/existing", "{t}/o.npz", "--bbox", "0:2,0:4"], "z0:z1"),
])
def test_bad_input_gives_one_line_errors(tmp_path, capsys, args, match):
    np.save(tmp_path / "v.npy", RNG.integers(0, 255, (2, 4, 4)).astype(np.uint8))
    np.save(tmp_path / "w.npy", RNG.integers(0, 255, (2, 4, 4)).astype(np.int16))
    Layer.create(tmp_path / "existing", "image", (2, 4, 4))
    rc = main([a.format(t=tmp_path) for a in args])
    assert rc == 2
    assert match in one_line_error(capsys, args[0])
    assert not os.path.exists(tmp_path / "l") and not os.path.exists(tmp_path / "o.npz")


def test_existing_outputs_need_overwrite(tmp_path, capsys):
    np.save(tmp_path / "v.npy", RNG.integers(0, 255, (4, 8, 8)).astype(np.uint8))
    base = ["import", str(tmp_path / "v.npy"), str(tmp_path / "l"), "--kind", "image", "--quiet"]
    assert main(base) == 0
    before = tree_hashes(tmp_path / "l")
    assert main(base) == 2
    assert "--overwrite" in one_line_error(capsys, "import")
    assert tree_hashes(tmp_path / "l") == before
    assert main(base[:4] + ["mask", "--overwrite", "--quiet"]) == 2  # values are not 0/1: refused first
    assert tree_hashes(tmp_path / "l") == before
    assert main(base + ["--overwrite", "--resolution", "30,6,6"]) == 0
    assert Layer.open(tmp_path / "l").resolution == (30, 6, 6)
    assert main(["export", str(tmp_path / "l"), str(tmp_path / "o.npz")]) == 0
    stamp = (tmp_path / "o.npz").read_bytes()
    assert main(["export", str(tmp_path / "l"), str(tmp_path / "o.npz")]) == 2
    assert (tmp_path / "o.npz").read_bytes() == stamp
    assert main(["export", str(tmp_path / "l"), str(tmp_path / "o.npz"), "--bbox", "0:1,0:1,0:1",
                 "--overwrite"]) == 0
    with np.load(tmp_path / "o.npz") as z:
        assert z["data"].shape == (1, 1, 1)


def test_real_em_crop_through_cli(tmp_path, capsys):
    src = Path(__file__).parent / "data" / "real_em" / "isbi2012_sstem_crop_8x128x128.tif"
    assert main(["import", str(src), str(tmp_path / "em"), "--kind", "image", "--resolution", "50,4,4",
                 "--quiet"]) == 0
    np.testing.assert_array_equal(Layer.open(tmp_path / "em").read(), tifffile.imread(src))


def test_installed_command_bad_kind(tmp_path):
    assert EMKIT.exists(), f"the emkit script is missing beside {sys.executable}"
    np.save(tmp_path / "v.npy", np.zeros((2, 4, 4), np.uint8))
    proc = subprocess.run([str(EMKIT), "import", str(tmp_path / "v.npy"), str(tmp_path / "l"), "--kind", "bogus"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["emkit import: error: unknown layer kind 'bogus'; expected one of image, affinities, "
                     "probability, segmentation, mask"]
    assert not os.path.exists(tmp_path / "l")
    helptext = subprocess.run([str(EMKIT), "import", "--help"], capture_output=True, text=True, timeout=120)
    assert helptext.returncode == 0 and "--rescale" in helptext.stdout and "--key" in helptext.stdout
