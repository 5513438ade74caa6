"""emkit.runtime.scaling.scaling_table: one row per worker count, on real local clusters."""
import numpy as np
import pytest

from emkit.errors import InputError
from emkit.runtime import Cluster
from emkit.runtime.scaling import scaling_table


def test_scaling_table_runs_the_stage_on_each_cluster():
    seen = []

    def run(cluster):
        seen.append(cluster.n_workers)
        futs = cluster.client.map(np.sum, [np.ones(1000)] * 4)
        assert cluster.client.gather(futs) == [1000.0] * 4

    made = []

    def make(n):
        made.append(Cluster(n_workers=n, quiet=True))
        return made[-1]

    table = scaling_table(run, (1, 2), voxels=4000, make_cluster=make, repeats=2, progress=False)
    assert seen == [1, 1, 2, 2]
    assert table["workers"].tolist() == [1, 2] and table["speedup"].iloc[0] == 1.0
    assert (table["seconds"] > 0).all() and (table["voxels_per_s"] == (4000 / table["seconds"]).round()).all()
    assert table["efficiency"].iloc[1] == pytest.approx(table["speedup"].iloc[1] / 2, abs=0.01)
    assert all(link.startswith("http://127.0.0.1:") for link in table["dashboard"])
    assert all(c.client.status == "closed" for c in made)     # each row's cluster was closed


@pytest.mark.parametrize("kw,match", [({"worker_counts": (0, 2)}, "worker_counts"),
                                      ({"worker_counts": ()}, "worker_counts"),
                                      ({"voxels": 0}, "voxels"), ({"repeats": 0}, "repeats")])
def test_scaling_table_names_bad_input(kw, match):
    args = {"worker_counts": (1,), "voxels": 10, **kw}
    with pytest.raises(InputError, match=match):
        scaling_table(lambda c: None, args.pop("worker_counts"), **args)
