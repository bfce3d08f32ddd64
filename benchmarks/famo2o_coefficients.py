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

import numpy as np
import torch
from sweep_checkpoints import add_run_arguments, dataset_states, load_run, normalized_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    parser.add_argument("--checkpoint", default="last.ckpt", help="file name (or glob) under <run>/checkpoints")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print("| run | coefficient | normalized score (mean +- std) | min | max |")
    print("|---|---|---|---|---|")
    for run in args.runs:
        checkpoint, model, data = load_run(run, args.checkpoint)
        low, high = model.coefficient_range
        picked = model.balance(dataset_states(data, args.states, args.seed))
        choices = [(f"{beta:g}", beta) for beta in np.linspace(low, high, 5)]
        choices.append((f"balance model ({picked.mean():.2f} +- {picked.std():.2f})", None))
        for label, beta in choices:

            def act(obs: np.ndarray, beta=beta, model=model) -> np.ndarray:
                obs_t = torch.as_tensor(obs, dtype=torch.float32)
                coefficient = model.balance(obs_t) if beta is None else torch.full((len(obs_t),), float(beta))
                return model.actor.mean(obs_t, coefficient).clamp(-model.max_action, model.max_action).numpy()

            scores = normalized_scores(act, data, args.episodes, args.seed)
            print(
                f"| {run.parent.name}/{run.name}/{checkpoint.name} | {label} | {scores.mean():.1f} +- "
                f"{scores.std():.1f} | {scores.min():.1f} | {scores.max():.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
