"""A2PR: Liu et al., "Adaptive Advantage-Guided Policy Regularization for Offline Reinforcement
Learning", ICML 2024 (https://arxiv.org/abs/2405.19909; authors' code ltlhuuu/A2PR).

TD3+BC whose behaviour-cloning term adapts per sample: a value network ``V`` and a VAE trained
only on positive-advantage dataset actions decide whether the actor is pulled towards the
dataset action or towards the VAE's reconstruction of its own action, whichever has the higher
advantage, and by how much (``mask``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.a2pr import a2pr_value_target, advantage_filtered_vae_loss, advantage_guided_bc_loss
from policylab.losses.td3 import ensemble_mse_loss, td3_critic_target
from policylab.losses.td3bc import q_scale
from policylab.modules.base import RLModule, adam, no_param_grads
from policylab.nn import ConditionalVAE, DeterministicActor, EnsembleCritic, frozen_copy, mlp, polyak_update


class A2PR(RLModule):
    """A2PR with the authors' defaults: actor 3x256, twin critics and value 4x256, VAE 2x750 with
    latent ``2 * action_dim`` (lr 1e-3), lr 3e-4 elsewhere, TD3 smoothing (0.2, clip 0.5),
    actor every 2 steps, ``alpha = 2.5``, ``mask = 1``, ``vae_weight = 1``. Hopper in the paper:
    ``mask 0.4``, ``discount 0.995`` (``configs/a2pr_hopper.yaml``).

    One training step: critics (the counted step), value, VAE, then every ``policy_freq`` steps
    the actor and the target networks.
    """

    counted_optimizer = "critic"
    compiled_losses = ("critic_loss", "value_loss", "actor_loss")

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        alpha: float = 2.5,
        mask: float = 1.0,
        vae_weight: float = 1.0,
        discount: float = 0.99,
        tau: float = 0.005,
        policy_noise: float = 0.2,
        noise_clip: float = 0.5,
        policy_freq: int = 2,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        value_lr: float = 3e-4,
        vae_lr: float = 1e-3,
        actor_hidden_dims: Sequence[int] = (256, 256, 256),
        critic_hidden_dims: Sequence[int] = (256, 256, 256, 256),
        value_hidden_dims: Sequence[int] = (256, 256, 256, 256),
        vae_hidden_dims: Sequence[int] = (750, 750),
        online_alpha: float | None = None,
        online_mask: float | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(obs_dim, max_action, policy_freq, compile, compile_mode, cuda_graph)
        self.alpha, self.mask = alpha, mask  # the values in force (the online phase may change them)
        self.actor = DeterministicActor(obs_dim, action_dim, max_action, actor_hidden_dims)
        self.critic = EnsembleCritic(obs_dim, action_dim, critic_hidden_dims, num_critics=2)
        self.value = mlp(obs_dim, 1, value_hidden_dims)
        self.vae = ConditionalVAE(obs_dim, action_dim, 2 * action_dim, max_action, vae_hidden_dims)
        self.actor_target = frozen_copy(self.actor)
        self.critic_target = frozen_copy(self.critic)

    def on_online_start(self) -> None:
        """Finetuning: switch to ``online_alpha`` / ``online_mask`` where given (None keeps the
        offline values; a smaller mask loosens the pull towards dataset and VAE actions)."""
        hp = self.hparams
        self.alpha = hp.alpha if hp.online_alpha is None else hp.online_alpha
        self.mask = hp.mask if hp.online_mask is None else hp.online_mask

    def named_optimizers(self):
        hp = self.hparams
        return {
            "critic": adam(self.critic.parameters(), hp.critic_lr),
            "value": adam(self.value.parameters(), hp.value_lr),
            "vae": adam(self.vae.parameters(), hp.vae_lr),
            "actor": adam(self.actor.parameters(), hp.actor_lr),
        }

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.actor(obs)

    # ----------------------------------------------------------------- losses
    def critic_loss(self, batch: TransitionBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """TD3 loss on both heads; returns (loss, Q(s, a) [2, B], target y [B], smoothed a')."""
        hp = self.hparams
        target, next_action = td3_critic_target(
            self.actor_target, self.critic_target, batch, hp.discount, hp.policy_noise, hp.noise_clip, self.max_action
        )
        q = self.critic(batch.obs, batch.action)
        return ensemble_mse_loss(q, target), q, target, next_action

    def value_loss(self, batch: TransitionBatch, critic_target: Tensor, next_action: Tensor) -> tuple[Tensor, Tensor]:
        """MSE of ``V(s)`` to :func:`a2pr_value_target`; returns (loss, V(s) before the update)."""
        with torch.no_grad():
            next_q = self.critic(batch.next_obs, next_action)
            target = a2pr_value_target(batch.reward, batch.terminal, next_q, critic_target, self.hparams.discount)
        value = self.value(batch.obs).squeeze(-1)
        return F.mse_loss(value, target), value.detach()

    def actor_loss(
        self, batch: TransitionBatch, q_data: Tensor, value: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``-lambda * mean Q_1(s, pi(s))`` plus the advantage-guided BC term; returns
        (loss, lambda, BC term, fraction of samples whose target is the VAE reconstruction)."""
        pi = self.actor(batch.obs)
        with no_param_grads(self.critic), no_param_grads(self.vae):
            q_pi = self.critic(batch.obs, pi, members=1)[0]
            recon_pi = self.vae(batch.obs, pi)[0]
            with torch.no_grad():
                q_recon = self.critic(batch.obs, recon_pi, members=1)[0]
        lam = q_scale(q_pi, self.alpha)
        bc = advantage_guided_bc_loss(pi, batch.action, recon_pi, q_data, q_recon, value, self.mask)
        return -lam * q_pi.mean() + bc, lam, bc, (q_recon >= q_data).float().mean()

    # ----------------------------------------------------------------- one training step
    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        hp = self.hparams

        critic_loss, q, critic_target, next_action = self.critic_loss(batch)
        self.step("critic", critic_loss)

        value_loss, value = self.value_loss(batch, critic_target, next_action)
        self.step("value", value_loss)

        # Q_1(s, a) of the updated critic: the VAE's filter and the actor's advantages use it.
        with torch.no_grad():
            q_data = self.critic(batch.obs, batch.action, members=1)[0]
        recon, mean, std = self.vae(batch.obs, batch.action)
        vae_loss, recon_loss, kl = advantage_filtered_vae_loss(
            recon, batch.action, mean, std, q_data, value, hp.vae_weight
        )
        self.step("vae", vae_loss)

        metrics = {}
        if log:
            metrics = {
                "train/critic_loss": critic_loss,
                "train/value_loss": value_loss,
                "train/vae_loss": vae_loss,
                "train/vae_recon_loss": recon_loss,
                "train/vae_kl": kl,
                "train/q_mean": q.detach().mean(),
                "train/value_mean": value.mean(),
                "train/positive_advantage": (q_data > value).float().mean(),
            }
        if update_actor:
            actor_loss, lam, bc, recon_share = self.actor_loss(batch, q_data, value)
            self.step("actor", actor_loss)
            polyak_update(self.critic_target, self.critic, hp.tau)
            polyak_update(self.actor_target, self.actor, hp.tau)
            if log:
                metrics.update(
                    {
                        "train/actor_loss": actor_loss,
                        "train/lambda": lam,
                        "train/bc_loss": bc,
                        "train/vae_target_share": recon_share,
                    }
                )
        return metrics

    def diagnostics(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """TD error, Q of the dataset's and of the policy's actions, advantage of the data, action MSE."""
        critic_loss, q, _, _ = self.critic_loss(batch)
        q_policy = self.critic(batch.obs, self.actor(batch.obs), members=1)
        advantage = q[0] - self.value(batch.obs).squeeze(-1)
        return {
            **super().diagnostics(batch),
            "td_loss": critic_loss,
            "q_data": q.mean(),
            "q_policy": q_policy.mean(),
            "advantage_data": advantage.mean(),
        }
