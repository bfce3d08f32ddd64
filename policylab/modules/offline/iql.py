"""IQL: Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022 (arXiv:2110.06169), with CORL's settings for MuJoCo and for finetuning.

The value ``V`` regresses to an upper expectile of the target critics over dataset actions, the
critics regress to ``r + gamma * V(s')``, so no action outside the data is ever evaluated; the
actor is extracted by advantage-weighted regression: a Gaussian by weighted log-likelihood, or
(CORL's ``iql_deterministic``, its Hopper medium and medium-replay setting) a deterministic actor
by weighted squared error. Online it keeps the same update; the Gaussian explores by sampling,
the deterministic actor with Gaussian noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.bc import weighted_bc_loss
from policylab.losses.iql import awr_actor_loss, awr_weights, expectile_loss, iql_q_target
from policylab.losses.td3 import ensemble_mse_loss
from policylab.modules.base import RLModule, adam
from policylab.nn import DeterministicActor, EnsembleCritic, GaussianActor, frozen_copy, mlp, polyak_update


class IQL(RLModule):
    """IQL with CORL's MuJoCo defaults: expectile 0.7, inverse temperature ``beta`` 3, weights
    capped at 100, lr 3e-4 (the actor's decayed by a cosine over ``actor_lr_decay_steps``),
    discount 0.99, tau 0.005, 256-256 networks, Gaussian actor (``deterministic_actor=True``:
    ``max_action * tanh(MLP(s))`` trained by ``mean(exp(beta * A) * ||pi(s) - a||^2)``).

    One training step: value (the counted step), critics with the target-critic update, actor.
    """

    counted_optimizer = "value"
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
        deterministic_actor: bool = False,
        actor_hidden_dims: Sequence[int] = (256, 256),
        critic_hidden_dims: Sequence[int] = (256, 256),
        value_hidden_dims: Sequence[int] = (256, 256),
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"expectile must lie in (0, 1), got {expectile}")
        super().__init__(obs_dim, max_action, 1, compile, compile_mode, cuda_graph)
        actor = DeterministicActor if deterministic_actor else GaussianActor
        self.actor = actor(obs_dim, action_dim, max_action, actor_hidden_dims)
        self.critic = EnsembleCritic(obs_dim, action_dim, critic_hidden_dims, num_critics=2)
        self.critic_target = frozen_copy(self.critic)
        self.value = mlp(obs_dim, 1, value_hidden_dims)

    def named_optimizers(self):
        hp = self.hparams
        return {
            "value": adam(self.value.parameters(), hp.value_lr),
            "critic": adam(self.critic.parameters(), hp.critic_lr),
            "actor": adam(self.actor.parameters(), hp.actor_lr),
        }

    def named_lr_schedulers(self, optimizers):
        steps = self.hparams.actor_lr_decay_steps
        return {"actor": torch.optim.lr_scheduler.CosineAnnealingLR(optimizers["actor"], T_max=steps)} if steps else {}

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.actor(obs) if self.hparams.deterministic_actor else self.actor.mean(obs)

    def exploration_action(self, obs: Tensor, noise_std: float, generator: torch.Generator | None = None) -> Tensor:
        """A sample of the Gaussian policy; the deterministic actor adds Gaussian noise (``noise_std``)."""
        if self.hparams.deterministic_actor:
            return super().exploration_action(obs, noise_std, generator)
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
        """Advantage-weighted regression onto the dataset's actions (eq. 7)."""
        hp = self.hparams
        if hp.deterministic_actor:
            return weighted_bc_loss(self.actor(batch.obs), batch.action, awr_weights(advantage, hp.beta, hp.max_weight))
        return awr_actor_loss(self.actor.log_prob(batch.obs, batch.action), advantage, hp.beta, hp.max_weight)

    # ----------------------------------------------------------------- one training step
    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        with torch.no_grad():
            next_value = self.value(batch.next_obs).squeeze(-1)  # V(s') before this step's update

        value_loss, advantage = self.value_loss(batch)
        self.step("value", value_loss)

        critic_loss, q = self.critic_loss(batch, next_value)
        self.step("critic", critic_loss)
        polyak_update(self.critic_target, self.critic, self.hparams.tau)

        actor_loss = self.actor_loss(batch, advantage)
        self.step("actor", actor_loss)
        if not log:
            return {}
        metrics = {
            "train/value_loss": value_loss,
            "train/critic_loss": critic_loss,
            "train/actor_loss": actor_loss,
            "train/q_mean": q.detach().mean(),
            "train/advantage_mean": advantage.mean(),
        }
        if not self.hparams.deterministic_actor:
            metrics["train/actor_std"] = self.actor.std().detach().mean()
        return metrics

    def diagnostics(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """TD and expectile losses, Q and advantage of the dataset's actions, action MSE."""
        critic_loss, q = self.critic_loss(batch, self.value(batch.next_obs).squeeze(-1))
        value_loss, advantage = self.value_loss(batch)
        return {
            **super().diagnostics(batch),
            "td_loss": critic_loss,
            "value_loss": value_loss,
            "q_data": q.mean(),
            "advantage_data": advantage.mean(),
        }
