"""FamO2O: Wang, Yang, Gao, Lin, Chen, Wu, Jia, Song, Huang, "Train Once, Get a Family:
State-Adaptive Balances for Offline-to-Online Reinforcement Learning", NeurIPS 2023
(https://arxiv.org/abs/2310.17966), on IQL. Numbers as in the authors' ``jax_iql/family_actor.py``
and ``jax_iql/family_temperature.py``.

``beta_s`` is the balance coefficient of state ``s``: the inverse temperature of IQL's
advantage-weighted regression, so a larger ``beta_s`` leans towards policy improvement and a
smaller one towards imitation of the data (the policy constraint).
"""

from __future__ import annotations

from torch import Tensor


def universal_actor_loss(log_prob: Tensor, advantage: Tensor, coefficient: Tensor, max_weight: float = 100.0) -> Tensor:
    """The universal model's objective (the paper's universal-model update with IQL's AWR, IQL eq. 7
    with a per-sample coefficient): ``-mean(min(exp(beta_s * A(s, a)), max_weight) * log pi_u(a | s, beta_s))``
    over dataset (or replay) pairs; ``beta_s`` and ``A`` are constants here."""
    weights = (coefficient.detach() * advantage.detach()).exp().clamp(max=max_weight)
    return -(weights * log_prob).mean()


def balance_model_loss(q: Tensor, log_prob: Tensor, temperature: Tensor | float) -> Tensor:
    """The balance model's objective (the paper's balance-model update, ``max_{pi_b} E_s
    Q(s, pi_u(s, pi_b(s)))``) with the authors' entropy bonus:
    ``mean(temperature * log pi_b(beta_s | s) - min_e Q_e(s, a))``, ``beta_s ~ pi_b(.|s)`` and
    ``a ~ pi_u(.|s, beta_s)`` both reparameterized; ``q`` is ``[E, B]`` (the target critics)."""
    return (temperature * log_prob - q.min(dim=0).values).mean()


def balance_temperature_loss(log_temperature: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """The authors' temperature objective ``temperature * (H - H_target)`` with ``temperature =
    exp(log_temperature)`` and the entropy estimate ``H = -mean log pi_b(beta_s | s)`` (a constant
    here): the temperature falls while the balance model's entropy is above ``H_target``. (SAC's
    form, :func:`~policylab.losses.sac.sac_temperature_loss`, is linear in ``log_temperature``;
    this one's gradient carries the extra factor ``temperature``.)"""
    entropy = -log_prob.detach().mean()
    return log_temperature.exp() * (entropy - target_entropy)
