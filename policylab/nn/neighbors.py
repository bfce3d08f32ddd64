"""Exact nearest-neighbour search over a fixed key set (PRDC's dataset constraint).

Two searches return the same neighbour for every query: the index of the key at the smallest
Euclidean distance, distances compared in float64, ties broken towards the smallest index.

- :class:`KDTreeNeighbors`: ``scipy.spatial.cKDTree`` on the CPU, as PRDC's authors do (they
  query ``scipy.spatial.KDTree`` every actor step). Each query copies the queries to the host
  and the indices back, so a training step on a GPU waits for the host there.
- :class:`ExactNeighbors`: brute force on the keys' device. Chunks of the key set are compared
  with the queries through one matrix product each (``torch.cdist``'s Euclidean expansion
  without its constant ``|q|^2`` and square root: a ``[B, chunk]`` score matrix at a time); each chunk
  keeps its ``candidates`` closest keys, and the closest of all candidates is chosen by float64
  distances. Device work only: no ``.item()``, no host copy, no shapes that depend on values.

Why the float64 refinement: the chunked pass computes float32 scores through a matrix product
(``|k|^2 - 2 q.k``), whose rounding is about ``1e-7 * (|q|^2 + |k|^2)``; two keys at
distances closer than that may swap. Recomputing the distances of the candidates as
``sum (q - k)^2`` in float64 (exact differences of float32 numbers) settles them as the KD-tree
does. The result can only differ from the KD-tree's when more than ``candidates`` keys of one
chunk lie within float32 rounding of the nearest distance: in practice duplicated keys, which
share their action, so PRDC's regularization target is the same. The products run in full
float32 even where ``torch.set_float32_matmul_precision`` allows TF32 (whose ``1e-3`` rounding
would need many more candidates).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import Tensor

NeighborSearchKind = Literal["kdtree", "exact"]


def _as_keys(keys: Tensor | np.ndarray) -> Tensor:
    keys = torch.as_tensor(keys)
    if keys.ndim != 2 or keys.shape[0] == 0:
        raise ValueError(f"the key set must be a non-empty [N, D] array, got shape {tuple(keys.shape)}")
    if not torch.isfinite(keys).all():
        row = int(torch.nonzero(~torch.isfinite(keys).all(1))[0, 0])
        raise ValueError(f"the key set has a non-finite value in row {row}: {keys[row].tolist()}; clean the data first")
    return keys.float()


def scipy_available() -> bool:
    return importlib.util.find_spec("scipy") is not None


class KDTreeNeighbors:
    """Exact nearest neighbours with ``scipy.spatial.cKDTree`` (built once, queried on the CPU).

    Args:
        keys: ``[N, D]`` key set (converted to float32, then to float64 by scipy).
        workers: query threads (``-1``: all cores, as the authors' ``workers=-1``).
        leafsize: the tree's leaf size (scipy's default 16).

    :meth:`query` synchronizes with the host: the queries are copied to the CPU and the indices
    back to the queries' device.
    """

    def __init__(self, keys: Tensor | np.ndarray, workers: int = -1, leafsize: int = 16) -> None:
        if not scipy_available():
            raise ImportError(
                "neighbor_search='kdtree' needs scipy (pip install scipy); "
                "neighbor_search='exact' finds the same neighbours without it"
            )
        from scipy.spatial import cKDTree

        self.keys = _as_keys(keys).cpu()
        self.workers = workers
        self.tree = cKDTree(self.keys.numpy().astype(np.float64), leafsize=leafsize)

    def __len__(self) -> int:
        return self.keys.shape[0]

    def to(self, device: torch.device | str) -> KDTreeNeighbors:
        return self  # the tree lives on the CPU

    def query(self, queries: Tensor) -> Tensor:
        """Index of the nearest key for each row of ``queries`` ``[B, D]``, as a long tensor on
        the queries' device (smallest index among keys at exactly the same distance)."""
        q = queries.detach().float().cpu().numpy().astype(np.float64)
        k = min(2, len(self))
        distance, index = self.tree.query(q, k=k, workers=self.workers)
        distance, index = distance.reshape(len(q), k), index.reshape(len(q), k)
        nearest = index[:, 0].copy()
        if k == 2:
            # A tie with the second neighbour: collect every key at that distance, keep the smallest index.
            # (The ball's radius is widened by rounding's margin, then the tie is settled on float64
            # squared distances, as the exact search does.)
            keys = self.tree.data
            for row in np.flatnonzero(distance[:, 0] == distance[:, 1]):
                ball = np.asarray(self.tree.query_ball_point(q[row], r=distance[row, 0] * (1 + 1e-9) + 1e-300))
                squared = ((keys[ball] - q[row]) ** 2).sum(axis=1)
                nearest[row] = ball[squared == squared.min()].min()
        return torch.from_numpy(nearest.astype(np.int64)).to(queries.device)


@contextlib.contextmanager
def _full_float32_matmul() -> Iterator[None]:
    """Matrix products in full float32 (no TF32 or bfloat16 passes) for the candidate distances."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class ExactNeighbors:
    """Exact nearest neighbours by chunked brute force on the keys' device (no host sync).

    Args:
        keys: ``[N, D]`` key set, kept as float32 on the device :meth:`to` moves it to.
        chunk_size: keys per matrix product; the score matrix of one product is
            ``[B, chunk_size]`` float32 (256 x 65536 is 64 MB).
        candidates: closest keys kept per chunk by the float32 pass before the float64 choice.
    """

    def __init__(self, keys: Tensor | np.ndarray, chunk_size: int = 65536, candidates: int = 8) -> None:
        if chunk_size < 1 or candidates < 1:
            raise ValueError(f"chunk_size and candidates must be positive, got {chunk_size} and {candidates}")
        self.keys = _as_keys(keys)
        self.squared_norms = self.keys.square().sum(1)
        self.chunk_size, self.candidates = int(chunk_size), int(candidates)

    def __len__(self) -> int:
        return self.keys.shape[0]

    def to(self, device: torch.device | str) -> ExactNeighbors:
        self.keys, self.squared_norms = self.keys.to(device), self.squared_norms.to(device)
        return self

    def query(self, queries: Tensor) -> Tensor:
        """Index of the nearest key for each row of ``queries`` ``[B, D]`` (long, on the keys'
        device; smallest index among keys at exactly the same float64 distance)."""
        q = queries.detach().float()
        if q.ndim != 2 or q.shape[1] != self.keys.shape[1]:
            raise ValueError(f"queries must be [B, {self.keys.shape[1]}], got shape {tuple(q.shape)}")
        found = []
        with _full_float32_matmul():
            for start in range(0, len(self), self.chunk_size):
                chunk = self.keys[start : start + self.chunk_size]
                # |q - k|^2 - |q|^2 = |k|^2 - 2 q.k ranks the keys of a query as the distance does
                score = torch.addmm(self.squared_norms[start : start + self.chunk_size], q, chunk.T, alpha=-2)
                m = min(self.candidates, chunk.shape[0])
                closest = score.topk(m, dim=1, largest=False).indices
                found.append(closest + start)
        candidates = torch.cat(found, dim=1)  # [B, chunks * m], distinct key indices
        exact = (self.keys[candidates].double() - q.double().unsqueeze(1)).square().sum(-1)
        tied = exact == exact.min(dim=1, keepdim=True).values
        return torch.where(tied, candidates, len(self)).min(dim=1).values


def neighbor_search(
    kind: NeighborSearchKind, keys: Tensor | np.ndarray, chunk_size: int = 65536, candidates: int = 8
) -> KDTreeNeighbors | ExactNeighbors:
    """The search named ``kind`` over ``keys``: ``"kdtree"`` (scipy, CPU) or ``"exact"`` (device)."""
    if kind == "kdtree":
        return KDTreeNeighbors(keys)
    if kind == "exact":
        return ExactNeighbors(keys, chunk_size, candidates)
    raise ValueError(f"neighbor_search must be 'kdtree' or 'exact', got {kind!r}")
