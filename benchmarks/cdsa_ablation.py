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

import torch
from sweep_checkpoints import add_run_arguments, dataset_states, load_run, normalized_scores

VARIANTS = {
    "backbone": {"action_steps": 0, "state_weight": 0.0},
    "default": {},
    "action only": {"state_weight": 0.0},
    "state only": {"action_steps": 0},
    "half": {"action_steps": 1, "state_weight": 0.5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_arguments(parser)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print("| run | variant | normalized score (mean +- std) | vs backbone (paired mean) | mean abs change | Q change |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        _, model, data = load_run(run)
        obs = dataset_states(data, args.states, args.seed)
        backbone = model.backbone
        base_action = backbone.policy_action(obs)
        base_q = backbone.critic(obs, base_action).min(dim=0).values
        defaults = {k: model.hparams[k] for k in ("action_steps", "state_weight")}
        base_scores = None
        for name, change in VARIANTS.items():
            model.hparams.update({**defaults, **change})
            scores = normalized_scores(model.act, data, args.episodes, args.seed)
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
