"""Every diffusion method on the shapes task: the programmatic reward of samples for the
held-out prompts before and after, 3 seeds, as a markdown table. Runs go through
``python cli.py fit`` with the shipped configs.

    python benchmarks/diffusion_table.py --seeds 0 1 2 --out data/bench/diffusion

In ``<out>``: the task data (``data/shapes``, written with seed 0), one pretraining run
(``configs/shapes_pretrain.yaml``; every method starts from it), the pairs sampled from the
pretrained model (``data/shapes/model_pairs.parquet``, 6 per training prompt), and per method and seed a run
``runs/<method>_seed<k>`` (the method's training seed: its batches, noise and samples). The
table gives ``eval/reward`` (mean reward of the 64 evaluation images, the same prompts and seeds
each time) at the start and at the last step, the gain, and ``eval/win_rate`` against the start
image for image. Finished runs are read, unfinished ones resumed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preference_table import fit, run  # noqa: E402
from score_table import scores_of_run  # noqa: E402

METHODS = ("diffusion_dpo", "smpo", "seppo", "self_npo", "diffusion_dro")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", default="runs/diffusion_table")
    parser.add_argument("--pretrain-steps", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=500, help="steps of each method")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument(
        "--grids", help="write the first seed's image grids (start and last evaluation) as PNG files here"
    )
    parser.add_argument(
        "--tag", default="", help="suffix of the run names (runs/<method><tag>_seed<k>), to keep variants apart"
    )
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("OPTION", "VALUE"),
        help="an extra override for every method run, e.g. --set model.init_args.lr 1e-4",
    )
    args = parser.parse_args()

    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "data/shapes/model").is_dir():
        run(["-m", "policylab.tasks.shapes", "--out", "data/shapes"], folder, folder / "task.log")
    pretrained = fit("shapes_pretrain.yaml", "shapes_pretrain", args.pretrain_steps, 0, folder, [], "eval/reward")
    if not (
        folder / "data/shapes/model_pairs.parquet"
    ).is_file():  # the pairs of Diffusion-DPO and SmPO, the winners of SePPO
        run(
            [
                "-m",
                "policylab.tasks.shapes",
                "--out",
                "data/shapes",
                "--pairs-from",
                str(pretrained / "pipeline"),
                "--repeat",
                "6",
            ],
            folder,
            folder / "task.log",
        )
    every = [
        "--trainer.callbacks.init_args.every_n_steps",
        str(args.eval_every),
        "--checkpoint.every_n_train_steps",
        str(args.eval_every),
    ]
    extra = [*every, "--model.init_args.model", str((pretrained / "pipeline").resolve())]
    for option, value in args.set:
        extra += [f"--{option}", value]
    table = {
        m: [
            fit(f"{m}_shapes.yaml", f"{m}{args.tag}_seed{s}", args.steps, s, folder, extra, "eval/reward")
            for s in args.seeds
        ]
        for m in args.methods
    }
    print_table(table, args.steps)
    if args.grids:
        for method, runs in table.items():
            save_grids(runs[0], Path(args.grids), f"{method}{args.tag}")


def save_grids(run_dir: Path, out: Path, name: str) -> None:
    """The first and last ``eval/samples*`` grids of a run (TensorBoard images) as PNG files:
    ``<name>_start.png`` and ``<name>_step<N>.png``, same prompts and seeds."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out.mkdir(parents=True, exist_ok=True)
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        tags = acc.Tags()["images"]
        if "eval/samples_start" in tags:
            (out / f"{name}_start.png").write_bytes(acc.Images("eval/samples_start")[0].encoded_image_string)
        if "eval/samples" in tags:
            last = acc.Images("eval/samples")[-1]
            (out / f"{name}_step{last.step}.png").write_bytes(last.encoded_image_string)


def print_table(table: dict[str, list[Path]], steps: int) -> None:
    def stats(values) -> str:
        v = np.array(values, dtype=float)
        return f"{v.mean():.3f} +- {v.std():.3f}"

    print(
        f"\n| method | reward at start | reward after {steps} steps ({len(next(iter(table.values())))} seeds) "
        "| per seed | gain | win rate vs start | best evaluation |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, runs in table.items():
        start = [min(s.items())[1] for r in runs if (s := scores_of_run(r, "eval/reward_start"))]
        rewards = [scores_of_run(r, "eval/reward") for r in runs]
        final = [s[steps] for s in rewards]
        wins = [scores_of_run(r, "eval/win_rate")[steps] for r in runs]
        gain = f"{np.mean(final) - np.mean(start):+.3f}" if start else ""
        print(
            f"| {name} | {stats(start) if start else ''} | {stats(final)} "
            f"| {', '.join(f'{x:.3f}' for x in final)} | {gain} "
            f"| {stats(wins)} | {stats([max(s.values()) for s in rewards])} |"
        )


if __name__ == "__main__":
    main()
