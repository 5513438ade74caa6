"""Union–find (disjoint sets) over an int array ``parent``, for the numba kernels of this package."""
import numba


@numba.njit(cache=True, nogil=True)
def find(parent, a):
    """Root of ``a``, with path compression."""
    r = a
    while parent[r] != r:
        r = parent[r]
    while parent[a] != r:
        nxt = parent[a]
        parent[a] = r
        a = nxt
    return r
