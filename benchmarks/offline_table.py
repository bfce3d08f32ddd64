"""Issue 19's table: the offline methods on Hopper, HalfCheetah and Walker2d medium-replay, 3 seeds,
an equal budget of gradient steps, made by ``python -m policylab.sweep``.

    python benchmarks/offline_table.py [--max-steps 100000] [--seeds 0 1 2] [--parallel 2]
        [--out benchmarks/sweeps/offline_medium_replay] [--methods td3bc cdsa_td3bc ...]
    python benchmarks/offline_table.py --finished      # the finished runs' folders, to commit
    python benchmarks/offline_table.py --table-only    # table.md, table.csv and curves of what exists

Methods: TD3+BC, IQL, FamO2O, PRDC and A2PR through their Hopper configs (each task's own config
where the authors' values differ: ``a2pr_halfcheetah.yaml``, ``a2pr_walker2d.yaml``,
``prdc_halfcheetah.yaml``), and CDSA on each TD3+BC and IQL run (``cdsa_td3bc``, ``cdsa_iql``: the
score models train for the same number of steps on the backbone's final checkpoint). Every run
evaluates every 5k steps over 10 episodes (D4RL normalized score). RO2O's offline part is left
out by default: its update takes about 2 s on a 2-core CPU (benchmarks/RESULTS.md), about 55 hours
per 100k-step run; ``--methods ... ro2o`` adds it where a GPU runs the sweep.

The sweep runs seed by seed (every method and task on seed 0 first) and each CDSA run right after
its backbone. A run that finishes writes ``finished.json``; the same command skips it later and
resumes an interrupted one from its ``last.ckpt``. The finished runs' small files (TensorBoard
events, config, log; checkpoints are ignored) can be committed, so that a sweep longer than one
machine's session goes on in the next one from a fresh checkout: ``--finished`` lists them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policylab.sweep import finished_folders  # noqa: E402
from policylab.sweep import main as sweep  # noqa: E402

DATASETS = ["hopper-medium-replay-v5", "halfcheetah-medium-replay-v5", "walker2d-medium-replay-v5"]
# method -> config (its Hopper config; the sweep swaps in a task's own config where one exists)
METHODS = {
    "td3bc": "td3bc_hopper.yaml",
    "cdsa_td3bc": "cdsa_hopper.yaml",
    "iql": "iql_hopper.yaml",
    "cdsa_iql": "cdsa_hopper.yaml",
    "famo2o": "famo2o_hopper.yaml",
    "prdc": "prdc_hopper.yaml",
    "a2pr": "a2pr_hopper.yaml",
    "ro2o": "ro2o_hopper.yaml",
}
DEFAULT_METHODS = [m for m in METHODS if m != "ro2o"]
BACKBONE = {"cdsa_td3bc": "td3bc", "cdsa_iql": "iql"}


def sweep_args(options: argparse.Namespace) -> list[str]:
    for method, backbone in BACKBONE.items():
        if method in options.methods and backbone not in options.methods:
            raise SystemExit(f"error: --methods: {method} needs its backbone {backbone} in the sweep")
    args = ["--configs", *(f"{m}={ROOT / 'configs' / METHODS[m]}" for m in options.methods)]
    args += ["--datasets", *options.datasets, "--seeds", *map(str, options.seeds)]
    args += ["--max-steps", str(options.max_steps), "--out", str(options.out), "--parallel", str(options.parallel)]
    args += ["--set", "video.every_n_steps=0"]  # no rollout GIFs: the committed event files stay small
    for method, backbone in BACKBONE.items():
        if method in options.methods:
            args += ["--set", f"{method}:model.init_args.backbone_checkpoint={{run:{backbone}}}/checkpoints/last.ckpt"]
    return args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/sweeps/offline_medium_replay")
    parser.add_argument("--finished", action="store_true", help="list the finished runs' folders and stop")
    parser.add_argument("--table-only", action="store_true", help="the table and curves of what has finished")
    options = parser.parse_args(argv)
    if options.finished:
        print("\n".join(map(str, finished_folders(options.out))))
        return
    sweep(sweep_args(options) + (["--table-only"] if options.table_only else []))


if __name__ == "__main__":
    main()
