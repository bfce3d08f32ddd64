"""SAC: Haarnoja et al., "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905 (2018).

Off-policy maximum-entropy actor-critic: twin soft Q critics regress onto the soft Bellman
target, the tanh-Gaussian actor maximizes ``min Q - alpha * log pi``, and the temperature
``alpha`` is tuned so the policy's entropy stays near ``-dim(A)``. policylab trains it online
(with :class:`~policylab.callbacks.EnvInteraction` and a
:class:`~policylab.datamodules.ReplayBufferDataModule`) and builds its datasets with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.sac import sac_actor_loss, sac_critic_target, sac_temperature_loss
from policylab.losses.td3 import ensemble_mse_loss
from policylab.modules.base import RLModule, adam, no_param_grads
from policylab.nn import EnsembleCritic, TanhGaussianActor, frozen_copy, polyak_update


class SAC(RLModule):
    """SAC with the paper's defaults (table 1: lr 3e-4 for actor, critics and temperature,
    discount 0.99, tau 0.005, two 256-256 critics, one gradient step per env step, learned
    temperature with target entropy ``-dim(A)``).

    Every training step updates the critics (the counted step), then the actor, then the
    temperature, then the target critics. Evaluation uses the mean action ``tanh(mean(s))``.
    """

    counted_optimizer = "critic"
    compiled_losses = ("critic_loss", "actor_loss")

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        discount: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        initial_alpha: float = 1.0,
        learn_alpha: bool = True,
        target_entropy: float | None = None,
        actor_hidden_dims: Sequence[int] = (256, 256),
        critic_hidden_dims: Sequence[int] = (256, 256),
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        if initial_alpha <= 0:
            raise ValueError(f"initial_alpha must be positive, got {initial_alpha}")
        super().__init__(obs_dim, max_action, 1, compile, compile_mode, cuda_graph)
        self.target_entropy = float(-action_dim if target_entropy is None else target_entropy)
        self.actor = TanhGaussianActor(obs_dim, action_dim, max_action, actor_hidden_dims, log_std_min, log_std_max)
        self.critic = EnsembleCritic(obs_dim, action_dim, critic_hidden_dims, num_critics=2)
        self.critic_target = frozen_copy(self.critic)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)), requires_grad=learn_alpha)

    def named_optimizers(self):
        hp = self.hparams
        optimizers = {
            "critic": adam(self.critic.parameters(), hp.critic_lr),
            "actor": adam(self.actor.parameters(), hp.actor_lr),
        }
        if hp.learn_alpha:
            optimizers["alpha"] = adam([self.log_alpha], hp.alpha_lr)
        return optimizers

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.detach().exp()

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.actor.deterministic(obs)

    def exploration_action(self, obs: Tensor, noise_std: float, generator: torch.Generator | None = None) -> Tensor:
        """A sample of the stochastic policy (``noise_std`` is for deterministic actors only)."""
        return self.actor(obs, generator)[0]

    # ----------------------------------------------------------------- losses
    def critic_loss(self, batch: TransitionBatch, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """Soft TD loss on both critic heads; returns (loss, Q(s, a) of shape [2, B])."""
        with torch.no_grad():
            next_action, next_log_prob = self.actor(batch.next_obs)
            next_q = self.critic_target(batch.next_obs, next_action)
            target = sac_critic_target(
                batch.reward, batch.terminal, next_q, next_log_prob, alpha, self.hparams.discount
            )
        q = self.critic(batch.obs, batch.action)
        return ensemble_mse_loss(q, target), q

    def actor_loss(self, batch: TransitionBatch, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterized policy loss; returns (loss, log pi of the sampled actions)."""
        action, log_prob = self.actor(batch.obs)
        with no_param_grads(self.critic):
            q_pi = self.critic(batch.obs, action)
        return sac_actor_loss(q_pi, log_prob, alpha), log_prob

    # ----------------------------------------------------------------- one training step
    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        alpha = self.alpha

        critic_loss, q = self.critic_loss(batch, alpha)
        self.step("critic", critic_loss)

        actor_loss, log_prob = self.actor_loss(batch, alpha)
        self.step("actor", actor_loss)

        if self.hparams.learn_alpha:
            alpha_loss = sac_temperature_loss(self.log_alpha, log_prob, self.target_entropy)
            self.step("alpha", alpha_loss)

        polyak_update(self.critic_target, self.critic, self.hparams.tau)
        if not log:
            return {}
        return {
            "train/critic_loss": critic_loss,
            "train/actor_loss": actor_loss,
            "train/q_mean": q.detach().mean(),
            "train/entropy": -log_prob.detach().mean(),
            "train/alpha": alpha,
        }

    def diagnostics(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """Soft TD error and Q of the stored actions, action MSE of the mean action."""
        critic_loss, q = self.critic_loss(batch, self.alpha)
        return {**super().diagnostics(batch), "td_loss": critic_loss, "q_data": q.mean()}
