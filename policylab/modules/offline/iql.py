"""IQL: Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022 (arXiv:2110.06169), with CORL's settings for MuJoCo and for finetuning.

The value ``V`` regresses to an upper expectile of the target critics over dataset actions, the
critics regress to ``r + gamma * V(s')``, so no action outside the data is ever evaluated; the
Gaussian actor is extracted by advantage-weighted regression. Online, it keeps the same update
and explores by sampling its Gaussian.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.iql import awr_actor_loss, expectile_loss, iql_q_target
from policylab.losses.td3 import ensemble_mse_loss
from policylab.modules.base import RLModule, adam
from policylab.nn import EnsembleCritic, GaussianActor, frozen_copy, mlp, polyak_update


class IQL(RLModule):
    """IQL with CORL's MuJoCo defaults: expectile 0.7, inverse temperature ``beta`` 3, weights
    capped at 100, lr 3e-4 (the actor's decayed by a cosine over ``actor_lr_decay_steps``),
    discount 0.99, tau 0.005, 256-256 networks, Gaussian actor.

    One training step: value (the counted step), critics with the target-critic update, actor.
    """

    compiled_losses = ("value_loss", "critic_loss", "actor_loss")

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        expectile: float = 0.7,
        beta: float = 3.0,
        max_weight: float = 100.0,
        discount: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        value_lr: float = 3e-4,
        actor_lr_decay_steps: int | None = 1_000_000,
        hidden_dims: Sequence[int] = (256, 256),
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(obs_dim, compile, compile_mode, cuda_graph)
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"expectile must lie in (0, 1), got {expectile}")
        self.save_hyperparameters()
        self.max_action = float(max_action)
        self.actor = GaussianActor(obs_dim, action_dim, max_action, hidden_dims)
        self.critic = EnsembleCritic(obs_dim, action_dim, hidden_dims, num_critics=2)
        self.critic_target = frozen_copy(self.critic)
        self.value = mlp(obs_dim, 1, hidden_dims)

    def configure_optimizers(self):
        hp = self.hparams
        # The value optimizer is first: its step is the one counted as the training step.
        optimizers = [
            adam(self.value.parameters(), hp.value_lr),
            adam(self.critic.parameters(), hp.critic_lr),
            adam(self.actor.parameters(), hp.actor_lr),
        ]
        if hp.actor_lr_decay_steps:
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizers[2], T_max=hp.actor_lr_decay_steps)
            return optimizers, [schedule]
        return optimizers

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.actor.mean(obs)

    def exploration_action(self, obs: Tensor, noise_std: float, generator: torch.Generator | None = None) -> Tensor:
        """A sample of the Gaussian policy (``noise_std`` is for deterministic actors only)."""
        return self.actor.sample(obs, generator)

    # ----------------------------------------------------------------- losses
    def value_loss(self, batch: TransitionBatch) -> tuple[Tensor, Tensor]:
        """Expectile regression of ``V(s)`` to ``min_e Q'_e(s, a)``; returns (loss, advantage)."""
        with torch.no_grad():
            target_q = self.critic_target(batch.obs, batch.action).min(dim=0).values
        advantage = target_q - self.value(batch.obs).squeeze(-1)
        return expectile_loss(advantage, self.hparams.expectile), advantage.detach()

    def critic_loss(self, batch: TransitionBatch, next_value: Tensor) -> tuple[Tensor, Tensor]:
        """Mean over the two heads of the MSE to ``r + gamma * (1 - d) * V(s')``."""
        target = iql_q_target(batch.reward, batch.terminal, next_value, self.hparams.discount)
        q = self.critic(batch.obs, batch.action)
        return ensemble_mse_loss(q, target) / q.shape[0], q

    def actor_loss(self, batch: TransitionBatch, advantage: Tensor) -> Tensor:
        log_prob = self.actor.log_prob(batch.obs, batch.action)
        return awr_actor_loss(log_prob, advantage, self.hparams.beta, self.hparams.max_weight)

    # ----------------------------------------------------------------- steps
    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        """Value (the counted step) on the target critic, critic on V(s') + Polyak, then AWR actor."""
        value_opt, critic_opt, actor_opt = self.optimizers()
        with torch.no_grad():
            next_value = self.value(batch.next_obs).squeeze(-1)  # V(s') before this step's update

        value_loss, advantage = self.value_loss(batch)
        self.step_counted(value_opt, value_loss)

        critic_loss, q = self.critic_loss(batch, next_value)
        self.step_uncounted(critic_opt, critic_loss)
        polyak_update(self.critic_target, self.critic, self.hparams.tau)

        actor_loss = self.actor_loss(batch, advantage)
        self.step_uncounted(actor_opt, actor_loss)
        if not log:
            return {}
        return {
            "train/value_loss": value_loss,
            "train/critic_loss": critic_loss,
            "train/actor_loss": actor_loss,
            "train/q_mean": q.detach().mean(),
            "train/advantage_mean": advantage.mean(),
            "train/actor_std": self.actor.std().detach().mean(),
        }

    def _diagnostics(self, batch: TransitionBatch, prefix: str) -> None:
        next_value = self.value(batch.next_obs).squeeze(-1)
        critic_loss, q = self.critic_loss(batch, next_value)
        value_loss, advantage = self.value_loss(batch)
        pi = self.actor.mean(batch.obs)
        self.log_dict(
            {
                f"{prefix}/td_loss": critic_loss,
                f"{prefix}/value_loss": value_loss,
                f"{prefix}/q_data": q.mean(),
                f"{prefix}/advantage_data": advantage.mean(),
                f"{prefix}/action_mse": (pi - batch.action).pow(2).mean(),
            }
        )

    def validation_step(self, batch: TransitionBatch, batch_idx: int) -> None:
        """Offline diagnostics on dataset batches: TD and expectile losses, Q, advantage, action MSE."""
        self._diagnostics(batch, "val")

    def test_step(self, batch: TransitionBatch, batch_idx: int) -> None:
        self._diagnostics(batch, "test")
