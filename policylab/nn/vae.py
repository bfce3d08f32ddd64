"""The conditional VAE of BCQ (Fujimoto et al., 2019), used by A2PR to model good dataset actions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from policylab.nn.mlp import mlp


class ConditionalVAE(nn.Module):
    """``q(z | s, a)`` and ``p(a | s, z)`` with a ``latent_dim`` Gaussian latent.

    The encoder ``(s, a) -> hidden -> (mean, log_std)`` clamps ``log_std`` to ``[-4, 15]``; the
    decoder ``(s, z) -> hidden -> max_action * tanh``. Decoding without ``z`` draws
    ``z ~ N(0, I)`` clipped to ``[-latent_clip, latent_clip]`` (BCQ: 0.5).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        latent_dim: int | None = None,
        max_action: float = 1.0,
        hidden_dims: Sequence[int] = (750, 750),
        latent_clip: float = 0.5,
    ) -> None:
        super().__init__()
        self.latent_dim = 2 * action_dim if latent_dim is None else latent_dim
        self.max_action, self.latent_clip = float(max_action), latent_clip
        self.encoder = mlp(obs_dim + action_dim, 2 * self.latent_dim, hidden_dims)
        self.decoder = mlp(obs_dim + self.latent_dim, action_dim, hidden_dims)

    def encode(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of ``q(z | s, a)``."""
        mean, log_std = self.encoder(torch.cat([obs, action], dim=-1)).chunk(2, dim=-1)
        return mean, log_std.clamp(-4.0, 15.0).exp()

    def decode(self, obs: Tensor, z: Tensor | None = None) -> Tensor:
        if z is None:
            z = torch.randn(obs.shape[0], self.latent_dim, device=obs.device, dtype=obs.dtype).clamp(
                -self.latent_clip, self.latent_clip
            )
        return self.max_action * torch.tanh(self.decoder(torch.cat([obs, z], dim=-1)))

    def forward(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction through a reparameterized latent sample: ``(recon, mean, std)``."""
        mean, std = self.encode(obs, action)
        z = mean + std * torch.randn_like(std)
        return self.decode(obs, z), mean, std
