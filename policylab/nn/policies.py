"""Policy networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policylab.nn.mlp import mlp


class DeterministicActor(nn.Module):
    """``a = max_action * tanh(MLP(s))``: the TD3 / TD3+BC actor."""

    def __init__(
        self, obs_dim: int, action_dim: int, max_action: float = 1.0, hidden_dims: Sequence[int] = (256, 256)
    ) -> None:
        super().__init__()
        self.max_action = float(max_action)
        self.net = mlp(obs_dim, action_dim, hidden_dims)

    def forward(self, obs: Tensor) -> Tensor:
        return self.max_action * torch.tanh(self.net(obs))
