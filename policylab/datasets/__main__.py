"""``python -m policylab.datasets {build,record} ...``: D4RL-format datasets made by policylab.

``build hopper --kinds random medium medium-replay`` trains SAC online, picks the medium policy
and writes the datasets D4RL defines (resumable; see ``policylab.datasets.build``).
``record --env Hopper-v5 --policy random --steps 100000 --out data/x.hdf5`` records uniform random
actions. Files are written atomically: an interrupted run leaves no file under the final name,
and the hidden temporary file a killed write leaves is removed by the next write of that file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from policylab.datamodules.transitions import episode_returns
from policylab.datasets.files import write_dataset
from policylab.envs.rollout import record_steps
from policylab.envs.scores import normalized_score, reference_scores


def record(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if args.steps <= 0:
        sys.exit(f"error: --steps must be a positive number of env steps, got {args.steps}")
    if out.exists() and not args.overwrite:
        sys.exit(f"error: {out} exists; pass --overwrite to replace it")
    arrays = record_steps(args.env, args.steps, policy=None, seed=args.seed)
    returns = episode_returns(arrays["rewards"], arrays["terminals"], arrays["timeouts"])
    attrs = {
        "env_id": args.env,
        "policy": args.policy,
        "seed": args.seed,
        "command": "python -m policylab.datasets " + " ".join(sys.argv[1:]),
    }
    refs = reference_scores(args.env)
    if refs is not None:
        attrs["ref_min_score"], attrs["ref_max_score"] = refs
    write_dataset(out, arrays, attrs)
    score = f", normalized {np.mean(normalized_score(returns, *refs)):.1f}" if refs else ""
    print(
        f"wrote {out}: {len(arrays['rewards'])} transitions, {len(returns)} episodes, "
        f"return {returns.mean():.1f} +- {returns.std():.1f}{score}"
    )


def build_command(args: argparse.Namespace) -> None:
    from policylab.data import bundle_dir
    from policylab.datamodules.d4rl_format import DatasetError
    from policylab.datasets.build import BuildConfig, build

    config = BuildConfig(
        family=args.family,
        work_dir=args.work_dir or f"data/build/{args.family}",
        out_dir=args.out,
        seed=args.seed,
        sac_steps=args.sac_steps,
        random_steps=args.random_steps,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        pick_episodes=args.pick_episodes,
        medium_range=tuple(args.medium_range),
        expert_min_score=args.expert_min_score,
        rollout_steps=args.rollout_steps,
        threads=args.threads,
        minari=args.minari,
        kinds=tuple(args.kinds),
        policies_from=str(bundle_dir(args.family)) if args.from_bundle else None,
        portable=args.portable,
    )
    try:
        build(config, progress=not args.no_progress)
    except (DatasetError, ValueError) as err:
        sys.exit(f"error: {err}")


def export_command(args: argparse.Namespace) -> None:
    import json

    from policylab.data import bundle_dir
    from policylab.datamodules.d4rl_format import DatasetError
    from policylab.datasets.build import BuildConfig, export_bundle, export_expert

    work_dir = Path(args.work_dir or f"data/build/{args.family}")
    if not (work_dir / "build.json").is_file():
        sys.exit(f"error: {work_dir} holds no build (no build.json); pass the build's --work-dir")
    saved = json.loads((work_dir / "build.json").read_text())
    saved["medium_range"], saved["kinds"] = tuple(saved["medium_range"]), tuple(saved["kinds"])
    config = BuildConfig(**saved)
    if args.sac_steps is not None:
        config.sac_steps = args.sac_steps
    if args.expert:
        try:
            target = export_expert(config, args.to or bundle_dir(args.family), note=args.note)
        except DatasetError as err:
            sys.exit(f"error: {err}")
        print(f"exported the expert policy to {target}")
        return
    dest = export_bundle(config, args.to or bundle_dir(args.family), note=args.note)
    print(f"exported to {dest}:\n" + (dest / "README.md").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m policylab.datasets", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    from policylab.datasets.build import KINDS, BuildConfig

    default = BuildConfig()
    bld = commands.add_parser("build", help="train SAC and build D4RL-style datasets (resumable)")
    bld.add_argument("family", help="env family: hopper, halfcheetah, walker2d, ant")
    bld.add_argument(
        "--kinds", nargs="*", default=list(KINDS), choices=KINDS, help="datasets to write (none: only train SAC)"
    )
    bld.add_argument("--out", default=default.out_dir, help="folder of the hdf5 files (default: data)")
    bld.add_argument("--work-dir", default=None, help="SAC run, snapshots and state (default: data/build/<family>)")
    bld.add_argument("--seed", type=int, default=default.seed)
    bld.add_argument(
        "--sac-steps",
        type=int,
        default=default.sac_steps,
        help="SAC gradient steps (one env step each, after the random warm-up)",
    )
    bld.add_argument(
        "--random-steps", type=int, default=default.random_steps, help="uniform-random warm-up steps of SAC"
    )
    bld.add_argument(
        "--eval-every", type=int, default=default.eval_every, help="steps between evaluations and snapshots"
    )
    bld.add_argument("--eval-episodes", type=int, default=default.eval_episodes)
    bld.add_argument(
        "--pick-episodes", type=int, default=default.pick_episodes, help="episodes to confirm a picked policy"
    )
    bld.add_argument(
        "--medium-range",
        type=float,
        nargs=2,
        default=list(default.medium_range),
        metavar=("LOW", "HIGH"),
        help="normalized score range of the medium policy",
    )
    bld.add_argument("--expert-min-score", type=float, default=default.expert_min_score)
    bld.add_argument(
        "--rollout-steps", type=int, default=default.rollout_steps, help="steps of random/medium/expert rollouts"
    )
    bld.add_argument("--threads", type=int, default=default.threads, help="torch threads")
    bld.add_argument("--minari", action="store_true", help="also write Minari datasets (policylab/<family>/<kind>-v0)")
    bld.add_argument(
        "--from-bundle",
        action="store_true",
        help="use the policies shipped in policylab/data/<family> instead of a SAC run",
    )
    bld.add_argument(
        "--portable",
        action="store_true",
        help="checkpoints without replay buffer and recording (a few MB), to carry a long run between machines; "
        "each resume refills the buffer with the current policy (not for medium-replay)",
    )
    bld.add_argument("--no-progress", action="store_true")
    exp = commands.add_parser("export", help="copy a build's medium-replay set, policies and card into the package")
    exp.add_argument("family")
    exp.add_argument("--work-dir", default=None)
    exp.add_argument("--out", default=default.out_dir)
    exp.add_argument("--to", default=None, help="destination (default: policylab/data/<family>)")
    exp.add_argument("--note", default=None, help="a paragraph for the card (how the run went)")
    exp.add_argument(
        "--sac-steps", type=int, default=None, help="the SAC step of the final policy (default: the build's)"
    )
    exp.add_argument(
        "--expert",
        action="store_true",
        help="export only the run's final policy as the bundle's expert_policy.pt (it must reach --expert-min-score)",
    )
    rec = commands.add_parser("record", help="record a policy's steps in a D4RL-format hdf5 file")
    rec.add_argument("--env", required=True, help="gymnasium env id, e.g. Hopper-v5")
    rec.add_argument("--policy", choices=["random"], default="random")
    rec.add_argument("--steps", type=int, default=100_000)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--out", required=True)
    rec.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    {"build": build_command, "export": export_command, "record": record}[args.command](args)


if __name__ == "__main__":
    main()
