"""``python -m policylab.datasets record --env Hopper-v5 --policy random --steps 100000 --out data/x.hdf5``

Records a policy in a gymnasium env and writes a D4RL-format hdf5 file (atomically: an
interrupted run leaves no file under the final name). ``--policy random`` is D4RL's ``random``
recipe (uniform actions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from policylab.datamodules.d4rl_format import write_d4rl_hdf5
from policylab.datamodules.transitions import episode_returns
from policylab.envs.rollout import record_steps
from policylab.envs.scores import normalized_score, reference_scores


def record(args: argparse.Namespace) -> None:
    out = Path(args.out)
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
    write_d4rl_hdf5(out, arrays, attrs)
    score = f", normalized {np.mean(normalized_score(returns, *refs)):.1f}" if refs else ""
    print(f"wrote {out}: {len(arrays['rewards'])} transitions, {len(returns)} episodes, return {returns.mean():.1f} +- {returns.std():.1f}{score}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m policylab.datasets", description=__doc__.split("\n\n")[1])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("record", help="record a policy's steps in a D4RL-format hdf5 file")
    rec.add_argument("--env", required=True, help="gymnasium env id, e.g. Hopper-v5")
    rec.add_argument("--policy", choices=["random"], default="random")
    rec.add_argument("--steps", type=int, default=100_000)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--out", required=True)
    rec.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    record(args)


if __name__ == "__main__":
    main()
