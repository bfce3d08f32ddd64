"""TD3+BC: Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021.

TD3 with target policy smoothing and clipped double Q; every ``policy_freq`` steps the actor
maximizes ``lambda * Q_1(s, pi(s))`` minus the squared distance of ``pi(s)`` to the dataset
action, ``lambda = alpha / mean |Q|``. Observations are standardized with dataset statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.td3 import ensemble_mse_loss, td3_critic_target
from policylab.losses.td3bc import td3bc_actor_loss
from policylab.modules.base import RLModule, adam, no_param_grads
from policylab.nn import DeterministicActor, EnsembleCritic, frozen_copy, polyak_update


class TD3BC(RLModule):
    """TD3+BC with the paper's defaults (alpha 2.5, lr 3e-4, tau 0.005, policy noise 0.2,
    noise clip 0.5, delayed actor updates every 2 steps, 256-256 actor and critics).

    One training step: the critics (the counted step); every ``policy_freq`` steps the actor and
    the target networks.
    """

    counted_optimizer = "critic"
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
        actor_hidden_dims: Sequence[int] = (256, 256),
        critic_hidden_dims: Sequence[int] = (256, 256),
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(obs_dim, max_action, policy_freq, compile, compile_mode, cuda_graph)
        self.actor = DeterministicActor(obs_dim, action_dim, max_action, actor_hidden_dims)
        self.critic = EnsembleCritic(obs_dim, action_dim, critic_hidden_dims, num_critics=2)
        self.actor_target = frozen_copy(self.actor)
        self.critic_target = frozen_copy(self.critic)

    def named_optimizers(self):
        hp = self.hparams
        return {
            "critic": adam(self.critic.parameters(), hp.critic_lr),
            "actor": adam(self.actor.parameters(), hp.actor_lr),
        }

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.actor(obs)

    # ----------------------------------------------------------------- losses
    def critic_loss(self, batch: TransitionBatch) -> tuple[Tensor, Tensor]:
        """Clipped double-Q TD loss on both critic heads; returns (loss, Q(s, a) of shape [2, B])."""
        hp = self.hparams
        target, _ = td3_critic_target(
            self.actor_target, self.critic_target, batch, hp.discount, hp.policy_noise, hp.noise_clip, self.max_action
        )
        q = self.critic(batch.obs, batch.action)
        return ensemble_mse_loss(q, target), q

    def actor_loss(self, batch: TransitionBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """TD3+BC actor loss; returns (loss, its terms to log: lambda, mean squared action error)."""
        pi = self.actor(batch.obs)
        with no_param_grads(self.critic):
            q_pi = self.critic(batch.obs, pi, members=1)[0]
        loss, lam = td3bc_actor_loss(q_pi, pi, batch.action, self.hparams.alpha)
        return loss, {"lambda": lam, "bc_mse": (pi.detach() - batch.action).pow(2).mean()}

    # ----------------------------------------------------------------- one training step
    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        critic_loss, q = self.critic_loss(batch)
        self.step("critic", critic_loss)
        metrics = {"train/critic_loss": critic_loss, "train/q_mean": q.detach().mean()} if log else {}
        if update_actor:
            actor_loss, terms = self.actor_loss(batch)
            self.step("actor", actor_loss)
            polyak_update(self.critic_target, self.critic, self.hparams.tau)
            polyak_update(self.actor_target, self.actor, self.hparams.tau)
            if log:
                metrics.update({"train/actor_loss": actor_loss, **{f"train/{k}": v for k, v in terms.items()}})
        return metrics

    def diagnostics(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """TD error, Q of the dataset's and of the policy's actions, action MSE."""
        critic_loss, q = self.critic_loss(batch)
        q_policy = self.critic(batch.obs, self.actor(batch.obs), members=1)
        return {**super().diagnostics(batch), "td_loss": critic_loss, "q_data": q.mean(), "q_policy": q_policy.mean()}
