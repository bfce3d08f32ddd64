"""IQL: Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022 (arXiv:2110.06169). Numbers as in CORL's implementation."""

from __future__ import annotations

from torch import Tensor


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """``L_2^tau(u) = mean(|tau - 1(u < 0)| * u^2)`` with ``u = Q(s, a) - V(s)`` (eq. 5): ``V``
    regresses to the ``tau``-expectile of ``Q`` over the dataset's actions."""
    weight = (expectile - (diff < 0).to(diff.dtype)).abs()
    return (weight * diff.pow(2)).mean()


def iql_q_target(reward: Tensor, terminal: Tensor, next_value: Tensor, discount: float) -> Tensor:
    """``r + gamma * (1 - d) * V(s')`` (eq. 6): the critic never queries an action outside the data."""
    return reward + discount * (1.0 - terminal) * next_value


def awr_weights(advantage: Tensor, beta: float, max_weight: float = 100.0) -> Tensor:
    """Advantage-weighted regression weights ``min(exp(beta * A), max_weight)`` (eq. 7), detached."""
    return (beta * advantage.detach()).exp().clamp(max=max_weight)


def awr_actor_loss(log_prob: Tensor, advantage: Tensor, beta: float, max_weight: float = 100.0) -> Tensor:
    """``-mean(exp(beta * A(s, a)) * log pi(a | s))`` over dataset actions (eq. 7)."""
    return -(awr_weights(advantage, beta, max_weight) * log_prob).mean()
