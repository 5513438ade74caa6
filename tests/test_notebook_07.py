"""notebooks/07_meshes_skeletons.ipynb runs top to bottom with small parameters and shows what it says:
pyramids added, meshes whose volume matches their voxels, the neuron table, the path-length histogram,
and a Neuroglancer link whose view selects meshed segments."""
from helpers_notebooks import code_cells, errors, outputs_with, run_notebook, text

OVERRIDE = "SIZE = (16, 128, 128)\nSEED = 3\nOUT_DIR = {tmp!r}\nWORKERS = 0\nSERVE = True\n"


def test_notebook_07_runs(tmp_path):
    nb, probe = run_notebook(
        "07_meshes_skeletons.ipynb", OVERRIDE.format(tmp=str(tmp_path / "data")), tmp_path,
        probe="{'rows': int(len(table)), 'ratio': mesh_volume(mesh) / voxel_nm3, 'segments': viewer.segments,"
              " 'layout': viewer.state['layout'], 'meshed': mesh_report.segments,"
              " 'lengths': [float(x) for x in table['path_length_um']],"
              " 'synapses': int(table['synapse_count'].fillna(0).sum()), 'cols': list(table.columns)}")
    assert not errors(nb)
    cells = code_cells(nb)
    assert all(c.get("execution_count") for c in cells)
    pyr = next(text(c) for c in cells if "pyramid_layers(" in c.source)
    assert pyr.count("mip(s) added") == 2
    # a closed mesh encloses its segment's voxels (within a few %)
    assert 0.9 < probe["ratio"] < 1.1, probe["ratio"]
    # the neuron table: a row per skeleton, sorted by path length, synapses counted; the histogram drawn
    assert probe["rows"] >= 3 and {"segment_id", "path_length_um", "branch_points", "synapse_count"} <= set(probe["cols"])
    assert probe["lengths"] == sorted(probe["lengths"], reverse=True) and probe["lengths"][0] > 0
    assert probe["synapses"] >= 1
    assert any("ax.hist" in c.source for c in outputs_with(nb, "image/png"))
    shown = next(text(c) for c in cells if c.source.startswith("skel_report = "))
    assert "path_length_um" in shown
    # the 3D view: meshed segments selected, a 3D panel, the link printed
    ids = probe["segments"]["segmentation"]
    assert 1 <= len(ids) <= 5 and probe["layout"] == "xy-3d" and probe["meshed"] >= len(ids)
    viewed = next(text(c) for c in cells if "serve(" in c.source)
    assert "http://127.0.0.1:" in viewed and "meshes and skeletons of segments" in viewed
