"""Soft actor-critic math (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and
Applications", arXiv:1812.05905): the tanh-squashed Gaussian policy and the three SAC objectives."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_density(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """Elementwise ``log N(x; mean, exp(log_std)^2)`` of a diagonal Gaussian (sum over the last
    dimension for the density of a vector); closed form, no argument validation."""
    return -0.5 * ((x - mean) * (-log_std).exp()).pow(2) - log_std - _LOG_SQRT_2PI


def squashed_gaussian_log_prob(pre_tanh: Tensor, mean: Tensor, log_std: Tensor, max_action: float = 1.0) -> Tensor:
    """``log pi(a|s)`` of ``a = max_action * tanh(u)``, ``u ~ N(mean, exp(log_std)^2)``, summed over
    action dimensions (paper, appendix C):

    ``log N(u; mean, std) - sum_i log(max_action * (1 - tanh(u_i)^2))``, with the stable form
    ``log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u))``.
    """
    gaussian = gaussian_log_density(pre_tanh, mean, log_std)
    log_jacobian = 2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh)) + math.log(max_action)
    return (gaussian - log_jacobian).sum(dim=-1)


def sac_critic_target(
    reward: Tensor, terminal: Tensor, next_q: Tensor, next_log_prob: Tensor, alpha: Tensor | float, discount: float
) -> Tensor:
    """Soft Bellman target ``y = r + gamma * (1 - d) * (min_e Q'_e(s', a') - alpha * log pi(a'|s'))``,
    ``a' ~ pi(.|s')``; ``next_q`` is ``[E, B]`` (eq. 3 with the clipped double-Q of TD3)."""
    soft_value = next_q.min(dim=0).values - alpha * next_log_prob
    return reward + discount * (1.0 - terminal) * soft_value


def sac_actor_loss(q_pi: Tensor, log_prob: Tensor, alpha: Tensor | float) -> Tensor:
    """Policy objective (eq. 7): ``mean(alpha * log pi(a|s) - min_e Q_e(s, a))``, ``a ~ pi(.|s)``
    reparameterized; ``q_pi`` is ``[E, B]``."""
    return (alpha * log_prob - q_pi.min(dim=0).values).mean()


def sac_temperature_loss(log_alpha: Tensor, log_prob: Tensor, target_entropy: float) -> Tensor:
    """Temperature objective (eq. 18) in the log-parameterization of the authors' code:
    ``-mean(log_alpha * (log pi(a|s) + H_target))``; ``alpha`` grows when the policy's entropy
    ``-log pi`` falls below ``H_target`` (default ``-dim(A)``)."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()
