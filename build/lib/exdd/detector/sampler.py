"""Greedy k-center coreset of the memory bank (PatchCore section 3.2).

PatchCore keeps a small subset of the training patches chosen by farthest-point traversal:
each new member is the patch farthest from every member so far, so the bank's coverage
radius (the worst distance from any training patch to the bank) shrinks as fast as
greedy can make it. Distances are computed on a seeded Johnson-Lindenstrauss projection
(as ``ApproximateGreedyCoresetSampler``); the chosen indices refer to the original rows.

A plain traversal makes one pass over all N patches per member (minutes for 1% of 680k
patches on two cores). This one returns the same members with much less work. Each patch
belongs to the group of one member and stores its exact distance to it, which is always
an upper bound of its distance to the coreset. When member c is added:

* only groups whose member lies within 2 x (group radius) of c can hold a patch nearer
  to c (triangle inequality, as in Elkan's k-means); of those, the ``max_groups`` nearest
  to c are compared with it, plus any other whose farthest patch is nearer to c;
* inside a group, a patch within half of d(c, member) of its member cannot come nearer;
* the rest are compared first through a cheap lower bound of the distance (coordinates
  on the top principal axes plus the norm of the remainder: ``pca_sketch``) and exactly
  only where that bound does not rule them out.

Skipping the farther groups leaves some upper bounds stale, never too small. The next
member is therefore taken as the largest upper bound, *checked* against every member:
if the patch is in fact nearer another member it moves there and the search repeats.
The first patch that passes is the exact farthest patch, so the selection is the
plain traversal's, up to ties and float rounding.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from exdd.detector.features import random_projection
from exdd.detector.index import NearestNeighbourIndex
from exdd.detector.settings import CoresetSettings
from exdd.errors import DataError

# Relative slack on lower-bound tests, so that float32 rounding in the bound never
# discards a patch that does come nearer.
_BOUND_SLACK = 1e-3


class GreedyCoresetSampler:
    """Farthest-point coreset: ``select(features)`` -> int64 row indices, seeded."""

    def __init__(self, fraction: float, seed: int, settings: CoresetSettings | None = None,
                 *, min_keep: int = 1, progress: bool = True) -> None:
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"coreset fraction must be in (0, 1], got {fraction}")
        settings = settings or CoresetSettings()
        self.fraction = fraction
        self.projection_dim = settings.projection_dim
        self.seed = seed
        self.chunk_size = settings.chunk_size
        self.max_groups = settings.max_groups
        self.sketch_dim = settings.sketch_dim
        self.sketch_sample = settings.sketch_sample
        self.min_keep = max(1, min_keep)
        self.progress = progress

    def n_select(self, n: int) -> int:
        """How many of n rows the coreset keeps: the fraction, but at least ``min_keep``
        (all of them when there are fewer)."""
        return min(n, max(self.min_keep, round(self.fraction * n)))

    def project(self, features: np.ndarray) -> np.ndarray:
        """The features the distances are computed on: seeded JL projection, or the features
        themselves (no copy) when they are no wider than ``projection_dim``."""
        features = _check(features)
        if features.shape[1] <= self.projection_dim:
            return features
        matrix = random_projection(features.shape[1], self.projection_dim, self.seed)
        return features @ matrix

    def start_index(self, n: int) -> int:
        """The seeded first member."""
        return int(np.random.default_rng(self.seed).integers(n))

    def select(self, features: np.ndarray) -> np.ndarray:
        """Indices (int64, in selection order) of the coreset rows of ``features`` (N, D)."""
        features = _check(features)
        n = features.shape[0]
        k = self.n_select(n)
        if k == n:
            return np.arange(n, dtype=np.int64)
        points = self.project(features)
        sketch = pca_sketch(points, self.sketch_dim, self.sketch_sample, self.seed,
                            self.chunk_size)
        traversal = _Traversal(points, sketch, self.chunk_size, self.max_groups)
        return traversal.run(self.start_index(n), k, self.progress)


def pca_sketch(points: np.ndarray, dim: int, sample: int, seed: int,
               chunk_size: int) -> np.ndarray:
    """(N, dim + 1) rows whose distances never exceed those of ``points``.

    Columns: coordinates on the top ``dim`` principal axes (found on ``sample`` seeded
    rows), then the norm of what those axes leave out. The first part is an orthogonal
    projection, the last the reverse triangle inequality, so |s(x) - s(y)| <= |x - y|;
    patch features keep most of their variance on few axes, which makes the bound tight.
    Points no wider than the sketch are returned as they are (their own exact bound).
    """
    n, width = points.shape
    if width <= dim + 1:
        return points
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(n, sample), replace=False))
    probe = points[rows].astype(np.float64)
    mean = probe.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov(probe - mean, rowvar=False))
    axes = np.ascontiguousarray(vectors[:, ::-1][:, :dim], dtype=np.float32)
    sketch = np.empty((n, dim + 1), np.float32)
    mean32 = mean.astype(np.float32)
    for start in range(0, n, chunk_size):
        centred = points[start:start + chunk_size] - mean32
        coords = sketch[start:start + chunk_size, :dim]
        np.matmul(centred, axes, out=coords)
        rest = np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", coords, coords)
        np.sqrt(np.maximum(rest, 0.0), out=sketch[start:start + chunk_size, dim])
    return sketch


class _RowDistances:
    """Squared distances from chosen rows of an (N, D) array to one vector, gathered and
    computed in chunks into buffers allocated once."""

    def __init__(self, array: np.ndarray, chunk_size: int) -> None:
        self.array = array
        self.chunk = min(chunk_size, array.shape[0])
        self.gather = np.empty((self.chunk, array.shape[1]), np.float32)
        self.out = np.empty(array.shape[0], np.float32)

    def __call__(self, rows: np.ndarray | None, vector: np.ndarray) -> np.ndarray:
        """Distances of ``array[rows]`` (every row if None); valid until the next call."""
        count = self.array.shape[0] if rows is None else rows.shape[0]
        out = self.out[:count]
        for start in range(0, count, self.chunk):
            stop = min(start + self.chunk, count)
            buf = self.gather[: stop - start]
            if rows is None:
                np.subtract(self.array[start:stop], vector, out=buf)
            else:
                np.take(self.array, rows[start:stop], axis=0, out=buf, mode="clip")
                buf -= vector
            np.einsum("ij,ij->i", buf, buf, out=out[start:stop])
        return out


def _sq_dist(rows: np.ndarray, vector: np.ndarray, buf: np.ndarray, out: np.ndarray) -> None:
    """Squared distances of the (few) ``rows`` to ``vector`` into ``out``."""
    np.subtract(rows, vector, out=buf)
    np.einsum("ij,ij->i", buf, buf, out=out)


class _Traversal:
    """One farthest-point traversal (see the module docstring).

    ``nearest[x]`` is the exact squared distance from x to the member of its group.
    Groups are index arrays; a step works on the concatenated members of its candidate
    groups at once, so its Python cost does not grow with the number of groups. Buffers
    of length N are allocated once.
    """

    def __init__(self, points: np.ndarray, sketch: np.ndarray, chunk_size: int,
                 max_groups: int) -> None:
        n = points.shape[0]
        self.points, self.sketch = points, sketch
        self.exact = _RowDistances(points, chunk_size)
        self.bound = _RowDistances(sketch, chunk_size)
        self.max_groups = max_groups
        self.nearest = np.empty(n, np.float32)
        self.rows = np.empty(n, np.int64)  # members of the candidate groups, group by group
        self.near = np.empty(n, np.float32)  # their ``nearest``
        self.keep = np.empty(n, bool)  # stays in its group

    def run(self, first: int, k: int, progress: bool) -> np.ndarray:
        n, dim = self.points.shape
        self.chosen = np.empty(k, np.int64)
        self.centres = np.empty((k, dim), np.float32)
        self.centre_sketch = np.empty((k, self.sketch.shape[1]), np.float32)
        self.centre_buf = np.empty((k, dim), np.float32)
        self.sketch_buf = np.empty((k, self.sketch.shape[1]), np.float32)
        self.centre_bound = np.empty(k, np.float32)  # squared lower bounds, patch to member
        self.rival_dist = np.empty(k, np.float32)  # squared, exact, to the few it must check
        self.radius = np.zeros(k, np.float32)  # per group: largest ``nearest`` in it
        self.farthest = np.zeros(k, np.int64)  # per group: the patch attaining it
        self.sizes = np.zeros(k, np.int64)
        self.members: list[np.ndarray] = [np.arange(n, dtype=np.int64)]

        self.chosen[0] = first
        self.centres[0] = self.points[first]
        self.centre_sketch[0] = self.sketch[first]
        self.nearest[:] = self.exact(None, self.centres[0])
        self.sizes[0] = n
        self._refresh(0)
        with tqdm(total=k, desc="coreset", unit="pt", disable=not progress, leave=False) as bar:
            bar.update(1)
            for t in range(1, k):
                new, home = self._farthest(t)
                if new < 0:  # every patch coincides with a member: the rest are arbitrary
                    rest = np.setdiff1d(np.arange(n), self.chosen[:t], assume_unique=True)
                    self.chosen[t:] = rest[: k - t]
                    break
                self._add(t, new, home)
                bar.update(1)
        return self.chosen

    def _refresh(self, j: int) -> None:
        """Recompute group j's radius and farthest patch."""
        near = self.nearest[self.members[j]]
        at = int(np.argmax(near))
        self.farthest[j], self.radius[j] = self.members[j][at], near[at]

    def _farthest(self, t: int) -> tuple[int, int]:
        """The patch farthest from the t members and its group ((-1, -1) if every patch is
        covered); its lower bounds to the members are left in ``centre_bound``.

        The patch with the largest stored distance is checked against every member whose
        lower bound does not rule it out. If it is in fact nearer member i, its group is
        stale with respect to i: the whole group is compared with i (``_transfer``) and
        the search repeats. Since every stored distance is an upper bound, the first
        patch that passes is the exact farthest one.
        """
        bound = self.centre_bound[:t]
        while True:
            g = int(np.argmax(self.radius[:t]))
            if self.radius[g] <= 0.0:
                return -1, -1
            x = int(self.farthest[g])
            _sq_dist(self.centre_sketch[:t], self.sketch[x], self.sketch_buf[:t], bound)
            rivals = np.flatnonzero(bound < self.nearest[x] * (1.0 + _BOUND_SLACK))
            rivals = rivals[rivals != g]
            if rivals.size == 0:
                return x, g
            exact = self.rival_dist[: rivals.size]
            _sq_dist(self.centres[rivals], self.points[x], self.centre_buf[: rivals.size], exact)
            at = int(np.argmin(exact))
            if exact[at] >= self.nearest[x]:
                return x, g
            i = int(rivals[at])
            between = self.centres[i] - self.centres[g]
            self._transfer(i, np.array([g]), np.array([between @ between * (1.0 - _BOUND_SLACK)]))

    def _add(self, t: int, new: int, home: int) -> None:
        """Make ``new`` (of group ``home``) member t and give it the patches nearer to it."""
        self.chosen[t] = new
        self.centres[t] = self.points[new]
        self.centre_sketch[t] = self.sketch[new]
        self.members.append(np.empty(0, np.int64))
        # squared lower bounds of d(c, c_j), shaved so that rounding keeps them below
        lower = self.centre_bound[:t] * (1.0 - _BOUND_SLACK)
        # groups that may hold a patch nearer to c (d(c, c_j) < 2 r_j), the nearest first
        cand = np.flatnonzero(lower < 4.0 * self.radius[:t])
        if cand.size > self.max_groups:
            rank = lower[cand]
            rank[cand == home] = -1.0  # c's own group always
            order = np.argpartition(rank, self.max_groups - 1)
            cand = np.concatenate([cand[order[: self.max_groups]],
                                   self._stale_tops(t, cand[order[self.max_groups:]])])
        # exact d(c, c_j) for the groups compared: a sharper per-patch test than the bound
        exact = self.rival_dist[: cand.size]
        _sq_dist(self.centres[cand], self.centres[t], self.centre_buf[: cand.size], exact)
        self._transfer(t, cand, exact * (1.0 - _BOUND_SLACK))

    def _stale_tops(self, t: int, groups: np.ndarray) -> np.ndarray:
        """Those of ``groups`` whose farthest patch is nearer to member t than to its own:
        left alone, they would be the next to fail the check in ``_farthest``."""
        tops = self.farthest[groups]
        radius = self.radius[groups]
        bound = self.bound(tops, self.centre_sketch[t])
        maybe = np.flatnonzero(bound < radius * (1.0 + _BOUND_SLACK))
        exact = self.exact(tops[maybe], self.centres[t])
        return groups[maybe[exact < radius[maybe]]]

    def _transfer(self, dst: int, groups: np.ndarray, lower: np.ndarray) -> None:
        """Move every patch of ``groups`` that is nearer to member ``dst`` than to its own
        member into group ``dst``; ``lower``: squared lower bounds of d(member dst, c_j)."""
        nearest, sizes = self.nearest, self.sizes
        counts = sizes[groups]
        starts = np.zeros_like(counts)
        np.cumsum(counts[:-1], out=starts[1:])
        m = int(starts[-1] + counts[-1])
        rows = self.rows[:m]
        np.concatenate([self.members[j] for j in groups], out=rows)
        near = np.take(nearest, rows, out=self.near[:m])
        # a patch within half of d(c, c_j) of its member c_j cannot come nearer to c
        maybe = np.flatnonzero(near > np.repeat(0.25 * lower, counts))
        # nor can one whose lower bound to c is already beyond its distance
        if 2 * maybe.size > nearest.size:  # most patches: a contiguous pass beats gathering
            bound = self.bound(None, self.centre_sketch[dst])[rows[maybe]]
        else:
            bound = self.bound(rows[maybe], self.centre_sketch[dst])
        maybe = maybe[bound < near[maybe] * (1.0 + _BOUND_SLACK)]
        exact = self.exact(rows[maybe], self.centres[dst])
        closer = exact < near[maybe]
        pos = maybe[closer]
        moved = rows[pos]
        nearest[moved] = exact[closer]
        near[pos] = -1.0  # moved away: no longer part of its old group's radius
        self.members[dst] = np.concatenate([self.members[dst], moved])
        sizes[dst] = self.members[dst].size
        if sizes[dst]:
            self._refresh(dst)
        # the old groups: radius and farthest patch, segment by segment over ``rows``
        seg_max = np.maximum.reduceat(near, starts)
        hits = np.flatnonzero(near == np.repeat(seg_max, counts))
        self.radius[groups] = seg_max
        self.farthest[groups] = rows[hits[np.searchsorted(hits, starts)]]
        keep = self.keep[:m]
        keep[:] = True
        keep[pos] = False
        for s in np.unique(np.searchsorted(starts, pos, side="right") - 1):
            a, b = starts[s], starts[s] + counts[s]
            j = groups[s]
            self.members[j] = rows[a:b][keep[a:b]]
            sizes[j] = self.members[j].size


def _check(features: np.ndarray) -> np.ndarray:
    """float32 C-contiguous (N, D) with N >= 1 (no copy when it already is)."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise DataError(f"coreset needs a non-empty (N, D) feature array, got {features.shape}")
    return features


def coverage_radius(features: np.ndarray, indices: np.ndarray) -> float:
    """Largest distance from any row of ``features`` to its nearest selected row (exact,
    in the original space, searched in batches)."""
    features = _check(features)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        raise DataError("coverage radius of an empty selection")
    index = NearestNeighbourIndex().fit(features[indices])
    return float(index.search(features, 1)[0].max())
