"""Bbox, vec3 parsing and chunk grids (emkit.geometry)."""
import numpy as np
import pytest

from emkit.errors import BboxError, InputError
from emkit.geometry import Bbox, as_vec3, chunk_grid, parse_bbox, parse_vec3


def test_as_vec3_accepts_scalars_and_triples():
    assert as_vec3(4) == (4, 4, 4)
    assert as_vec3([1, 2.0, np.int64(3)]) == (1, 2, 3)
    assert as_vec3((40, 8, 8), dtype=float) == (40.0, 8.0, 8.0)
    assert as_vec3(np.array([1, 2, 3])) == (1, 2, 3)


@pytest.mark.parametrize("bad", [(1, 2), (1, 2, 3, 4), "abc", None, (1.5, 2, 3), (float("nan"), 1, 1)])
def test_as_vec3_refuses_bad_values(bad):
    with pytest.raises(InputError):
        as_vec3(bad, "size")


def test_as_vec3_positive_names_the_value():
    with pytest.raises(InputError, match="size.*positive"):
        as_vec3((4, 0, 4), "size", positive=True)
    with pytest.raises(InputError, match="positive"):
        as_vec3((-1, 4, 4), "size", positive=True)


def test_parse_vec3():
    assert parse_vec3("40,8,8", dtype=float) == (40.0, 8.0, 8.0)
    assert parse_vec3(" 1, 2 ,3") == (1, 2, 3)
    assert parse_vec3("16") == (16, 16, 16)
    assert parse_vec3("-2,0,5") == (-2, 0, 5)
    for bad in ["1,2", "a,b,c", "1.5,2,3", ""]:
        with pytest.raises(InputError, match="--res"):
            parse_vec3(bad, "--res")
    with pytest.raises(InputError):
        parse_vec3("0,1,1", positive=True)


def test_parse_bbox():
    b = parse_bbox("0:4,10:20,-3:5")
    assert b.start == (0, 10, -3) and b.stop == (4, 20, 5) and b.shape == (4, 10, 8)
    assert str(b) == "0:4,10:20,-3:5"
    for bad in ["0:4,1:2", "0-4,1:2,3:4", "a:b,1:2,3:4", "0:4,1:2,3:4,5:6"]:
        with pytest.raises(InputError, match="z0:z1"):
            parse_bbox(bad)


def test_bbox_algebra():
    a = Bbox((0, 0, 0), (10, 20, 30))
    b = Bbox((5, 15, 25), (15, 25, 35))
    assert a.shape == (10, 20, 30) and a.size == 6000 and not a.empty
    assert a.intersect(b) == Bbox((5, 15, 25), (10, 20, 30))
    assert a.intersect(Bbox((20, 0, 0), (30, 5, 5))).empty
    assert a.contains(Bbox((1, 1, 1), (10, 20, 30))) and not a.contains(b)
    assert a.grow(2) == Bbox((-2, -2, -2), (12, 22, 32))
    assert a.grow((1, 0, 0)).shape == (12, 20, 30)
    assert a.translate((1, 2, 3)).start == (1, 2, 3)
    assert Bbox.from_shape((4, 5, 6), (1, 1, 1)) == Bbox((1, 1, 1), (5, 6, 7))
    assert Bbox.from_shape((2, 4, 5, 6)).shape == (4, 5, 6)  # channel axis ignored
    assert Bbox((0, 0, 0), (0, 5, 5)).size == 0
    assert a.to_nm((40, 8, 8)) == ((0.0, 0.0, 0.0), (400.0, 160.0, 240.0))


def test_bbox_slices_index_an_array():
    arr = np.arange(6 * 7 * 8).reshape(6, 7, 8)
    box = Bbox((11, 12, 13), (13, 15, 17))
    sub = arr[box.slices(origin=(10, 10, 10))]
    assert sub.shape == box.shape
    assert sub[0, 0, 0] == arr[1, 2, 3]
    assert Bbox.from_slices(box.slices()) == box


def test_chunk_grid_tiles_exactly():
    bounds = Bbox((3, 5, 7), (40, 50, 60))
    chunks = list(chunk_grid(bounds, (16, 32, 32), origin=(0, 0, 0)))
    cover = np.zeros(bounds.shape, int)
    for c in chunks:
        assert bounds.contains(c) and not c.empty
        cover[c.slices(bounds.start)] += 1
        # interior chunk faces lie on the grid aligned at the origin
        for a, b, s, lo, hi in zip(c.start, c.stop, (16, 32, 32), bounds.start, bounds.stop):
            assert a == lo or a % s == 0
            assert b == hi or b % s == 0
    assert (cover == 1).all()
    assert len(chunks) == 3 * 2 * 2
    # C order, z slowest
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)


def test_chunk_grid_default_origin_is_bounds_start():
    chunks = list(chunk_grid(Bbox((5, 5, 5), (9, 9, 9)), 2))
    assert len(chunks) == 8 and chunks[0] == Bbox((5, 5, 5), (7, 7, 7))


def test_chunk_grid_refuses_empty_and_bad_chunk():
    with pytest.raises(BboxError):
        list(chunk_grid(Bbox((0, 0, 0), (0, 4, 4)), 2))
    with pytest.raises(InputError):
        list(chunk_grid(Bbox((0, 0, 0), (4, 4, 4)), (2, 0, 2)))
