"""Where CDSA's adjustment helps or hurts a trained backbone: one CDSA checkpoint (its score models
and its frozen backbone), evaluated with its adjustment switched off, in full, and in parts.

    python benchmarks/cdsa_ablation.py RUN_DIR [RUN_DIR ...] [--episodes 20] [--seed 70000] [--states 5000]

``RUN_DIR`` is a CDSA run folder (``<run>/checkpoints/last.ckpt``, e.g. one of the table sweep's
``runs/cdsa_td3bc/<dataset>/seed0``). Every variant is evaluated on the same episode seeds (the
comparison is paired): ``backbone`` (no adjustment), ``default`` (the run's own settings),
``action only`` (no state guidance), ``state only`` (no action steps), ``half`` (one action step,
state weight 0.5). On ``--states`` dataset states it also reports how far each variant moves the
backbone's action (mean absolute change per dimension) and the backbone critic's Q of the moved
action minus that of the backbone's own (min over its critics): a negative value means the
adjustment leads to actions the backbone itself values lower.
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

VARIANTS = {
    "backbone": {"action_steps": 0, "state_weight": 0.0},
    "default": {},
    "action only": {"state_weight": 0.0},
    "state only": {"action_steps": 0},
    "half": {"action_steps": 1, "state_weight": 0.5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=70_000)
    parser.add_argument("--states", type=int, default=5000)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print("| run | variant | normalized score (mean +- std) | vs backbone (paired mean) | mean abs change | Q change |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        run = Path(run)
        model = load_policy_checkpoint(str(run / "checkpoints/last.ckpt"))
        config = yaml.safe_load((run / "config.yaml").read_text())
        dataset = config["data"]["init_args"]["dataset"]
        data = OfflineTransitionDataModule(dataset).load()
        env_id = data.env_id
        refs = data.reference_scores or reference_scores(env_id)
        mean, std = (t.numpy() for t in data.observation_statistics)
        obs = data.buffer.sample(args.states, torch.Generator().manual_seed(args.seed)).obs
        backbone = model.backbone
        base_action = backbone.policy_action(obs)
        base_q = backbone.critic(obs, base_action).min(dim=0).values
        defaults = {k: model.hparams[k] for k in ("action_steps", "state_weight")}
        base_scores = None
        for name, change in VARIANTS.items():
            model.hparams.update({**defaults, **change})
            returns = evaluate_policy(model.act, env_id, args.episodes, seed=args.seed, obs_mean=mean, obs_std=std)
            scores = np.asarray(normalized_score(returns, *refs))
            adjusted = model.adjust(obs, base_action)
            moved = (adjusted - base_action).abs().mean().item()
            dq = (backbone.critic(obs, adjusted).min(dim=0).values - base_q).mean().item()
            if base_scores is None:
                base_scores = scores
            paired = (scores - base_scores).mean()
            print(
                f"| {run.parent.parent.name}/{run.parent.name}/{run.name} | {name} | {scores.mean():.1f} +- "
                f"{scores.std():.1f} | {paired:+.1f} | {moved:.4f} | {dq:+.3f} |",
                flush=True,
            )
        model.hparams.update(defaults)


if __name__ == "__main__":
    main()
