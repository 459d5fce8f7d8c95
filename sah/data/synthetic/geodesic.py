"""Cost-weighted geodesic distance on a voxel grid: how far blood has to travel to a voxel.

Blood leaving a ruptured aneurysm flows through open CSF first and only slowly infiltrates
brain, so "arrival distance" is a shortest path whose cost per mm depends on the tissue. Any
sublevel set of it is a plausible clot, and its size is chosen by picking the level.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

UNREACHABLE = 6.0e4  # distance (mm) given to voxels outside the domain

# Half of the 26-neighbourhood; the graph is undirected, so this covers every edge once.
_OFFSETS = [
    (dx, dy, dz)
    for dx in (0, 1)
    for dy in (-1, 0, 1)
    for dz in (-1, 0, 1)
    if (dx, dy, dz) > (0, 0, 0)
]


def _pair_slices(shape: tuple[int, ...], offset: tuple[int, int, int]):
    """Slices selecting every voxel ``a`` and its neighbour ``a + offset`` inside the grid."""
    a, b = [], []
    for n, d in zip(shape, offset, strict=True):
        a.append(slice(max(0, -d), n - max(0, d)))
        b.append(slice(max(0, d), n + min(0, d)))
    return tuple(a), tuple(b)


def geodesic_distance(
    cost: np.ndarray, domain: np.ndarray, sources: np.ndarray, voxel_mm: float
) -> np.ndarray:
    """Distance (cost x mm) from the nearest of ``sources`` (n, 3 voxel indices) to every
    voxel of ``domain``, moving between 26-neighbours; UNREACHABLE elsewhere."""
    index = np.full(domain.shape, -1, dtype=np.int64)
    nodes = np.flatnonzero(domain)
    index.ravel()[nodes] = np.arange(nodes.size)
    rows, cols, weights = [], [], []
    for offset in _OFFSETS:
        a, b = _pair_slices(domain.shape, offset)
        ia, ib = index[a].ravel(), index[b].ravel()
        keep = (ia >= 0) & (ib >= 0)
        length = voxel_mm * float(np.linalg.norm(offset))
        weights.append(0.5 * (cost[a].ravel()[keep] + cost[b].ravel()[keep]) * length)
        rows.append(ia[keep])
        cols.append(ib[keep])
    graph = sparse.coo_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(nodes.size, nodes.size),
    ).tocsr()
    start = index.ravel()[np.ravel_multi_index(tuple(np.asarray(sources).T), domain.shape)]
    start = np.unique(start[start >= 0])
    out = np.full(domain.shape, UNREACHABLE, dtype=np.float32)
    if start.size:
        dist = csgraph.dijkstra(graph, directed=False, indices=start, min_only=True)
        out.ravel()[nodes] = np.minimum(dist, UNREACHABLE)
    return out


def voxels_near(mask: np.ndarray, centre: np.ndarray, radius_vox: float) -> np.ndarray:
    """Voxels of ``mask`` within ``radius_vox`` of ``centre`` (indices), or the nearest one."""
    candidates = np.argwhere(mask)
    d2 = ((candidates - np.asarray(centre)) ** 2).sum(1)
    near = candidates[d2 <= radius_vox**2]
    return near if len(near) else candidates[[int(np.argmin(d2))]]
