"""FamO2O: Wang, Yang, Gao, Lin, Chen, Wu, Jia, Song, Huang, "Train Once, Get a Family:
State-Adaptive Balances for Offline-to-Online Reinforcement Learning", NeurIPS 2023
(https://arxiv.org/abs/2310.17966; authors' code LeapLabTHU/FamO2O, the IQL version in ``jax_iql/``).

IQL whose actor is a *universal* actor ``pi_u(a | s, beta)`` trained for a whole family of AWR
inverse temperatures ``beta`` at once (uniformly drawn ones offline), and a *balance model*
``pi_b(beta | s)`` trained to pick, per state, the ``beta`` whose action the critic values most;
online, the universal actor learns with the balance model's coefficients and acts with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policylab.datamodules.transitions import TransitionBatch
from policylab.losses.famo2o import balance_model_loss, balance_temperature_loss, universal_actor_loss
from policylab.modules.base import adam, no_param_grads
from policylab.modules.offline.iql import IQL
from policylab.nn import polyak_update
from policylab.nn.balance import BalanceModel, UniversalActor


class FamO2O(IQL):
    """FamO2O on IQL with the defaults of the authors' ``FamilyLearner`` (``jax_iql/family_learner.py``):
    coefficients ``beta`` in ``(1, 5)`` (around IQL's MuJoCo ``beta = 3``; their AntMaze config uses
    ``(8, 14)`` around 10), sinusoid encoding ``d = 6``, ``n = 10000``; balance model 256-256,
    tanh-Gaussian, lr 3e-4 (their actor lr), trained every step offline and online; its entropy
    temperature initialized at 1, lr 3e-4, target entropy -0.5; universal actor ``log std`` clamped
    to ``[-5, 2]``; lr 3e-4 everywhere, tau 0.005, discount 0.99, no actor lr decay (their
    finetuning config; their class default, a cosine over the *online* steps that starts counting
    offline, would reach 0 when finetuning begins). IQL's MuJoCo expectile 0.7 (AntMaze: 0.9).

    One training step (the authors' order): value (the counted step); balance model, maximizing
    the target critics' ``min Q(s, a)`` for ``a ~ pi_u(.|s, beta)``, ``beta ~ pi_b(.|s)`` (actor
    and critics frozen in this step); its temperature; universal actor by AWR with coefficients
    ``U(low, high)`` offline and samples of the balance model (before its step) online; critics;
    target critics. The IQL part is policylab's IQL step (``V(s')`` and the advantage from ``V``
    before its step; the authors' JAX IQL uses ``V`` after it, one Adam step apart). Weights start
    from PyTorch's default initialization, as policylab's IQL (the authors': flax orthogonal).

    Acting, offline and online: ``beta`` is the balance model's deterministic coefficient
    ``beta(tanh(m(s)))``; evaluation takes the universal actor's mean, online collection a sample.
    """

    counted_optimizer = "value"
    compiled_losses = ("value_loss", "critic_loss", "actor_loss", "balance_loss")

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_action: float = 1.0,
        coefficient_range: Sequence[float] = (1.0, 5.0),
        encoding_dim: int = 6,
        encoding_base: float = 10000.0,
        balance_lr: float = 3e-4,
        initial_temperature: float = 1.0,
        temperature_lr: float = 3e-4,
        target_entropy: float = -0.5,
        actor_log_std_min: float = -5.0,
        expectile: float = 0.7,
        max_weight: float = 100.0,
        discount: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        value_lr: float = 3e-4,
        actor_lr_decay_steps: int | None = None,
        actor_hidden_dims: Sequence[int] = (256, 256),
        critic_hidden_dims: Sequence[int] = (256, 256),
        value_hidden_dims: Sequence[int] = (256, 256),
        balance_hidden_dims: Sequence[int] = (256, 256),
        compile: bool = False,
        compile_mode: str | None = None,
        cuda_graph: bool = False,
    ) -> None:
        low, high = (float(v) for v in coefficient_range)
        if not 0.0 <= low < high:
            raise ValueError(
                f"FamO2O: coefficient_range must be (low, high) with 0 <= low < high, got {coefficient_range}"
            )
        if initial_temperature <= 0:
            raise ValueError(f"FamO2O: initial_temperature must be positive, got {initial_temperature}")
        super().__init__(
            obs_dim,
            action_dim,
            max_action,
            expectile=expectile,
            max_weight=max_weight,
            discount=discount,
            tau=tau,
            actor_lr=actor_lr,
            critic_lr=critic_lr,
            value_lr=value_lr,
            actor_lr_decay_steps=actor_lr_decay_steps,
            actor_hidden_dims=actor_hidden_dims,
            critic_hidden_dims=critic_hidden_dims,
            value_hidden_dims=value_hidden_dims,
            compile=compile,
            compile_mode=compile_mode,
            cuda_graph=cuda_graph,
        )
        # IQL's single beta and its actor kind are not FamO2O's arguments: drop them from hparams
        self.save_hyperparameters(ignore=["beta", "deterministic_actor"])
        self.coefficient_range = (low, high)
        self.actor = UniversalActor(
            obs_dim, action_dim, max_action, actor_hidden_dims, encoding_dim, encoding_base, actor_log_std_min
        )
        self.balance = BalanceModel(obs_dim, (low, high), balance_hidden_dims)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial_temperature)))
        #: False offline (uniform coefficients for the actor's update), True once online collection
        #: starts (the balance model's); set by :meth:`on_online_start`, again when a run resumes online.
        self.online_phase = False

    def on_online_start(self) -> None:
        """Finetuning: the universal actor now learns with the balance model's coefficients."""
        self.online_phase = True

    def named_optimizers(self):
        hp = self.hparams
        return {
            **super().named_optimizers(),
            "balance": adam(self.balance.parameters(), hp.balance_lr),
            "temperature": adam([self.log_temperature], hp.temperature_lr),
        }

    @property
    def temperature(self) -> Tensor:
        """The balance model's entropy temperature (no gradient)."""
        return self.log_temperature.detach().exp()

    # ----------------------------------------------------------------- acting
    def policy_action(self, obs: Tensor) -> Tensor:
        """The universal actor's mean at the balance model's deterministic coefficient."""
        return self.actor.mean(obs, self.balance(obs))

    def exploration_action(self, obs: Tensor, noise_std: float, generator: torch.Generator | None = None) -> Tensor:
        """A sample of ``pi_u(.|s, beta(s))`` at the balance model's deterministic coefficient,
        clipped to the action box (``noise_std`` is for deterministic actors only)."""
        return self.actor.sample(obs, self.balance(obs), generator)

    def actor_coefficients(self, obs: Tensor) -> Tensor:
        """The coefficients ``[B]`` of the universal actor's update: uniform in ``coefficient_range``
        offline, samples of the balance model online (no gradient)."""
        with torch.no_grad():
            if self.online_phase:
                return self.balance.rsample(obs)[0]
            low, high = self.coefficient_range
            return low + (high - low) * torch.rand(obs.shape[0], device=obs.device, dtype=obs.dtype)

    # ----------------------------------------------------------------- losses
    def actor_loss(self, batch: TransitionBatch, advantage: Tensor, coefficient: Tensor) -> Tensor:
        """AWR of the universal actor with a coefficient per sample (:func:`universal_actor_loss`)."""
        log_prob = self.actor.log_prob(batch.obs, coefficient, batch.action)
        return universal_actor_loss(log_prob, advantage, coefficient, self.hparams.max_weight)

    def balance_loss(self, batch: TransitionBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:func:`balance_model_loss` through ``beta ~ pi_b(.|s)`` and ``a ~ pi_u(.|s, beta)``;
        returns (loss, ``log pi_b`` [B], the coefficients [B], ``min Q`` of the actions [B])."""
        coefficient, log_prob = self.balance.rsample(batch.obs)
        with no_param_grads(self.actor):
            action = self.actor.rsample(batch.obs, coefficient)
            q = self.critic_target(batch.obs, action)
        loss = balance_model_loss(q, log_prob, self.temperature)
        return loss, log_prob, coefficient.detach(), q.detach().min(dim=0).values

    # ----------------------------------------------------------------- one training step
    def update(self, batch: TransitionBatch, update_actor: bool, log: bool) -> dict[str, Tensor]:
        hp = self.hparams
        with torch.no_grad():
            next_value = self.value(batch.next_obs).squeeze(-1)  # V(s') before this step's update
        actor_coefficient = self.actor_coefficients(batch.obs)  # pi_b before its step, as the authors

        value_loss, advantage = self.value_loss(batch)
        self.step("value", value_loss)

        balance_loss, balance_log_prob, coefficient, q_balance = self.balance_loss(batch)
        self.step("balance", balance_loss)
        temperature_loss = balance_temperature_loss(self.log_temperature, balance_log_prob, hp.target_entropy)
        self.step("temperature", temperature_loss)

        actor_loss = self.actor_loss(batch, advantage, actor_coefficient)
        self.step("actor", actor_loss)

        critic_loss, q = self.critic_loss(batch, next_value)
        self.step("critic", critic_loss)
        polyak_update(self.critic_target, self.critic, hp.tau)
        if not log:
            return {}
        return {
            "train/value_loss": value_loss,
            "train/critic_loss": critic_loss,
            "train/actor_loss": actor_loss,
            "train/balance_loss": balance_loss,
            "train/balance_temperature": self.temperature,
            "train/balance_entropy": -balance_log_prob.detach().mean(),
            "train/coefficient_mean": coefficient.mean(),
            "train/coefficient_std": coefficient.std(),
            "train/q_balance": q_balance.mean(),
            "train/q_mean": q.detach().mean(),
            "train/advantage_mean": advantage.mean(),
            "train/actor_std": self.actor.std().detach().mean(),
        }

    def diagnostics(self, batch: TransitionBatch) -> dict[str, Tensor]:
        """IQL's diagnostics and the balance model's deterministic coefficients (mean, std)."""
        coefficient = self.balance(batch.obs)
        return {
            **super().diagnostics(batch),
            "coefficient_mean": coefficient.mean(),
            "coefficient_std": coefficient.std(),
        }
