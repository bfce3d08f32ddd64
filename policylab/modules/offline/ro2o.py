"""RO2O: Wen, Yu, Yang, Chen, Bai, Wang, "Towards Robust Offline-to-Online Reinforcement Learning via
Uncertainty and Smoothness", arXiv:2309.16973 (authors' code BattleWen/RO2O, built on CORL's SAC-N).

SAC-N (an ensemble of ``N = 10`` soft Q-functions, the actor and the target use their minimum)
with three regularizers on states perturbed by ``delta ~ U[-eps, eps]^dim(S)`` (``n = 20`` copies
per state, one offset set per batch and per regularizer):

- critic: ``eta1 * L_Qsmooth`` (the worst copy's asymmetric squared change of each member's Q,
  ``tau = 0.2``) and ``eta2 * L_ood`` (members regress onto ``Q_i - alpha_u * std Q`` at
  ``(s^, a^ ~ pi(s^))``, a pessimistic target whose weight ``alpha_u`` decays per critic update);
- actor: ``eta3 * L_Psmooth`` (the worst copy's symmetric KL between the pre-tanh Gaussians).

Each training step updates, in the authors' (EDAC's) order, the temperature, then the actor, then
the critic ensemble (the counted step), then ``alpha_u`` and the target critics.

Defaults and their source (``algorithms/offline/ro2o_mujoco.py`` ``TrainConfig`` and README command
for MuJoCo, which agree): 10 critics and a tanh-Gaussian actor, both 3x256, EDAC initialisation
(hidden biases 0.1, output layers U(+-3e-3) for the critics, U(+-1e-3) for the actor), log std
clipped to [-5, 2]; Adam lr 3e-4 for actor, critics and temperature (the class default 1e-4 is
overridden by the config), initial temperature 1, target entropy ``-dim(A)``; discount 0.99, tau
5e-3, batch 256; ``beta_policy`` (eta3) 1.0, ``beta_ood`` (eta2) 0.1, ``eps_Q = eps_P = eps_ood =
0.01``, ``n = 20``, ``alpha_u`` 1.0 -> 0.1 by 5e-7 per update. Hard-coded in their code:
``eta1 = 1e-4`` and ``tau = 0.2`` (README: "beta_Qsmooth == 0.0001"). Their budget: 2500 epochs of
1000 updates, states standardized (std + 1e-3), rewards unscaled.

The online phase. What the authors' ``algorithms/finetune/ro2o_ft_mujoco.py`` really does (their
finetuning script passes only gamma, tau and the temperature's lr to the agent, so every RO2O
setting takes the *class* default, not its config or README value):

- ``beta_policy`` 1.0, ``beta_ood`` 0.1, ``q/policy/ood_smooth_eps`` 0.01, ``sample_size`` 20
  (the same values as the config);
- ``alpha_u`` starts at 2.0 and decays by 1e-6 to 0.1 (config 1.0 / 5e-7; README asks for a fixed
  0.1 with decay 0); ``alpha_u`` is not in their checkpoint, so it restarts;
- and none of it matters for learning: their ``update_online`` computes the three regularizers but
  optimizes only SAC-N's losses (``loss = q_loss``, ``loss = critic_loss1``). Online RO2O in their
  code is SAC-N with min-over-10 targets, starting from the offline networks, optimizer moments
  and temperature.

This class decides each explicitly: ``online_uncertainty_weight = 0.1`` and
``online_uncertainty_decay = 0`` (the README's instruction) and ``online_regularization = False``
(what their code optimizes; ``True`` keeps the three regularizers online, weighted as offline).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.ro2o import (
    decayed_uncertainty_weight,
    ood_uncertainty_loss,
    perturbed_states,
    policy_smoothness_loss,
    q_smoothness_loss,
    uniform_perturbations,
    worst_copies,
)
from policylab.losses.sac import sac_actor_loss, sac_critic_target, sac_temperature_loss, squashed_gaussian_log_prob
from policylab.losses.td3 import ensemble_mse_loss
from policylab.modules.base import RLModule, adam, no_param_grads
from policylab.nn import EnsembleCritic, TanhGaussianActor, frozen_copy, polyak_update


@torch.no_grad()
def edac_init(actor: TanhGaussianActor, critic: EnsembleCritic) -> None:
    """EDAC's initialisation as the authors use it: every hidden bias 0.1, the actor's output layer
    U(+-1e-3), the critics' output layer U(+-3e-3) (weights and biases)."""
    linears = [m for m in actor.net if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        layer.bias.fill_(0.1)
    linears[-1].weight.uniform_(-1e-3, 1e-3)
    linears[-1].bias.uniform_(-1e-3, 1e-3)
    for layer in critic.layers:
        layer.bias.fill_(0.1)
    critic.layers[-1].weight.uniform_(-3e-3, 3e-3)
    critic.layers[-1].bias.uniform_(-3e-3, 3e-3)


class RO2O(RLModule):
    """RO2O's offline phase with the authors' MuJoCo defaults (module docstring lists each source)."""

    counted_optimizer = "critic"
    compiled_losses = ("critic_loss", "actor_loss")

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        num_critics: int = 10,
        discount: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        initial_alpha: float = 1.0,
        target_entropy: float | None = None,
        beta_q_smooth: float = 1e-4,
        q_smooth_tau: float = 0.2,
        beta_ood: float = 0.1,
        beta_policy: float = 1.0,
        q_smooth_eps: float = 0.01,
        ood_smooth_eps: float = 0.01,
        policy_smooth_eps: float = 0.01,
        sample_size: int = 20,
        uncertainty_weight: float = 1.0,
        uncertainty_weight_min: float = 0.1,
        uncertainty_decay: float = 5e-7,
        online_uncertainty_weight: float | None = 0.1,
        online_uncertainty_decay: float | None = 0.0,
        online_regularization: bool = False,
        actor_hidden_dims: Sequence[int] = (256, 256, 256),
        critic_hidden_dims: Sequence[int] = (256, 256, 256),
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        edac_initialization: bool = True,
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        checks = {
            "num_critics": num_critics >= 2,
            "sample_size": sample_size >= 1,
            "initial_alpha": initial_alpha > 0,
            "q_smooth_tau": 0.0 <= q_smooth_tau <= 1.0,
            "uncertainty_decay": uncertainty_decay >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = {n: v for n, v in locals().items() if n in bad}
            raise ValueError(
                f"RO2O: invalid {values}; need num_critics >= 2 (an ensemble std), sample_size >= 1, "
                "initial_alpha > 0, 0 <= q_smooth_tau <= 1, uncertainty_decay >= 0"
            )
        super().__init__(obs_dim, max_action, 1, compile, compile_mode, cuda_graph)
        self.target_entropy = float(-action_dim if target_entropy is None else target_entropy)
        self.actor = TanhGaussianActor(obs_dim, action_dim, max_action, actor_hidden_dims, log_std_min, log_std_max)
        self.critic = EnsembleCritic(obs_dim, action_dim, critic_hidden_dims, num_critics=num_critics)
        if edac_initialization:
            edac_init(self.actor, self.critic)
        self.critic_target = frozen_copy(self.critic)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(initial_alpha)))
        # alpha_u, its per-update decay and a switch for the regularizers: buffers, so that they are
        # checkpointed (a resumed run keeps its schedule) and updated on the device without a sync.
        # Float64: a 5e-7 step is below float32's resolution near 1 (6e-8 spacing, up to 12% rounding
        # per step), so a float32 schedule would drift over its 1.8M steps.
        self.register_buffer("uncertainty_weight", torch.tensor(float(uncertainty_weight), dtype=torch.float64))
        self.register_buffer("uncertainty_decay", torch.tensor(float(uncertainty_decay), dtype=torch.float64))
        self.register_buffer("regularization", torch.tensor(1.0))

    def on_online_start(self) -> None:
        """Finetuning (module docstring): ``alpha_u`` fixed at ``online_uncertainty_weight`` with
        ``online_uncertainty_decay`` (None keeps the offline schedule), and the three regularizers
        switched off unless ``online_regularization``."""
        hp = self.hparams
        if hp.online_uncertainty_weight is not None:
            self.uncertainty_weight.fill_(hp.online_uncertainty_weight)
        if hp.online_uncertainty_decay is not None:
            self.uncertainty_decay.fill_(hp.online_uncertainty_decay)
        self.regularization.fill_(1.0 if hp.online_regularization else 0.0)

    def named_optimizers(self):
        hp = self.hparams
        return {
            "critic": adam(self.critic.parameters(), hp.critic_lr),
            "actor": adam(self.actor.parameters(), hp.actor_lr),
            "alpha": adam([self.log_alpha], hp.alpha_lr),
        }

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.detach().exp()

    def policy_action(self, obs: Tensor) -> Tensor:
        return self.actor.deterministic(obs)

    def exploration_action(self, obs: Tensor, noise_std: float, generator: torch.Generator | None = None) -> Tensor:
        """A sample of the stochastic policy, as the authors collect online data (``noise_std`` unused)."""
        return self.actor(obs, generator)[0]

    def _perturbed(self, obs: Tensor, eps: float) -> Tensor:
        deltas = uniform_perturbations(self.hparams.sample_size, obs.shape[-1], eps, obs)
        return perturbed_states(obs, deltas)

    # ----------------------------------------------------------------- losses
    def critic_loss(self, batch: TransitionBatch, alpha: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``sum_i mean_b (Q_i(s, a) - y)^2 + r * (eta1 * L_Qsmooth + eta2 * L_ood)`` (``r`` = 1 offline);
        returns (loss, parts)."""
        hp = self.hparams
        n = hp.sample_size
        with torch.no_grad():
            next_action, next_log_prob = self.actor(batch.next_obs)
            next_q = self.critic_target(batch.next_obs, next_action)
            target = sac_critic_target(batch.reward, batch.terminal, next_q, next_log_prob, alpha, hp.discount)
        q = self.critic(batch.obs, batch.action)
        td = ensemble_mse_loss(q, target)

        # L_Qsmooth's max picks one copy per state: find it without gradients, then differentiate
        # through that copy alone (the same value and gradient as through all n)
        obs_q = self._perturbed(batch.obs, hp.q_smooth_eps)
        with torch.no_grad():
            worst = worst_copies(self.critic(obs_q, batch.action.repeat_interleave(n, dim=0)), q, hp.q_smooth_tau)
        obs_worst = obs_q.reshape(len(batch.obs), n, -1)[torch.arange(len(batch.obs), device=worst.device), worst]
        q_smooth = q_smoothness_loss(self.critic(obs_worst, batch.action), q, hp.q_smooth_tau)

        obs_ood = self._perturbed(batch.obs, hp.ood_smooth_eps)
        with torch.no_grad():
            ood_action, _ = self.actor(obs_ood)
        q_ood = self.critic(obs_ood, ood_action)
        ood = ood_uncertainty_loss(q_ood, self.uncertainty_weight)

        loss = td + self.regularization * (hp.beta_q_smooth * q_smooth + hp.beta_ood * ood)
        parts = {"td": td, "q_smooth": q_smooth, "ood": ood, "q": q.detach(), "q_ood_std": q_ood.detach().std(0)}
        return loss, parts

    def actor_loss(self, batch: TransitionBatch, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``mean(alpha log pi - min_i Q_i) + r * eta3 * L_Psmooth``; returns (loss, log pi, L_Psmooth)."""
        hp = self.hparams
        mean, log_std = self.actor.mean_and_log_std(batch.obs)
        pre_tanh = mean + torch.randn_like(mean) * log_std.exp()
        log_prob = squashed_gaussian_log_prob(pre_tanh, mean, log_std, self.max_action)
        action = self.max_action * torch.tanh(pre_tanh)
        with no_param_grads(self.critic):
            q_pi = self.critic(batch.obs, action)
        mean_p, log_std_p = self.actor.mean_and_log_std(self._perturbed(batch.obs, hp.policy_smooth_eps))
        smooth = policy_smoothness_loss(mean, log_std, mean_p, log_std_p)
        loss = sac_actor_loss(q_pi, log_prob, alpha) + self.regularization * hp.beta_policy * smooth
        return loss, log_prob, smooth

    # ----------------------------------------------------------------- one training step
    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        with torch.no_grad():
            _, log_prob_before = self.actor(batch.obs)
        alpha_loss = sac_temperature_loss(self.log_alpha, log_prob_before, self.target_entropy)
        self.step("alpha", alpha_loss)
        alpha = self.alpha

        actor_loss, log_prob, policy_smooth = self.actor_loss(batch, alpha)
        self.step("actor", actor_loss)

        critic_loss, parts = self.critic_loss(batch, alpha)
        self.step("critic", critic_loss)

        hp = self.hparams
        with torch.no_grad():
            self.uncertainty_weight.copy_(
                decayed_uncertainty_weight(self.uncertainty_weight, self.uncertainty_decay, hp.uncertainty_weight_min)
            )
        polyak_update(self.critic_target, self.critic, hp.tau)
        if not log:
            return {}
        return {
            "train/critic_loss": critic_loss.detach(),
            "train/td_loss": parts["td"].detach(),
            "train/q_smooth_loss": parts["q_smooth"].detach(),
            "train/ood_loss": parts["ood"].detach(),
            "train/actor_loss": actor_loss.detach(),
            "train/policy_smooth_loss": policy_smooth.detach(),
            "train/q_mean": parts["q"].mean(),
            "train/q_std": parts["q"].std(0).mean(),
            "train/q_ood_std": parts["q_ood_std"].mean(),
            "train/entropy": -log_prob.detach().mean(),
            "train/alpha": alpha,
            "train/uncertainty_weight": self.uncertainty_weight.clone(),
        }

    def diagnostics(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """TD error, mean and ensemble spread of Q at the dataset's actions, Q at the policy's action."""
        critic_loss, parts = self.critic_loss(batch, self.alpha)
        q_policy = self.critic(batch.obs, self.policy_action(batch.obs))
        return {
            **super().diagnostics(batch),
            "td_loss": parts["td"],
            "q_data": parts["q"].mean(),
            "q_std": parts["q"].std(0).mean(),
            "q_policy": q_policy.mean(),
        }
