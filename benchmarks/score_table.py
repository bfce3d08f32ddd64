"""Normalized scores of finished runs as a markdown table: mean +- std over seeds, against steps.

    python benchmarks/score_table.py "runs/td3bc_mr_seed*" --steps 25000 50000 100000 --label TD3+BC
    python benchmarks/score_table.py "runs/a2pr_mr_seed*" "runs/td3bc_mr_seed*" --steps 50000

Each pattern is a group of runs (one per seed); every run folder holds TensorBoard events with
``eval/normalized_score`` (as written by ``python cli.py fit``). A step missing from some seed is
reported with the seeds that reached it.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def scores_of_run(run_dir: Path, tag: str = "eval/normalized_score") -> dict[int, float]:
    """``{step: value}`` of ``tag`` over every event file below ``run_dir`` (later files win)."""
    out: dict[int, float] = {}
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            out.update({e.step: e.value for e in acc.Scalars(tag)})
    return out


def last_mean(scores: dict[int, float], up_to: int, window: int = 1) -> float | None:
    """Mean of the last ``window`` evaluations at or before ``up_to``."""
    steps = sorted(s for s in scores if s <= up_to)
    return float(np.mean([scores[s] for s in steps[-window:]])) if steps else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="+", help="glob of run folders, one group per pattern")
    parser.add_argument("--steps", type=int, nargs="+", required=True)
    parser.add_argument("--label", nargs="*", default=None, help="a name per pattern")
    parser.add_argument("--tag", default="eval/normalized_score")
    parser.add_argument("--window", type=int, default=1, help="average the last K evaluations up to each step")
    args = parser.parse_args()
    labels = args.label or args.patterns
    print("| runs | seeds | " + " | ".join(f"step {s}" for s in args.steps) + " |")
    print("|---|---|" + "---|" * len(args.steps))
    for label, pattern in zip(labels, args.patterns):
        runs = [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).is_dir()]
        per_run = [scores_of_run(r, args.tag) for r in runs]
        cells = []
        for step in args.steps:
            values = [
                v for v in (last_mean(s, step, args.window) for s in per_run if s and max(s) >= step) if v is not None
            ]
            cells.append(f"{np.mean(values):.1f} +- {np.std(values):.1f} (n={len(values)})" if values else "-")
        print(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
