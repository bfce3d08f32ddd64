"""Critic ensembles whose members are evaluated together in one batched call.

A twin critic written as two separate MLPs costs two matmuls per layer; stacking the members'
weights turns them into one ``baddbmm`` per layer, which is what makes TD3/SAC-style updates cheap,
above all on a GPU (on a CPU the two forms run at about the same matmul rate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class EnsembleLinear(nn.Module):
    """``num_members`` independent linear layers: input ``[E, B, in]`` -> output ``[E, B, out]``.

    Each member is initialised like ``nn.Linear`` (Kaiming-uniform weights, uniform bias), so an
    ensemble behaves exactly like the same number of separate ``nn.Linear`` layers.
    """

    def __init__(self, num_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.num_members, self.in_features, self.out_features = num_members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(num_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features)
        for member in range(self.num_members):
            # nn.Linear's init on the transposed [out, in] view of this member's weight.
            nn.init.kaiming_uniform_(self.weight[member].T, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, members: int | None = None) -> Tensor:
        """``x`` is ``[B, in]`` (shared by all members) or ``[E, B, in]``; ``members=k`` uses the first k."""
        weight, bias = (self.weight, self.bias) if members is None else (self.weight[:members], self.bias[:members])
        if x.dim() == 2:
            # A shared input broadcasts (a view, no copy); the output is a contiguous [E, B, out],
            # which the next layer's batched matmul reads without reordering.
            x = x.expand(weight.shape[0], *x.shape)
        if self.out_features == 1 and x.is_cpu:
            # One output column (a Q-value head): on a CPU an elementwise product and a sum run
            # several times faster than baddbmm's matrix-vector product, backward included.
            return torch.sum(x * weight.transpose(1, 2), dim=-1, keepdim=True) + bias
        return torch.baddbmm(bias, x, weight)

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, in_features={self.in_features}, out_features={self.out_features}"


class EnsembleCritic(nn.Module):
    """``num_critics`` Q-functions ``Q_e(s, a)``, each an MLP ``(s, a) -> hidden_dims -> 1``.

    ``forward(obs, action)`` returns all members' values as ``[E, B]``; ``forward(..., members=k)``
    evaluates only the first ``k`` members (TD3's actor needs ``Q_1`` alone), slicing the stacked
    weights rather than computing and discarding the others.
    """

    def __init__(
        self, obs_dim: int, action_dim: int, hidden_dims: Sequence[int] = (256, 256), num_critics: int = 2
    ) -> None:
        super().__init__()
        self.num_critics = num_critics
        dims = [obs_dim + action_dim, *hidden_dims, 1]
        self.layers = nn.ModuleList(EnsembleLinear(num_critics, i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, obs: Tensor, action: Tensor, members: int | None = None) -> Tensor:
        x = torch.cat([obs, action], dim=-1)
        for i, layer in enumerate(self.layers):
            x = layer(x, members)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x.squeeze(-1)
