"""Noise-conditional score networks: ``s(x, sigma | c) ~ grad_x log p_sigma(x | c)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policylab.nn.mlp import mlp


class NoiseConditionalScore(nn.Module):
    """An MLP score model of ``x`` (``dim``) at noise level ``sigma``, optionally conditioned on ``c``
    (``cond_dim``; 0 for an unconditional density).

    Input ``[x, c, log sigma]``; the output is divided by ``sigma`` (Song & Ermon, "Improved
    Techniques for Training Score-Based Generative Models", 2020), so the network predicts
    ``-noise`` at every level and the score keeps its ``1 / sigma`` scale.
    """

    def __init__(self, dim: int, cond_dim: int = 0, hidden_dims: Sequence[int] = (256, 256)) -> None:
        super().__init__()
        if dim < 1 or cond_dim < 0:
            raise ValueError(f"NoiseConditionalScore needs dim >= 1 and cond_dim >= 0, got {dim}, {cond_dim}")
        self.dim, self.cond_dim = dim, cond_dim
        self.net = mlp(dim + cond_dim + 1, dim, hidden_dims)

    def forward(self, x: Tensor, sigma: Tensor | float, cond: Tensor | None = None) -> Tensor:
        """Score at ``x`` ``[B, dim]`` for noise levels ``sigma`` (a number, ``[B]`` or ``[B, 1]``)."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(x.shape[0], 1)
        if (cond is None) != (self.cond_dim == 0):
            raise ValueError(f"this score model takes a condition of {self.cond_dim} dims; got {cond is not None}")
        inputs = [x, sigma.log()] if cond is None else [x, cond, sigma.log()]
        return self.net(torch.cat(inputs, dim=-1)) / sigma
