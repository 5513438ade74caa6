"""notebooks/08_scale_out.ipynb runs top to bottom with small parameters and shows what it says: the
dashboard link, identical results in this process / on a local cluster / attached by address, and a
throughput table and plot over the worker counts."""
from helpers_notebooks import code_cells, errors, outputs_with, run_notebook, text

OVERRIDE = ("SIZE = (16, 128, 128)\nSEED = 1\nCHUNK = (8, 64, 64)\nWORKERS = (1, 2)\nOUT_DIR = {tmp!r}\n")


def test_notebook_08_runs(tmp_path):
    nb, probe = run_notebook("08_scale_out.ipynb", OVERRIDE.format(tmp=str(tmp_path / "data")), tmp_path,
                             probe="{'workers': table['workers'].tolist(), 'speedup': table['speedup'].tolist(),"
                                   " 'vps': table['voxels_per_s'].tolist(), 'voxels': voxels}")
    assert not errors(nb)
    cells = code_cells(nb)
    assert all(c.get("execution_count") for c in cells)
    local = next(text(c) for c in cells if "Cluster(n_workers=2)" in c.source)
    assert "dask dashboard: http://127.0.0.1:" in local and "identical: True" in local
    attached = next(text(c) for c in cells if "scheduler=address" in c.source)
    assert "tcp://127.0.0.1:" in attached and "dask scheduler" in attached and "identical: True" in attached
    assert probe["workers"] == [1, 2] and probe["speedup"][0] == 1.0
    assert probe["voxels"] == 16 * 128 * 128 and all(v > 0 for v in probe["vps"])
    assert any("voxels_per_s" in c.source for c in outputs_with(nb, "image/png"))
