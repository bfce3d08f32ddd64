"""TD3+BC actor objective (Fujimoto & Gu, 2021, "A Minimalist Approach to Offline Reinforcement
Learning", eq. 3)."""

from __future__ import annotations

from torch import Tensor


def q_scale(q: Tensor, alpha: float) -> Tensor:
    """``lambda = alpha / mean |Q|``, detached: it rescales, it is not optimized.

    The paper writes the mean over ``Q(s_i, a_i)``; the authors' code (and policylab) averages the
    ``Q(s, pi(s))`` values that the actor loss uses.
    """
    return alpha / q.abs().mean().detach()


def td3bc_actor_loss(q_pi: Tensor, policy_action: Tensor, data_action: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """``L(pi) = -lambda * mean_b Q(s, pi(s)) + mean_{b,j} (pi(s) - a)^2``.

    Returns ``(loss, lambda)``; ``q_pi`` is ``Q_1(s, pi(s))`` of shape ``[B]``.
    """
    lam = q_scale(q_pi, alpha)
    bc = (policy_action - data_action).pow(2).mean()
    return -lam * q_pi.mean() + bc, lam
