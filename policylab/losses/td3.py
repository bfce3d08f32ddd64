"""TD3 critic math (Fujimoto et al., 2018, "Addressing Function Approximation Error in
Actor-Critic Methods"), shared by TD3+BC, A2PR and other TD3-based methods: target policy
smoothing, the clipped double-Q target, and the ensemble TD loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def smoothed_target_action(next_action: Tensor, noise_std: float, noise_clip: float, max_action: float) -> Tensor:
    """Target policy smoothing: ``clip(mu'(s') + clip(eps, -c, c), -a_max, a_max)``, ``eps ~ N(0, sigma^2)``.

    ``noise_std`` and ``noise_clip`` are absolute (TD3+BC passes ``0.2 * max_action`` and
    ``0.5 * max_action``).
    """
    noise = (torch.randn_like(next_action) * noise_std).clamp(-noise_clip, noise_clip)
    return (next_action + noise).clamp(-max_action, max_action)


def clipped_double_q_target(reward: Tensor, terminal: Tensor, next_q: Tensor, discount: float) -> Tensor:
    """``y = r + gamma * (1 - d) * min_e Q'_e(s', a')``.

    ``next_q`` holds every target critic's value, ``[E, B]``; ``terminal`` is 1 only for true
    terminations (a time-limit truncation bootstraps).
    """
    return reward + discount * (1.0 - terminal) * next_q.min(dim=0).values


def ensemble_mse_loss(q: Tensor, target: Tensor) -> Tensor:
    """``sum_e mean_b (Q_e(s, a) - y)^2`` over an ensemble's values ``q`` of shape ``[E, B]``."""
    return (q - target.unsqueeze(0)).pow(2).mean(dim=1).sum()


@torch.no_grad()
def td3_critic_target(
    actor_target: Callable[[Tensor], Tensor],
    critic_target: Callable[[Tensor, Tensor], Tensor],
    batch,
    discount: float,
    policy_noise: float,
    noise_clip: float,
    max_action: float,
) -> tuple[Tensor, Tensor]:
    """TD3's critic target with target policy smoothing, for a batch with ``next_obs``, ``reward``
    and ``terminal``: ``a' = clip(mu'(s') + clip(eps, -c, c), -a_max, a_max)``,
    ``eps ~ N(0, sigma^2)``, with ``sigma = policy_noise * a_max`` and ``c = noise_clip * a_max``
    (noise in units of the action bound, as TD3+BC states it), then
    ``y = r + gamma * (1 - d) * min_e Q'_e(s', a')``. ``critic_target`` returns ``[E, B]``.
    Returns ``(y, a')`` without gradient."""
    next_action = smoothed_target_action(
        actor_target(batch.next_obs), policy_noise * max_action, noise_clip * max_action, max_action
    )
    next_q = critic_target(batch.next_obs, next_action)
    return clipped_double_q_target(batch.reward, batch.terminal, next_q, discount), next_action
