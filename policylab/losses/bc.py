"""Behaviour cloning with a deterministic actor: regression of the policy's action onto the
dataset's action.

- Plain BC and %BC (BC on the top X% of trajectories by return; Chen et al., "Decision
  Transformer: Reinforcement Learning via Sequence Modeling", NeurIPS 2021, section 5; CORL's
  ``any_percent_bc.py``) minimize the mean squared error over the batch and the action dimensions.
- IQL's deterministic actor (CORL's ``iql_deterministic``, its Hopper medium and medium-replay
  settings) weights each sample's squared distance, summed over action dimensions, by the
  advantage weight ``exp(beta * A)`` of :func:`~policylab.losses.iql.awr_weights`.
"""

from __future__ import annotations

from torch import Tensor


def bc_mse_loss(policy_action: Tensor, data_action: Tensor) -> Tensor:
    """``L(pi) = mean_{b,j} (pi(s_b)_j - a_{b,j})^2`` over a batch ``[B, A]``."""
    return (policy_action - data_action).pow(2).mean()


def weighted_bc_loss(policy_action: Tensor, data_action: Tensor, weight: Tensor) -> Tensor:
    """``L(pi) = mean_b w_b * sum_j (pi(s_b)_j - a_{b,j})^2``; ``weight`` ``[B]`` is not differentiated."""
    return (weight.detach() * (policy_action - data_action).pow(2).sum(dim=-1)).mean()
