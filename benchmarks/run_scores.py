"""Train methods x seeds through ``python cli.py fit``, a few runs at a time, resuming runs that a
stopped session left behind; then print the score table.

    python benchmarks/run_scores.py --configs td3bc_hopper a2pr_hopper iql_hopper --seeds 0 1 2 \\
        --steps 50000 --parallel 2 --out runs/bench
    python benchmarks/score_table.py "runs/bench/a2pr_hopper_seed*" --steps 10000 25000 50000

Each run is ``<out>/<config>_seed<k>/version_0``; with ``last.ckpt`` present it continues with
``--ckpt_path last`` (to a larger ``--steps`` too). Runs use one thread each. Extra arguments
after ``--`` go to every run (e.g. ``-- --trainer.callbacks.init_args.start_step 50000``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def finished_step(run_dir: Path) -> int:
    """Step of the newest ``last*.ckpt`` (the one ``--ckpt_path last`` resumes), 0 without one."""
    lasts = sorted((run_dir / "version_0/checkpoints").glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return int(torch.load(lasts[-1], map_location="cpu", weights_only=True)["global_step"]) if lasts else 0


def command(config: str, seed: int, steps: int, out: Path, extra: list[str]) -> list[str]:
    name = f"{config}_seed{seed}"
    args = [
        sys.executable,
        str(ROOT / "cli.py"),
        "fit",
        "--config",
        str(ROOT / f"configs/{config}.yaml"),
        "--seed_everything",
        str(seed),
        "--trainer.max_steps",
        str(steps),
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.logger.init_args.name",
        name,
        "--trainer.logger.init_args.version",
        "version_0",
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]
    if finished_step(out / name) > 0:
        args += ["--ckpt_path", "last"]
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", default="runs/bench")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    queue = [(c, s) for s in args.seeds for c in args.configs if finished_step(out / f"{c}_seed{s}") < args.steps]
    running: list[tuple[str, subprocess.Popen]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    while queue or running:
        while queue and len(running) < args.parallel:
            config, seed = queue.pop(0)
            name = f"{config}_seed{seed}"
            log = open(out / f"{name}.log", "a")
            print(f"start {name} (from step {finished_step(out / name)})", flush=True)
            running.append(
                (
                    name,
                    subprocess.Popen(
                        command(config, seed, args.steps, out, extra), stdout=log, stderr=subprocess.STDOUT, env=env
                    ),
                )
            )
        for name, process in list(running):
            if process.poll() is not None:
                print(f"done  {name}: exit {process.returncode}", flush=True)
                running.remove((name, process))
        time.sleep(5)


if __name__ == "__main__":
    main()
