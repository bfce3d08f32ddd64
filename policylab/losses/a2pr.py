"""A2PR's losses: Liu et al., "Adaptive Advantage-Guided Policy Regularization for Offline
Reinforcement Learning", ICML 2024 (numbers and order as in the authors' code, ltlhuuu/A2PR).

On top of TD3+BC, A2PR learns a state value ``V``, trains a VAE only on dataset actions with a
positive advantage, and regularizes the actor towards whichever of the dataset action and the
VAE's reconstruction of the policy action has the higher advantage.
"""

from __future__ import annotations

import torch
from torch import Tensor


def a2pr_value_target(
    reward: Tensor, terminal: Tensor, next_q: Tensor, critic_target: Tensor, discount: float
) -> Tensor:
    """``min(r + gamma * (1 - d) * min_e Q_e(s', a'), y)``: the one-step target with the
    *just-updated* critics ``next_q`` (``[E, B]``, same smoothed ``a'`` as the critic step), capped
    by the critic's own target ``y``."""
    return torch.minimum(reward + discount * (1.0 - terminal) * next_q.min(dim=0).values, critic_target)


def advantage_filtered_vae_loss(
    recon: Tensor, action: Tensor, mean: Tensor, std: Tensor, q_data: Tensor, value: Tensor, vae_weight: float
) -> tuple[Tensor, Tensor, Tensor]:
    """VAE loss on dataset actions whose advantage ``Q_1(s, a) - V(s)`` is positive:

    ``recon = mean_{b,j}(vae_weight * 1[Q_1(s,a) > V(s)] * (a_hat - a)^2)``,
    ``KL = -0.5 * mean_{b,k}(1 + log sigma^2 - mu^2 - sigma^2)``, loss ``recon + 0.5 * KL``.
    Returns ``(loss, recon, KL)``; ``q_data`` and ``value`` are ``[B]``.
    """
    weight = vae_weight * (q_data > value).to(recon.dtype).unsqueeze(-1)
    recon_loss = (weight * (recon - action).pow(2)).mean()
    kl = -0.5 * (1.0 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
    return recon_loss + 0.5 * kl, recon_loss, kl


def advantage_guided_bc_loss(
    policy_action: Tensor,
    data_action: Tensor,
    recon_pi: Tensor,
    q_data: Tensor,
    q_recon: Tensor,
    value: Tensor,
    mask: float,
) -> Tensor:
    """The adaptive regularizer ``mean_{b,j}(w * (pi(s) - a_target)^2)``:

    - ``a_target = a_hat_pi`` (the VAE's reconstruction of ``pi(s)``) where
      ``A(s, a_hat_pi) >= A(s, a)``, else the dataset action ``a``; ``A = Q_1 - V``;
    - ``w = mask * (1[Q_1(s, a_hat_pi) >= V(s)] + 1[Q_1(s, a) > V(s)])``, in ``{0, mask, 2 mask}``.

    The gradient reaches ``pi`` directly and, as in the authors' code, through ``a_hat_pi``.
    ``q_data``, ``q_recon`` and ``value`` are ``[B]`` and carry no gradient.
    """
    q_data, q_recon, value = q_data.detach(), q_recon.detach(), value.detach()
    use_recon = (q_recon - value >= q_data - value).unsqueeze(-1)
    target = torch.where(use_recon, recon_pi, data_action)
    weight = mask * ((q_recon >= value).to(policy_action.dtype) + (q_data > value).to(policy_action.dtype))
    return (weight.unsqueeze(-1) * (policy_action - target).pow(2)).mean()
