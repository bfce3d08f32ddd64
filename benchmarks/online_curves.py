"""Issue 19's online curves: IQL, FamO2O and A2PR (RO2O where a GPU runs it) on Hopper medium-replay,
offline, then online finetuning, 3 seeds, made by ``python -m policylab.sweep``.

    python benchmarks/online_curves.py [--offline-steps 30000] [--online-steps 25000] [--seeds 0 1 2]
        [--methods iql famo2o a2pr] [--out benchmarks/sweeps/online_hopper] [--parallel 2]
    python benchmarks/online_curves.py --finished      # the finished runs' folders, to commit
    python benchmarks/online_curves.py --offline-steps 100000 \
        --from-sweep benchmarks/sweeps/offline_medium_replay   # online from the table's offline runs

Each run is the method's Hopper config (offline-to-online, one env step per gradient step) with
the online phase moved to ``--offline-steps`` (``trainer.callbacks.init_args.start_step``), so the
curves show the end of the offline phase and the start of the online one on one step axis. After
the sweep's table and curves, ``online.md`` holds, per method and seed, the last offline score, the
lowest score of the first 10k online steps (a collapse shows there) and the last score.

``--from-sweep DIR`` saves the offline phase where a sweep of the same configs (the offline table's)
has finished it: each online run that has not started gets that run's ``last.ckpt`` (at exactly
``--offline-steps``) and event files, and the sweep resumes it there. The run is the one a single
``offline-steps + online-steps`` run would be (same config; the online callback does nothing before
the switch), except for torch's global random stream, which checkpoints do not keep.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policylab.sweep import checkpoint_step, finished_folders, finished_steps, run_folder  # noqa: E402
from policylab.sweep import main as sweep  # noqa: E402

METHODS = {
    "iql": "iql_hopper.yaml",
    "famo2o": "famo2o_hopper.yaml",
    "a2pr": "a2pr_hopper.yaml",
    "ro2o": "ro2o_hopper.yaml",
}
EARLY_ONLINE = 10_000  # steps after the switch in which a collapse would show


def sweep_args(options: argparse.Namespace) -> list[str]:
    args = ["--configs", *(f"{m}={ROOT / 'configs' / METHODS[m]}" for m in options.methods)]
    args += ["--datasets", options.dataset, "--seeds", *map(str, options.seeds)]
    args += ["--max-steps", str(options.offline_steps + options.online_steps), "--out", str(options.out)]
    args += ["--parallel", str(options.parallel), "--set", "video.every_n_steps=0"]
    args += ["--set", f"trainer.callbacks.init_args.start_step={options.offline_steps}"]
    for item in options.set:
        args += ["--set", item]
    return args


def start_from_offline_runs(options: argparse.Namespace) -> None:
    """Copy the finished offline runs of ``options.from_sweep`` into the online runs that have not
    started (see the module docstring); says what it copied and what it could not."""
    import shutil

    for method in options.methods:
        for seed in options.seeds:
            source = run_folder(options.from_sweep, method, options.dataset, seed)
            target = run_folder(options.out, method, options.dataset, seed)
            if (target / "checkpoints/last.ckpt").is_file():
                continue
            if finished_steps(source) != options.offline_steps or checkpoint_step(source) != options.offline_steps:
                print(f"offline phase to train: {source} has no finished {options.offline_steps}-step checkpoint")
                continue
            (target / "checkpoints").mkdir(parents=True, exist_ok=True)
            for events in source.glob("events.out.tfevents.*"):
                shutil.copy2(events, target)
            shutil.copy2(source / "checkpoints/last.ckpt", target / "checkpoints/last.ckpt")
            print(f"offline phase from {source}")


def online_summary(scores_csv: Path, switch: int) -> str:
    """Per method and seed: the score at the switch, the lowest of the first online evaluations
    and the last, from the sweep's ``scores.csv``."""
    runs: dict[tuple[str, str], dict[int, float]] = {}
    with open(scores_csv) as file:
        for row in csv.DictReader(file):
            runs.setdefault((row["method"], row["seed"]), {})[int(row["step"])] = float(row["normalized_score"])
    lines = [
        f"Online phase from step {switch}: normalized score at the switch (last offline evaluation), the lowest",
        f"in the first {EARLY_ONLINE} online steps, and the last.",
        "",
        "| method | seed | at the switch | lowest early online | last | last step |",
        "|---|---|---|---|---|---|",
    ]
    for (method, seed), scores in runs.items():
        offline = [s for s in scores if s <= switch]
        early = [scores[s] for s in scores if switch < s <= switch + EARLY_ONLINE]
        if not offline or not early:
            continue
        last = max(scores)
        cells = [f"{scores[max(offline)]:.1f}", f"{min(early):.1f}", f"{scores[last]:.1f}", str(last)]
        lines.append(f"| {method} | {seed} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline-steps", type=int, default=30_000)
    parser.add_argument("--online-steps", type=int, default=25_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dataset", default="hopper-medium-replay-v5")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=["iql", "famo2o", "a2pr"])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/sweeps/online_hopper")
    parser.add_argument(
        "--set", action="append", default=[], help="more sweep --set values (e.g. evaluation.n_episodes=5)"
    )
    parser.add_argument(
        "--from-sweep", type=Path, default=None, help="a sweep folder whose finished runs are the offline phase"
    )
    parser.add_argument("--finished", action="store_true", help="list the finished runs' folders and stop")
    parser.add_argument("--table-only", action="store_true", help="the tables and curves of what has finished")
    options = parser.parse_args(argv)
    if options.finished:
        print("\n".join(map(str, finished_folders(options.out))))
        return
    if options.from_sweep is not None and not options.table_only:
        start_from_offline_runs(options)
    try:
        sweep(sweep_args(options) + (["--table-only"] if options.table_only else []))
    finally:
        if (options.out / "scores.csv").is_file():
            summary = online_summary(options.out / "scores.csv", options.offline_steps)
            (options.out / "online.md").write_text(summary)
            print(summary, end="")


if __name__ == "__main__":
    main()
