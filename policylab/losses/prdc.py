"""PRDC's actor objective (Ran, Li, Zhang, Zhang, Yu, "Policy Regularization with Dataset
Constraint for Offline Reinforcement Learning", ICML 2023, arXiv 2306.06569).

The dataset constraint measures a state-action pair against the whole dataset ``D`` in the joint
space where states are scaled by ``beta``:

    d_beta(s, a) = min_{(s^, a^) in D} || (beta s) (+) a - (beta s^) (+) a^ ||

(``(+)`` is concatenation). The policy maximizes ``lambda Q(s, pi(s))`` while its action is
pulled towards the action ``a^`` of that nearest pair (the paper's practical objective; the
authors' ``prdc.py``):

    L(pi) = -lambda * mean_b Q_1(s, pi(s)) + mean_{b,j} (pi(s) - a^)_j^2,
    lambda = alpha / mean_b |Q_1(s, pi(s))|   (detached, as in TD3+BC).

Only the neighbour's action enters; its state ``s^`` may differ from ``s``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from policylab.losses.td3bc import q_scale


def dataset_constraint_key(obs: Tensor, action: Tensor, beta: float) -> Tensor:
    """``(beta s) (+) a``: the point of the joint space PRDC's nearest-neighbour search compares,
    for a batch ``[B, ds]`` of (normalized) states and ``[B, da]`` of actions; ``[B, ds + da]``."""
    return torch.cat([beta * obs, action], dim=-1)


def dataset_constraint_loss(policy_action: Tensor, neighbor_action: Tensor) -> Tensor:
    """``mean_{b,j} (pi(s) - a^)^2``: the squared distance of the policy's action to the action of
    its state-action pair's nearest dataset pair (``neighbor_action`` carries no gradient)."""
    return (policy_action - neighbor_action.detach()).pow(2).mean()


def prdc_actor_loss(
    q_pi: Tensor, policy_action: Tensor, neighbor_action: Tensor, alpha: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``L(pi) = -lambda * mean_b Q_1(s, pi(s)) + mean_{b,j} (pi(s) - a^)^2``, ``lambda = alpha / mean|Q_1|``.

    ``q_pi`` is ``Q_1(s, pi(s))`` ``[B]``. Returns ``(loss, lambda, dataset-constraint term)``.
    """
    lam = q_scale(q_pi, alpha)
    constraint = dataset_constraint_loss(policy_action, neighbor_action)
    return -lam * q_pi.mean() + constraint, lam, constraint
