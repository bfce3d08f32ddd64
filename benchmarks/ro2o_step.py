"""RO2O's update at full size: L_Qsmooth differentiated through each state's worst copy (policylab)
against through all ``n`` copies (the authors' layout), alternating rounds in one process.

    python benchmarks/ro2o_step.py [--rounds 5] [--steps 3] [--threads 2]

Each step is the update's two losses and their backward passes (critic, then actor) at the
authors' settings: 10 critics 3x256, 20 perturbed copies per state for each regularizer, batch 256,
Hopper's dimensions (11 / 3). Optimizer steps are left out: they are the same in both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policylab.datamodules.transitions import TransitionBatch  # noqa: E402
from policylab.losses.ro2o import ood_uncertainty_loss, q_smoothness_loss  # noqa: E402
from policylab.losses.sac import sac_critic_target  # noqa: E402
from policylab.losses.td3 import ensemble_mse_loss  # noqa: E402
from policylab.modules.offline import RO2O  # noqa: E402


class AllCopiesRO2O(RO2O):
    """L_Qsmooth through every copy, as the authors write it (the same loss and gradient)."""

    def critic_loss(self, batch, alpha):
        hp, n = self.hparams, self.hparams.sample_size
        with torch.no_grad():
            next_action, next_log_prob = self.actor(batch.next_obs)
            next_q = self.critic_target(batch.next_obs, next_action)
            target = sac_critic_target(batch.reward, batch.terminal, next_q, next_log_prob, alpha, hp.discount)
        q = self.critic(batch.obs, batch.action)
        td = ensemble_mse_loss(q, target)
        obs_q = self._perturbed(batch.obs, hp.q_smooth_eps)
        q_smooth = q_smoothness_loss(self.critic(obs_q, batch.action.repeat_interleave(n, dim=0)), q, hp.q_smooth_tau)
        obs_ood = self._perturbed(batch.obs, hp.ood_smooth_eps)
        with torch.no_grad():
            ood_action, _ = self.actor(obs_ood)
        ood = ood_uncertainty_loss(self.critic(obs_ood, ood_action), self.uncertainty_weight)
        return td + hp.beta_q_smooth * q_smooth + hp.beta_ood * ood, {}


def step(model: RO2O, batch: TransitionBatch) -> None:
    alpha = model.log_alpha.exp().detach()
    critic_loss, _ = model.critic_loss(batch, alpha)
    critic_loss.backward()
    actor_loss, _, _ = model.actor_loss(batch, alpha)
    actor_loss.backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and implementation")
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    torch.manual_seed(0)
    ours, theirs = RO2O(11, 3), AllCopiesRO2O(11, 3)
    theirs.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(0)
    batch = TransitionBatch(
        torch.randn(256, 11, generator=g),
        torch.rand(256, 3, generator=g) * 2 - 1,
        torch.randn(256, generator=g),
        torch.randn(256, 11, generator=g),
        torch.zeros(256),
        torch.zeros(256),
    )
    step(ours, batch), step(theirs, batch)  # warm-up
    ratios = []
    for round_ in range(options.rounds):
        seconds = {}
        for name, model in (("all copies", theirs), ("worst copy", ours)):
            start = time.perf_counter()
            for _ in range(options.steps):
                step(model, batch)
            seconds[name] = (time.perf_counter() - start) / options.steps
        ratios.append(seconds["all copies"] / seconds["worst copy"])
        line = "   ".join(f"{name} {value:.3f} s/step" for name, value in seconds.items())
        print(f"round {round_}: {line}", flush=True)
    print(f"median speed-up of the worst-copy backward: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
