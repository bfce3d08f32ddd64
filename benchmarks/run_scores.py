"""Train methods x seeds and print the score table: now a shorthand for ``python -m policylab.sweep``.

    python benchmarks/run_scores.py --configs td3bc_hopper a2pr_hopper iql_hopper --seeds 0 1 2 \\
        --steps 50000 --parallel 2 --out sweeps/bench [-- --evaluation.every_n_steps 2500]

is ``python -m policylab.sweep --configs configs/td3bc_hopper.yaml ... --datasets
hopper-medium-replay-v5 --seeds 0 1 2 --max-steps 50000 --parallel 2 --out sweeps/bench --set
evaluation.every_n_steps=2500``: resumable, with ``table.md``, ``table.csv`` and learning curves in
the sweep folder. Runs live in ``<out>/runs/<config>/<dataset>/seed<k>/``; the runs this script
made before the sweep existed (``<out>/<config>_seed<k>/version_0``, quoted in RESULTS.md) are
read with ``benchmarks/score_table.py`` and are not resumed by it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policylab.sweep import main as sweep  # noqa: E402


def sweep_args(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", required=True, help="config names under configs/")
    parser.add_argument("--datasets", nargs="+", default=["hopper-medium-replay-v5"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", default="sweeps/bench")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    sets = []
    while extra:  # "--key value" or "--key=value" pairs for every run
        key = extra.pop(0)
        if not key.startswith("--"):
            parser.error(f"{key}: extra arguments go in '--key value' pairs")
        if "=" in key:
            sets += ["--set", key[2:]]
        elif not extra:
            parser.error(f"{key}: no value follows it")
        else:
            sets += ["--set", f"{key[2:]}={extra.pop(0)}"]
    configs = [str(ROOT / "configs" / f"{Path(c).stem}.yaml") for c in args.configs]
    return [
        "--configs", *configs, "--datasets", *args.datasets, "--seeds", *map(str, args.seeds),
        "--max-steps", str(args.steps), "--parallel", str(args.parallel), "--out", args.out, *sets,
    ]  # fmt: skip


if __name__ == "__main__":
    sweep(sweep_args(sys.argv[1:]))
