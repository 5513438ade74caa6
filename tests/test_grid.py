"""emkit.io.check_same_grid: layers used together must share size, voxel offset and resolution."""
import numpy as np
import pytest

from emkit.errors import InputError
from emkit.io import Layer, check_same_grid
from emkit.io.grid import GRID_FACTS


def _layer(path, size=(4, 16, 16), offset=(0, 0, 0), resolution=(40, 8, 8), kind="segmentation"):
    return Layer.create(str(path), kind, size, voxel_offset=offset, resolution=resolution)


def test_same_grid_passes_and_none_is_skipped(tmp_path):
    a = _layer(tmp_path / "a", offset=(2, 3, 4))
    b = _layer(tmp_path / "b", offset=(2, 3, 4), kind="mask")          # kinds and dtypes may differ
    c = Layer.create(str(tmp_path / "c"), "probability", (4, 16, 16), num_channels=5, voxel_offset=(2, 3, 4))
    assert check_same_grid(a, b, None, c, what="x") is None
    assert check_same_grid(a) is None
    assert GRID_FACTS == ("size", "voxel_offset", "resolution")


@pytest.mark.parametrize("kw, fact, mine, theirs", [
    ({"size": (4, 16, 17)}, "size", "(4, 16, 17)", "(4, 16, 16)"),
    ({"size": (5, 16, 16)}, "size", "(5, 16, 16)", "(4, 16, 16)"),
    ({"offset": (0, 0, 1)}, "voxel_offset", "(0, 0, 1)", "(0, 0, 0)"),
    ({"offset": (-1, 0, 0)}, "voxel_offset", "(-1, 0, 0)", "(0, 0, 0)"),
    ({"resolution": (40, 4, 4)}, "resolution", "(40, 4, 4) nm", "(40, 8, 8) nm"),
    ({"resolution": (40, 8, 8.5)}, "resolution", "(40, 8, 8.5) nm", "(40, 8, 8) nm"),
])
def test_each_difference_is_named(tmp_path, kw, fact, mine, theirs):
    ref = _layer(tmp_path / "ref")
    other = _layer(tmp_path / "other", **kw)
    with pytest.raises(InputError) as exc:
        check_same_grid(ref, other, what="semantic layer")
    msg = str(exc.value)
    assert msg.startswith(f"semantic layer {other.url} has {fact} {mine}")
    assert f"but {ref.url} has {theirs}" in msg
    # the reverse order names the other layer's value first
    with pytest.raises(InputError, match=rf"has {fact} \({theirs[1:].split(')')[0]}\)"):
        check_same_grid(other, ref)


def test_first_mismatching_layer_and_fact_are_named(tmp_path):
    ref = _layer(tmp_path / "ref")
    ok = _layer(tmp_path / "ok")
    bad = _layer(tmp_path / "bad", offset=(0, 1, 0), resolution=(30, 8, 8))
    with pytest.raises(InputError) as exc:
        check_same_grid(ref, ok, None, bad, what="mask")
    msg = str(exc.value)
    assert msg.startswith(f"mask {bad.url} has voxel_offset (0, 1, 0)")   # offset is checked before resolution
    assert "resolution" not in msg.split(";")[0]


def test_facts_restrict_the_check(tmp_path):
    ref = _layer(tmp_path / "ref")
    other = _layer(tmp_path / "other", offset=(0, 0, 8))
    check_same_grid(ref, other, facts=("size", "resolution"))
    with pytest.raises(InputError, match="voxel_offset"):
        check_same_grid(ref, other, facts=("voxel_offset",))


def test_layers_read_together_after_the_check(tmp_path):
    """The point of the check: equal grids mean voxel (z, y, x) of one is voxel (z, y, x) of the other."""
    a = _layer(tmp_path / "a", offset=(1, 2, 3))
    b = _layer(tmp_path / "b", offset=(1, 2, 3))
    x = np.arange(4 * 16 * 16, dtype=np.uint64).reshape(4, 16, 16)
    a.write(x)
    b.write(x + 1)
    check_same_grid(a, b)
    box = a.bbox
    np.testing.assert_array_equal(b.read(box) - a.read(box), 1)
