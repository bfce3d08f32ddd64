"""TD3+BC: Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021.

TD3 with target policy smoothing and clipped double Q; every ``policy_freq`` steps the actor
maximizes ``lambda * Q_1(s, pi(s))`` minus the squared distance of ``pi(s)`` to the dataset
action, ``lambda = alpha / mean |Q|``. Observations are standardized with dataset statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.td3 import clipped_double_q_target, ensemble_mse_loss, smoothed_target_action
from policylab.losses.td3bc import td3bc_actor_loss
from policylab.modules.base import RLModule, adam, no_param_grads
from policylab.nn import DeterministicActor, EnsembleCritic, frozen_copy, polyak_update


@torch.no_grad()
def td3_critic_target(module: RLModule, batch: TransitionBatch) -> tuple[Tensor, Tensor]:
    """TD3's critic target for a module with ``actor_target``, ``critic_target``, ``max_action``
    and the hyperparameters ``policy_noise``, ``noise_clip`` (in units of ``max_action``) and
    ``discount``: returns (y, the smoothed next action a')."""
    hp, bound = module.hparams, module.max_action
    next_action = smoothed_target_action(
        module.actor_target(batch.next_obs), hp.policy_noise * bound, hp.noise_clip * bound, bound
    )
    next_q = module.critic_target(batch.next_obs, next_action)
    return clipped_double_q_target(batch.reward, batch.terminal, next_q, hp.discount), next_action


class TD3BC(RLModule):
    """TD3+BC with the paper's defaults (alpha 2.5, lr 3e-4, tau 0.005, policy noise 0.2,
    noise clip 0.5, delayed actor updates every 2 steps, 256-256 MLPs)."""

    compiled_losses = ("critic_loss", "actor_loss")

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        alpha: float = 2.5,
        discount: float = 0.99,
        tau: float = 0.005,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_freq: int = 2,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        hidden_dims: Sequence[int] = (256, 256),
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(obs_dim, compile, compile_mode, cuda_graph)
        self.save_hyperparameters()
        self.max_action = float(max_action)
        self.actor = DeterministicActor(obs_dim, action_dim, max_action, hidden_dims)
        self.critic = EnsembleCritic(obs_dim, action_dim, hidden_dims, num_critics=2)
        self.actor_target = frozen_copy(self.actor)
        self.critic_target = frozen_copy(self.critic)

    def configure_optimizers(self):
        # The critic optimizer is first: its step is the one counted as the training step.
        return adam(self.critic.parameters(), self.hparams.critic_lr), adam(
            self.actor.parameters(), self.hparams.actor_lr
        )

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.actor(obs)

    # ----------------------------------------------------------------- losses
    def critic_loss(self, batch: TransitionBatch) -> tuple[Tensor, Tensor]:
        """Clipped double-Q TD loss on both critic heads; returns (loss, Q(s, a) of shape [2, B])."""
        target, _ = td3_critic_target(self, batch)
        q = self.critic(batch.obs, batch.action)
        return ensemble_mse_loss(q, target), q

    def actor_loss(self, batch: TransitionBatch) -> tuple[Tensor, Tensor, Tensor]:
        """TD3+BC actor loss; returns (loss, lambda, mean squared action error)."""
        pi = self.actor(batch.obs)
        with no_param_grads(self.critic):
            q_pi = self.critic(batch.obs, pi, members=1)[0]
        loss, lam = td3bc_actor_loss(q_pi, pi, batch.action, self.hparams.alpha)
        return loss, lam, (pi.detach() - batch.action).pow(2).mean()

    # ----------------------------------------------------------------- steps
    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        """Critic step (the counted one); every ``policy_freq`` steps the actor and the targets."""
        critic_opt, actor_opt = self.optimizers()
        critic_loss, q = self.critic_loss(batch)
        self.step_counted(critic_opt, critic_loss)
        metrics = {"train/critic_loss": critic_loss, "train/q_mean": q.detach().mean()} if log else {}
        if update_actor:
            actor_loss, lam, bc_mse = self.actor_loss(batch)
            self.step_uncounted(actor_opt, actor_loss)
            polyak_update(self.critic_target, self.critic, self.hparams.tau)
            polyak_update(self.actor_target, self.actor, self.hparams.tau)
            if log:
                metrics.update({"train/actor_loss": actor_loss, "train/lambda": lam, "train/bc_mse": bc_mse})
        return metrics

    def _diagnostics(self, batch: TransitionBatch, prefix: str) -> None:
        critic_loss, q = self.critic_loss(batch)
        pi = self.actor(batch.obs)
        self.log_dict(
            {
                f"{prefix}/td_loss": critic_loss,
                f"{prefix}/q_data": q.mean(),
                f"{prefix}/q_policy": self.critic(batch.obs, pi, members=1).mean(),
                f"{prefix}/action_mse": (pi - batch.action).pow(2).mean(),
            }
        )

    def validation_step(self, batch: TransitionBatch, batch_idx: int) -> None:
        """Offline diagnostics on dataset batches: TD error, Q of data and policy actions, action MSE."""
        self._diagnostics(batch, "val")

    def test_step(self, batch: TransitionBatch, batch_idx: int) -> None:
        self._diagnostics(batch, "test")
