"""FamO2O's universal actor at fixed coefficients against the balance model's per-state choice: is
a poor or unstable evaluation the actor family's or the balance model's?

    python benchmarks/famo2o_coefficients.py RUN_DIR [RUN_DIR ...] [--episodes 20] [--seed 70000] \
        [--checkpoint last.ckpt]

``RUN_DIR`` is a FamO2O run folder (``<run>/checkpoints/last.ckpt`` and ``config.yaml``, e.g. the
table sweep's ``runs/famo2o/<dataset>/seed0``; ``--checkpoint 'best-*.ckpt'`` takes the run's best
evaluation instead of its last). Each row evaluates the universal actor's mean at one
coefficient ``beta`` for every state (five points of the coefficient range), or at the balance
model's deterministic ``beta(s)`` (how FamO2O acts), on the same episode seeds; the balance row
also gives the mean and spread of the coefficients it picks on dataset states.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from policylab.datamodules import OfflineTransitionDataModule
from policylab.envs.evaluation import evaluate_policy
from policylab.envs.scores import normalized_score, reference_scores
from policylab.modules.offline.cdsa import load_policy_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=70_000)
    parser.add_argument("--states", type=int, default=5000)
    parser.add_argument("--checkpoint", default="last.ckpt", help="file name (or glob) under <run>/checkpoints")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print("| run | coefficient | normalized score (mean +- std) | min | max |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        run = Path(run)
        checkpoint = sorted((run / "checkpoints").glob(args.checkpoint))[-1]
        model = load_policy_checkpoint(str(checkpoint))
        dataset = yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]["dataset"]
        data = OfflineTransitionDataModule(dataset).load()
        refs = data.reference_scores or reference_scores(data.env_id)
        mean, std = (t.numpy() for t in data.observation_statistics)
        low, high = model.coefficient_range
        picked = model.balance(data.buffer.sample(args.states, torch.Generator().manual_seed(args.seed)).obs)
        choices = [(f"{beta:g}", beta) for beta in np.linspace(low, high, 5)]
        choices.append((f"balance model ({picked.mean():.2f} +- {picked.std():.2f})", None))
        for label, beta in choices:

            def act(obs: np.ndarray, beta=beta, model=model) -> np.ndarray:
                obs_t = torch.as_tensor(obs, dtype=torch.float32)
                coefficient = model.balance(obs_t) if beta is None else torch.full((len(obs_t),), float(beta))
                return model.actor.mean(obs_t, coefficient).clamp(-model.max_action, model.max_action).numpy()

            returns = evaluate_policy(act, data.env_id, args.episodes, seed=args.seed, obs_mean=mean, obs_std=std)
            scores = np.asarray(normalized_score(returns, *refs))
            print(
                f"| {run.parent.name}/{run.name}/{checkpoint.name} | {label} | {scores.mean():.1f} +- "
                f"{scores.std():.1f} | {scores.min():.1f} | {scores.max():.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
