"""Milliseconds per batch of PRDC's nearest-neighbour search: the authors' KD-tree (scipy, CPU)
against policylab's chunked exact search (``torch.cdist`` on the device), same keys, same queries.

    python benchmarks/neighbor_search.py [--keys 1000000] [--batch 256] [--rounds 5] [--threads 2] \
        [--device cpu|cuda] [--data gaussian|hopper] [--chunk-size 65536] [--candidates 8]

Keys are Hopper-sized, ``(beta s) (+) a`` with 11 state and 3 action dimensions (beta 2):
``gaussian`` draws ``--keys`` states from N(0, 1) and actions from U(-1, 1) (no structure: the
KD-tree's worst case in 14 dimensions); ``hopper`` uses the shipped Hopper medium-replay
transitions (normalized states; their count, not ``--keys``). A query batch is ``--batch`` keys
drawn from the set plus N(0, 0.1^2) noise on every coordinate (a policy near the data). Each
round times one batch of each search in turn (alternating; the device synchronized around the
exact search), after one warm-up batch each; the medians are printed, and every round checks
that both searches return the same indices. The KD-tree's build time is printed once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from policylab.nn.neighbors import ExactNeighbors, KDTreeNeighbors, scipy_available

BETA, OBS_DIM, ACT_DIM = 2.0, 11, 3


def make_keys(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "gaussian":
        obs = rng.normal(size=(n, OBS_DIM))
        action = rng.uniform(-1, 1, size=(n, ACT_DIM))
    else:
        from policylab.datamodules import OfflineTransitionDataModule

        data = OfflineTransitionDataModule("hopper-medium-replay-v5").buffer.all()
        obs, action = data.obs.numpy(), data.action.numpy()
    return np.hstack([BETA * obs, action]).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", choices=("gaussian", "hopper"), default="gaussian")
    parser.add_argument("--chunk-size", type=int, default=65536)
    parser.add_argument("--candidates", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    device = torch.device(args.device)

    keys = make_keys(args.data, args.keys, rng)
    print(
        f"{args.data} keys: {keys.shape[0]} x {keys.shape[1]} float32; batch {args.batch}; "
        f"{args.threads} CPU threads; exact search on {device} (chunk {args.chunk_size}, {args.candidates} candidates)"
    )
    exact = ExactNeighbors(torch.from_numpy(keys), args.chunk_size, args.candidates).to(device)
    kdtree = None
    if scipy_available():
        start = time.perf_counter()
        kdtree = KDTreeNeighbors(torch.from_numpy(keys), workers=args.threads)
        print(f"KD-tree build: {time.perf_counter() - start:.2f} s (once per run)")
    else:
        print("scipy is not installed: the KD-tree is not measured")

    def batch() -> torch.Tensor:
        rows = rng.integers(0, len(keys), args.batch)
        queries = keys[rows] + rng.normal(0, 0.1, size=(args.batch, keys.shape[1])).astype(np.float32)
        return torch.from_numpy(queries).to(device)

    def timed(search, queries) -> tuple[float, torch.Tensor]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        index = search.query(queries)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1e3, index

    warm = batch()
    timed(exact, warm)
    if kdtree is not None:
        timed(kdtree, warm)
    times: dict[str, list[float]] = {"exact": [], "kdtree": []}
    for r in range(args.rounds):
        queries = batch()
        order = [("exact", exact), ("kdtree", kdtree)] if r % 2 == 0 else [("kdtree", kdtree), ("exact", exact)]
        found = {}
        for name, search in order:
            if search is None:
                continue
            ms, found[name] = timed(search, queries)
            times[name].append(ms)
        if len(found) == 2 and not torch.equal(found["exact"].cpu(), found["kdtree"].cpu()):
            differ = int((found["exact"].cpu() != found["kdtree"].cpu()).sum())
            raise SystemExit(f"round {r}: the searches disagree on {differ} queries")
    for name, values in times.items():
        if values:
            print(
                f"{name:>7}: median {statistics.median(values):9.2f} ms per batch of {args.batch} "
                f"(rounds: {', '.join(f'{v:.1f}' for v in values)})"
            )
    if times["kdtree"]:
        print("indices identical in every round")


if __name__ == "__main__":
    main()
